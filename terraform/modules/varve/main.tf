data "aws_region" "current" {}

locals {
  container_port = 7700
  # The metrics sidecar scrapes once a minute; a counter's per-scrape delta
  # is then "per minute", and targets per second are multiplied by this.
  scrape_interval_seconds = 60
  stop_timeout            = var.shutdown_timeout_seconds + 5
  # TLS on the load balancer (ACM) and on the tasks (Varve's own, from secrets).
  lb_tls   = var.certificate_arn != null
  task_tls = var.tls != null
  scheme   = local.lb_tls || local.task_tls ? "https" : "http"

  # Secrets ECS injects as environment variables (valueFrom: a Secrets
  # Manager secret or SSM parameter ARN); Varve reads these variables in
  # place of its *_file settings (docs/security.md).
  secrets = { for k, v in {
    VARVE_TLS_CERT_PEM    = try(var.tls.cert_secret_arn, null)
    VARVE_TLS_KEY_PEM     = try(var.tls.key_secret_arn, null)
    VARVE_TLS_CA_PEM      = try(var.tls.ca_secret_arn, null)
    VARVE_BOOTSTRAP_TOKEN = var.bootstrap_token_secret_arn
    VARVE_CLUSTER_SECRET  = var.cluster_secret_arn
  } : k => v if v != null }
  secret_arns = {
    secretsmanager = distinct([for v in values(local.secrets) : v if startswith(split(":", v)[2], "secretsmanager")])
    ssm            = distinct([for v in values(local.secrets) : v if startswith(split(":", v)[2], "ssm")])
  }

  services = merge(
    {
      ingest = {
        # The sequencer's candidates run with ingest (commit_path sequencer).
        roles  = "ingest,sequence"
        cpu    = var.ingest.cpu
        memory = var.ingest.memory
        count  = var.ingest.min_count
        spot   = false
        lb     = true
        kafka  = true
        extra_env = merge(
          var.ingest.flush_bytes == null ? {} : { VARVE_FLUSH_BYTES = tostring(var.ingest.flush_bytes) },
          var.ingest.max_buffer_bytes == null ? {} : { VARVE_MAX_BUFFER_BYTES = tostring(var.ingest.max_buffer_bytes) },
        )
      }
      fetch = {
        roles  = "fetch"
        cpu    = var.fetch.cpu
        memory = var.fetch.memory
        count  = var.fetch.min_count
        spot   = var.fargate_spot
        lb     = true
        kafka  = true
        extra_env = {
          VARVE_CACHE_BYTES = tostring(coalesce(var.fetch.cache_bytes, floor(var.fetch.memory * 1048576 / 2)))
        }
      }
    },
    # Filtered rather than `cond ? {...} : {}`, whose branches differ in type.
    { for k, v in {
      compaction = {
        roles     = "compact"
        cpu       = var.compaction.cpu
        memory    = var.compaction.memory
        count     = var.compaction.count
        spot      = var.fargate_spot
        lb        = false
        kafka     = false
        extra_env = {}
      }
    } : k => v if var.compaction.enabled },
  )

  common_env = merge(var.environment, {
    VARVE_LISTEN           = "0.0.0.0:${local.container_port}"
    VARVE_ETCD_ENDPOINTS   = join(",", var.etcd_endpoints)
    VARVE_BUCKET           = var.store_url
    VARVE_S3_REGION        = data.aws_region.current.name
    VARVE_SHUTDOWN_TIMEOUT = "${var.shutdown_timeout_seconds}s"
    VARVE_LOG_FORMAT       = "json"
    VARVE_AUTH             = var.auth
    VARVE_COMMIT_PATH      = var.commit_path
    # auth none without TLS on the tasks: Varve refuses 0.0.0.0 unless told
    # the network (security groups, an internal load balancer) protects it.
    VARVE_INSECURE = tostring(var.auth == "none" && !local.task_tls)
    },
    # Tasks call each other by IP: their certificate names the service.
    try(var.tls.peer_server_name, null) == null ? {} : { VARVE_TLS_PEER_SERVER_NAME = var.tls.peer_server_name },
  )

  # Varve metrics published to CloudWatch for scaling and dashboards.
  exported_metrics = [
    "varve_ingest_bytes_total",
    "varve_ingest_backpressure_total",
    "varve_ingest_records_total",
    "varve_ingest_flushes_total",
    "varve_fetch_cache_hits_total",
    "varve_fetch_cache_misses_total",
  ]
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = var.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]
  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "service" {
  for_each          = local.services
  name              = "/varve/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_cloudwatch_log_group" "metrics" {
  name              = "/varve/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

# ---- IAM

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Pulls the image and writes container logs.
resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# Reads exactly the secrets injected into the containers.
data "aws_iam_policy_document" "secrets" {
  dynamic "statement" {
    for_each = length(local.secret_arns.secretsmanager) > 0 ? [1] : []
    content {
      sid       = "ReadSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = local.secret_arns.secretsmanager
    }
  }
  dynamic "statement" {
    for_each = length(local.secret_arns.ssm) > 0 ? [1] : []
    content {
      sid       = "ReadParameters"
      actions   = ["ssm:GetParameters"]
      resources = local.secret_arns.ssm
    }
  }
  dynamic "statement" {
    for_each = length(var.secrets_kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = var.secrets_kms_key_arns
    }
  }
}

resource "aws_iam_role_policy" "secrets" {
  count  = length(local.secrets) > 0 ? 1 : 0
  name   = "varve-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.secrets.json
}

# What Varve itself (and its metrics sidecar) may do.
resource "aws_iam_role" "task" {
  name_prefix        = "${var.name}-task-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "task" {
  count      = length(var.task_policy_arns)
  role       = aws_iam_role.task.name
  policy_arn = var.task_policy_arns[count.index]
}

data "aws_iam_policy_document" "metrics" {
  statement {
    sid       = "PublishEmbeddedMetricFormat"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.metrics.arn}:*"]
  }
}

resource "aws_iam_role_policy" "metrics" {
  name   = "varve-metrics"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.metrics.json
}

# ---- Security groups

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-lb-"
  description = "Varve API load balancer"
  vpc_id      = var.vpc_id
  tags        = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "lb" {
  for_each          = { for p in setproduct(var.allowed_cidr_blocks, [var.ingest_port, var.fetch_port]) : "${p[0]}:${p[1]}" => p }
  security_group_id = aws_security_group.lb.id
  cidr_ipv4         = each.value[0]
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  description       = "Varve API"
}

resource "aws_vpc_security_group_egress_rule" "lb" {
  security_group_id            = aws_security_group.lb.id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  description                  = "to Varve tasks (traffic and /readyz health checks)"
}

resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-tasks-"
  description = "Varve tasks"
  vpc_id      = var.vpc_id
  tags        = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "tasks" {
  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  description                  = "from the load balancer"
}

resource "aws_vpc_security_group_ingress_rule" "tasks_self" {
  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = local.container_port
  to_port                      = local.container_port
  description                  = "node to node (SequencerService, BlockService)"
}

# The Kafka listener (kafka enabled). Kafka clients connect to the load
# balancer only to bootstrap; then they connect to the tasks' advertised
# addresses (their own IPs) directly: produce to the partition's ingest task,
# fetch from the fetch task it names. Nodes never dial each other's Kafka
# port (they talk over the API port above), so no task-to-task rule.
resource "aws_vpc_security_group_ingress_rule" "lb_kafka" {
  for_each          = var.kafka.enabled ? toset(var.allowed_cidr_blocks) : toset([])
  security_group_id = aws_security_group.lb.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.kafka.port
  to_port           = var.kafka.port
  description       = "Varve Kafka bootstrap"
}

resource "aws_vpc_security_group_egress_rule" "lb_kafka" {
  count                        = var.kafka.enabled ? 1 : 0
  security_group_id            = aws_security_group.lb.id
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = var.kafka.port
  to_port                      = var.kafka.port
  description                  = "to Varve tasks' Kafka listener (bootstrap and TCP health checks)"
}

resource "aws_vpc_security_group_ingress_rule" "tasks_kafka_lb" {
  count                        = var.kafka.enabled ? 1 : 0
  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = var.kafka.port
  to_port                      = var.kafka.port
  description                  = "Kafka from the load balancer (bootstrap)"
}

resource "aws_vpc_security_group_ingress_rule" "tasks_kafka" {
  for_each          = var.kafka.enabled ? toset(var.allowed_cidr_blocks) : toset([])
  security_group_id = aws_security_group.tasks.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.kafka.port
  to_port           = var.kafka.port
  description       = "Kafka clients to the tasks' advertised addresses"
}

resource "aws_vpc_security_group_egress_rule" "tasks" {
  security_group_id = aws_security_group.tasks.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
  description       = "S3, etcd, CloudWatch, image registry"
}
