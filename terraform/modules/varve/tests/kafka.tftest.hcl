# The Kafka listener (kafka) planned and applied against a mock AWS provider
# (`terraform test`, run offline by terraform/provider/internal/deploycheck):
# off by default; when enabled, the ingest and fetch tasks (never
# compaction) listen on it, map the port, admit allowed_cidr_blocks and the
# load balancer on it, and a TCP listener on the load balancer forwards to
# both services for bootstrap.
mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn      = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/varve-api/0123456789abcdef"
      dns_name = "varve-api-0123456789abcdef.elb.eu-west-1.amazonaws.com"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/varve/0123456789abcdef" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/varve" }
  }
  mock_resource "aws_ecs_task_definition" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/varve:1" }
  }
  mock_resource "aws_ecs_cluster" {
    defaults = { arn = "arn:aws:ecs:eu-west-1:123456789012:cluster/varve" }
  }
  mock_resource "aws_appautoscaling_policy" {
    defaults = { arn = "arn:aws:autoscaling:eu-west-1:123456789012:scalingPolicy:0-0-0-0:resource/ecs/service/varve/varve-ingest:policyName/p" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/varve" }
  }
}

variables {
  name                = "varve"
  image               = "r/varve:v1"
  vpc_id              = "vpc-1"
  subnet_ids          = ["s-1", "s-2"]
  allowed_cidr_blocks = ["10.0.0.0/8", "192.168.0.0/16"]
  etcd_endpoints      = ["http://etcd:2379"]
  store_url           = "s3://bkt/p"
  task_policy_arns    = ["arn:aws:iam::123456789012:policy/p"]
  certificate_arn     = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
  tls = {
    cert_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cert-AbCdEf"
    key_secret_arn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:key-AbCdEf"
  }
  cluster_secret_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/varve/cluster"
  compaction         = { enabled = true }
}

run "kafka_off_by_default" {
  command = apply
  assert {
    condition = alltrue([for k in ["ingest", "fetch", "compaction"] :
      length([for e in jsondecode(aws_ecs_task_definition.service[k].container_definitions)[0].environment : e if startswith(e.name, "VARVE_KAFKA_")]) == 0
    ])
    error_message = "kafka off: no task may get a VARVE_KAFKA_* setting"
  }
  assert {
    condition = alltrue([for k in ["ingest", "fetch", "compaction"] :
      jsondecode(aws_ecs_task_definition.service[k].container_definitions)[0].portMappings == [{ containerPort = 7700, protocol = "tcp", name = "api" }]
    ])
    error_message = "kafka off: the tasks map only the API port"
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.tasks_kafka) == 0 && length(aws_vpc_security_group_ingress_rule.tasks_kafka_lb) == 0 && length(aws_vpc_security_group_ingress_rule.lb_kafka) == 0 && length(aws_vpc_security_group_egress_rule.lb_kafka) == 0
    error_message = "kafka off: no security group rule may open a Kafka port"
  }
  assert {
    condition     = length(aws_lb_listener.kafka) == 0 && length(aws_lb_target_group.kafka) == 0 && length(aws_lb_listener.api) == 2
    error_message = "kafka off: the load balancer has only the two API listeners"
  }
  assert {
    condition     = alltrue([for k in ["ingest", "fetch"] : length(aws_ecs_service.service[k].load_balancer) == 1])
    error_message = "kafka off: the services register in their API target group only"
  }
  assert {
    condition     = output.kafka_bootstrap == null
    error_message = "kafka off: kafka_bootstrap must be null"
  }
}

run "kafka_enabled" {
  command = apply
  variables {
    kafka = { enabled = true }
  }
  assert {
    condition = alltrue([for k in ["ingest", "fetch"] :
      contains(jsondecode(aws_ecs_task_definition.service[k].container_definitions)[0].environment, { name = "VARVE_KAFKA_LISTEN", value = "0.0.0.0:9092" })
    ])
    error_message = "the ingest and fetch tasks must listen for Kafka on 0.0.0.0:9092"
  }
  assert {
    condition = alltrue([for k in ["ingest", "fetch"] :
      length([for e in jsondecode(aws_ecs_task_definition.service[k].container_definitions)[0].environment : e if e.name == "VARVE_KAFKA_ADVERTISED_ADDR"]) == 0
    ])
    error_message = "each task must advertise its own IP: the module must not set VARVE_KAFKA_ADVERTISED_ADDR"
  }
  assert {
    condition     = length([for e in jsondecode(aws_ecs_task_definition.service["compaction"].container_definitions)[0].environment : e if startswith(e.name, "VARVE_KAFKA_")]) == 0 && length(jsondecode(aws_ecs_task_definition.service["compaction"].container_definitions)[0].portMappings) == 1
    error_message = "the compaction tasks (neither ingest nor fetch) must not get the Kafka listener"
  }
  assert {
    condition = alltrue([for k in ["ingest", "fetch"] :
      jsondecode(aws_ecs_task_definition.service[k].container_definitions)[0].portMappings == [
        { containerPort = 7700, protocol = "tcp", name = "api" },
        { containerPort = 9092, protocol = "tcp", name = "kafka" },
      ]
    ])
    error_message = "the ingest and fetch tasks must map the Kafka port"
  }
  assert {
    condition = (toset([for r in aws_vpc_security_group_ingress_rule.tasks_kafka : r.cidr_ipv4]) == toset(var.allowed_cidr_blocks)
      && alltrue([for r in aws_vpc_security_group_ingress_rule.tasks_kafka : r.security_group_id == aws_security_group.tasks.id && r.ip_protocol == "tcp" && r.from_port == 9092 && r.to_port == 9092])
    )
    error_message = "allowed_cidr_blocks must reach the tasks' Kafka port directly (clients connect to the advertised task IPs)"
  }
  assert {
    condition = (aws_vpc_security_group_ingress_rule.tasks_kafka_lb[0].security_group_id == aws_security_group.tasks.id
      && aws_vpc_security_group_ingress_rule.tasks_kafka_lb[0].referenced_security_group_id == aws_security_group.lb.id
      && aws_vpc_security_group_ingress_rule.tasks_kafka_lb[0].from_port == 9092
      && aws_vpc_security_group_egress_rule.lb_kafka[0].security_group_id == aws_security_group.lb.id
      && aws_vpc_security_group_egress_rule.lb_kafka[0].referenced_security_group_id == aws_security_group.tasks.id
    && aws_vpc_security_group_egress_rule.lb_kafka[0].from_port == 9092)
    error_message = "the load balancer must reach the tasks' Kafka port (forwarding and health checks)"
  }
  assert {
    condition = (toset([for r in aws_vpc_security_group_ingress_rule.lb_kafka : r.cidr_ipv4]) == toset(var.allowed_cidr_blocks)
    && alltrue([for r in aws_vpc_security_group_ingress_rule.lb_kafka : r.security_group_id == aws_security_group.lb.id && r.from_port == 9092 && r.to_port == 9092]))
    error_message = "allowed_cidr_blocks must reach the load balancer's Kafka port"
  }
  assert {
    condition     = aws_lb_listener.kafka[0].port == 9092 && aws_lb_listener.kafka[0].protocol == "TCP" && aws_lb_listener.kafka[0].certificate_arn == null && aws_lb_listener.kafka[0].default_action[0].target_group_arn == aws_lb_target_group.kafka[0].arn
    error_message = "the Kafka listener must pass TCP through on 9092 (never terminate TLS, even with certificate_arn) to the Kafka target group"
  }
  assert {
    condition     = aws_lb_target_group.kafka[0].protocol == "TCP" && aws_lb_target_group.kafka[0].port == 9092 && aws_lb_target_group.kafka[0].target_type == "ip" && aws_lb_target_group.kafka[0].health_check[0].protocol == "TCP" && aws_lb_target_group.kafka[0].health_check[0].port == "traffic-port"
    error_message = "the Kafka target group: IP targets, TCP, TCP health checks on the Kafka port"
  }
  assert {
    condition = alltrue([for k in ["ingest", "fetch"] :
      contains([for lb in aws_ecs_service.service[k].load_balancer : { arn = lb.target_group_arn, port = lb.container_port, name = lb.container_name }], { arn = aws_lb_target_group.kafka[0].arn, port = 9092, name = "varve" })
      && length(aws_ecs_service.service[k].load_balancer) == 2
    ])
    error_message = "the ingest and fetch services must register their tasks' Kafka port in the Kafka target group"
  }
  assert {
    condition     = length(aws_ecs_service.service["compaction"].load_balancer) == 0
    error_message = "the compaction service must not register in any target group"
  }
  assert {
    condition     = output.kafka_bootstrap == "${aws_lb.this.dns_name}:9092"
    error_message = "kafka_bootstrap must be the load balancer's host:port"
  }
  assert {
    condition     = output.endpoint == "https://${aws_lb.this.dns_name}:7700" && aws_lb_listener.api["ingest"].protocol == "TLS"
    error_message = "the API listeners must not change with kafka"
  }
}

run "kafka_port" {
  command = plan
  variables {
    kafka = { enabled = true, port = 19092 }
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.service["fetch"].container_definitions)[0].environment, { name = "VARVE_KAFKA_LISTEN", value = "0.0.0.0:19092" }) && aws_lb_listener.kafka[0].port == 19092 && aws_lb_target_group.kafka[0].port == 19092
    error_message = "kafka.port must reach the tasks and the listener"
  }
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.tasks_kafka : r.from_port == 19092 && r.to_port == 19092])
    error_message = "the security group rules must open kafka.port"
  }
}

run "kafka_port_is_api_port" {
  command = plan
  variables {
    kafka = { enabled = true, port = 7700 }
  }
  expect_failures = [var.kafka]
}

run "kafka_port_is_lb_port" {
  command = plan
  variables {
    kafka      = { enabled = true }
    fetch_port = 9092
  }
  expect_failures = [aws_lb_listener.kafka]
}

run "kafka_listen_only_through_kafka" {
  command = plan
  variables {
    environment = { VARVE_KAFKA_ADVERTISED_ADDR = "10.0.0.1:9092" }
  }
  expect_failures = [var.environment]
}
