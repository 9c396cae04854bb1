resource "aws_ecs_task_definition" "service" {
  for_each                 = local.services
  family                   = "${var.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([
    {
      name      = "varve"
      image     = var.image
      essential = true
      command   = ["serve"]
      # The Kafka listener (kafka enabled) on the ingest and fetch tasks;
      # VARVE_KAFKA_ADVERTISED_ADDR stays unset: each task advertises its
      # own IP (awsvpc: the task's ENI) with the port.
      environment = [for k, v in merge(
        local.common_env,
        each.value.extra_env,
        var.kafka.enabled && each.value.kafka ? { VARVE_KAFKA_LISTEN = "0.0.0.0:${var.kafka.port}" } : {},
        { VARVE_ROLES = each.value.roles },
        ) :
        { name = k, value = v }
      ]
      secrets = [for k, v in local.secrets : { name = k, valueFrom = v }]
      portMappings = concat(
        [{ containerPort = local.container_port, protocol = "tcp", name = "api" }],
        var.kafka.enabled && each.value.kafka ? [{ containerPort = var.kafka.port, protocol = "tcp", name = "kafka" }] : [],
      )
      # SIGTERM starts Varve's drain; SIGKILL comes only after stopTimeout,
      # which leaves shutdown_timeout plus a margin.
      stopTimeout = local.stop_timeout
      # Stop before the metrics sidecar, which started first.
      dependsOn = [{ containerName = "metrics", condition = "START" }]
      ulimits   = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service[each.key].name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "varve"
        }
      }
    },
    {
      name      = "metrics"
      image     = var.metrics_sidecar_image
      essential = false
      cpu       = 64
      memory    = 128
      environment = [{
        name = "AOT_CONFIG_CONTENT"
        value = templatefile("${path.module}/otel-collector.yaml.tftpl", {
          port            = local.container_port
          scheme          = local.task_tls ? "https" : "http"
          scrape_interval = "${local.scrape_interval_seconds}s"
          cluster         = aws_ecs_cluster.this.name
          service         = "${var.name}-${each.key}"
          namespace       = var.metrics_namespace
          log_group       = aws_cloudwatch_log_group.metrics.name
          region          = data.aws_region.current.name
          metrics         = local.exported_metrics
        })
      }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service[each.key].name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "metrics"
        }
      }
    },
  ])

  lifecycle {
    precondition {
      condition     = var.auth == "none" || var.cluster_secret_arn != null
      error_message = "auth token needs cluster_secret_arn: the fetch tasks' credential for each other's internal BlockService."
    }
  }

  tags = var.tags
}

resource "aws_ecs_service" "service" {
  for_each                          = local.services
  name                              = "${var.name}-${each.key}"
  cluster                           = aws_ecs_cluster.this.id
  task_definition                   = aws_ecs_task_definition.service[each.key].arn
  desired_count                     = each.value.count
  health_check_grace_period_seconds = each.value.lb ? 30 : null
  enable_ecs_managed_tags           = true
  propagate_tags                    = "SERVICE"
  wait_for_steady_state             = false

  capacity_provider_strategy {
    capacity_provider = each.value.spot ? "FARGATE_SPOT" : "FARGATE"
    weight            = 1
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = concat([aws_security_group.tasks.id], var.security_group_ids)
    assign_public_ip = false
  }

  dynamic "load_balancer" {
    for_each = each.value.lb ? [1] : []
    content {
      target_group_arn = aws_lb_target_group.api[each.key].arn
      container_name   = "varve"
      container_port   = local.container_port
    }
  }

  # Kafka bootstrap (kafka enabled): ingest and fetch tasks share one target group.
  dynamic "load_balancer" {
    for_each = var.kafka.enabled && each.value.kafka ? [1] : []
    content {
      target_group_arn = aws_lb_target_group.kafka[0].arn
      container_name   = "varve"
      container_port   = var.kafka.port
    }
  }

  # Roll tasks with capacity to spare, and undo a deployment whose tasks
  # never become ready.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # Autoscaling owns the task count after creation.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.api, aws_lb_listener.kafka, aws_iam_role_policy_attachment.task, aws_iam_role_policy.secrets, aws_ecs_cluster_capacity_providers.this]
  tags       = var.tags
}
