# The module planned and applied against a mock AWS provider (`terraform test`,
# run offline by terraform/provider/internal/deploycheck with the provider
# binary of the machine image): TLS on the load-balancer path, the secrets
# the tasks get and the execution role that may read them.
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
  allowed_cidr_blocks = ["10.0.0.0/8"]
  etcd_endpoints      = ["http://etcd:2379"]
  store_url           = "s3://bkt/p"
  task_policy_arns    = ["arn:aws:iam::123456789012:policy/p"]
  certificate_arn     = "arn:aws:acm:eu-west-1:123456789012:certificate/abc"
  tls = {
    cert_secret_arn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cert-AbCdEf"
    key_secret_arn   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:key-AbCdEf"
    ca_secret_arn    = "arn:aws:ssm:eu-west-1:123456789012:parameter/varve/ca"
    peer_server_name = "varve.internal"
  }
  bootstrap_token_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:boot-AbCdEf"
  cluster_secret_arn         = "arn:aws:ssm:eu-west-1:123456789012:parameter/varve/cluster"
}

run "tls_everywhere" {
  command = apply
  assert {
    condition     = aws_lb_listener.api["ingest"].protocol == "TLS" && aws_lb_listener.api["ingest"].certificate_arn == var.certificate_arn
    error_message = "listener"
  }
  assert {
    condition     = aws_lb_target_group.api["fetch"].protocol == "TLS" && aws_lb_target_group.api["fetch"].health_check[0].protocol == "HTTPS"
    error_message = "target group"
  }
  assert {
    condition = alltrue([for k in ["ingest", "fetch"] : jsondecode(aws_ecs_task_definition.service[k].container_definitions)[0].secrets == [
      { name = "VARVE_BOOTSTRAP_TOKEN", valueFrom = var.bootstrap_token_secret_arn },
      { name = "VARVE_CLUSTER_SECRET", valueFrom = var.cluster_secret_arn },
      { name = "VARVE_TLS_CA_PEM", valueFrom = var.tls.ca_secret_arn },
      { name = "VARVE_TLS_CERT_PEM", valueFrom = var.tls.cert_secret_arn },
      { name = "VARVE_TLS_KEY_PEM", valueFrom = var.tls.key_secret_arn },
    ]])
    error_message = "the tasks do not get the secrets: ${aws_ecs_task_definition.service["ingest"].container_definitions}"
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.service["fetch"].container_definitions)[0].environment, { name = "VARVE_AUTH", value = "token" }) && contains(jsondecode(aws_ecs_task_definition.service["fetch"].container_definitions)[0].environment, { name = "VARVE_INSECURE", value = "false" })
    error_message = "the tasks do not run with auth token (and without --insecure)"
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.service["fetch"].container_definitions)[0].environment, { name = "VARVE_TLS_PEER_SERVER_NAME", value = "varve.internal" })
    error_message = "the fetch tasks do not verify each other against tls.peer_server_name"
  }
  assert {
    condition     = length(aws_iam_role_policy.secrets) == 1 && aws_iam_role_policy.secrets[0].role == aws_iam_role.execution.id
    error_message = "the execution role gets no policy to read the secrets"
  }
  assert {
    condition = (toset(data.aws_iam_policy_document.secrets.statement[0].resources) == toset([var.tls.cert_secret_arn, var.tls.key_secret_arn, var.bootstrap_token_secret_arn])
      && data.aws_iam_policy_document.secrets.statement[0].actions == toset(["secretsmanager:GetSecretValue"])
      && toset(data.aws_iam_policy_document.secrets.statement[1].resources) == toset([var.tls.ca_secret_arn, var.cluster_secret_arn])
    && data.aws_iam_policy_document.secrets.statement[1].actions == toset(["ssm:GetParameters"]))
    error_message = "the execution role may not read exactly the secrets given"
  }
  assert {
    condition     = output.endpoint == "https://${aws_lb.this.dns_name}:7700"
    error_message = "endpoint"
  }
}

# TLS passed through the load balancer to the tasks (end to end).
run "tls_passthrough" {
  command = apply
  variables {
    certificate_arn = null
  }
  assert {
    condition     = aws_lb_listener.api["ingest"].protocol == "TCP" && aws_lb_target_group.api["ingest"].protocol == "TCP" && aws_lb_target_group.api["ingest"].health_check[0].protocol == "HTTPS"
    error_message = "TLS passthrough: want TCP listeners and target groups and HTTPS health checks"
  }
  assert {
    condition     = output.endpoint == "https://${aws_lb.this.dns_name}:7700" && output.fetch_endpoint == "https://${aws_lb.this.dns_name}:7701"
    error_message = "the endpoints are not https:// URLs"
  }
  assert {
    condition     = strcontains(jsondecode(aws_ecs_task_definition.service["ingest"].container_definitions)[1].environment[0].value, "scheme: https")
    error_message = "the metrics sidecar does not scrape over https"
  }
}

# The load balancer terminates TLS (ACM); the tasks speak h2c, auth none.
run "lb_tls_only" {
  command = apply
  variables {
    tls                        = null
    auth                       = "none"
    bootstrap_token_secret_arn = null
    cluster_secret_arn         = null
  }
  assert {
    condition     = aws_lb_listener.api["fetch"].protocol == "TLS" && aws_lb_target_group.api["fetch"].protocol == "TCP" && aws_lb_target_group.api["fetch"].health_check[0].protocol == "HTTP"
    error_message = "ACM only: want a TLS listener, TCP target groups and HTTP health checks"
  }
  assert {
    condition     = length(aws_iam_role_policy.secrets) == 0 && jsondecode(aws_ecs_task_definition.service["ingest"].container_definitions)[0].secrets == []
    error_message = "no secrets given, yet the tasks get some"
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.service["ingest"].container_definitions)[0].environment, { name = "VARVE_INSECURE", value = "true" })
    error_message = "auth none with h2c tasks must run with VARVE_INSECURE (varve serve refuses 0.0.0.0 otherwise)"
  }
}

run "token_needs_cluster_secret" {
  command = plan
  variables {
    cluster_secret_arn = null
  }
  expect_failures = [aws_ecs_task_definition.service]
}

run "sequence_runs_with_ingest" {
  command = apply
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.service["ingest"].container_definitions)[0].environment, { name = "VARVE_ROLES", value = "ingest,sequence" }) && contains(jsondecode(aws_ecs_task_definition.service["fetch"].container_definitions)[0].environment, { name = "VARVE_ROLES", value = "fetch" })
    error_message = "the ingest tasks must run the sequence role with ingest, the fetch tasks fetch alone"
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.service["ingest"].container_definitions)[0].environment, { name = "VARVE_COMMIT_PATH", value = "sequencer" })
    error_message = "commit_path must default to sequencer"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.tasks_self.referenced_security_group_id == aws_security_group.tasks.id && aws_vpc_security_group_ingress_rule.tasks_self.from_port == 7700
    error_message = "tasks must reach each other's API port (SequencerService, BlockService)"
  }
}

run "commit_path_direct" {
  command = plan
  variables {
    commit_path = "direct"
  }
  assert {
    condition     = contains(jsondecode(aws_ecs_task_definition.service["ingest"].container_definitions)[0].environment, { name = "VARVE_COMMIT_PATH", value = "direct" })
    error_message = "commit_path direct must reach the tasks"
  }
}

run "commit_path_unknown" {
  command = plan
  variables {
    commit_path = "both"
  }
  expect_failures = [var.commit_path]
}
