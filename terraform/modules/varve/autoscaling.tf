# Ingest: target tracking on CPU and on produce bytes per task, plus a step
# scale-out when producers are refused for a full buffer. With several
# target-tracking policies, ECS scales out when any asks and in only when all
# agree, so a busy-on-bytes fleet is never shrunk because CPU looks idle.
# Fetch: target tracking on CPU and on cache misses per task (reads going to
# S3: the cache no longer holds the working set).

resource "aws_appautoscaling_target" "ingest" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.service["ingest"].name}"
  min_capacity       = var.ingest.min_count
  max_capacity       = var.ingest.max_count
  tags               = var.tags
}

resource "aws_appautoscaling_policy" "ingest_cpu" {
  name               = "${var.name}-ingest-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.ingest.service_namespace
  scalable_dimension = aws_appautoscaling_target.ingest.scalable_dimension
  resource_id        = aws_appautoscaling_target.ingest.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.ingest.cpu_target
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

# Each task publishes the bytes it accepted during each scrape interval; the
# average over tasks is the per-task rate the policy holds at the target.
resource "aws_appautoscaling_policy" "ingest_bytes" {
  name               = "${var.name}-ingest-bytes"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.ingest.service_namespace
  scalable_dimension = aws_appautoscaling_target.ingest.scalable_dimension
  resource_id        = aws_appautoscaling_target.ingest.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.ingest.target_bytes_per_second * local.scrape_interval_seconds
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
    customized_metric_specification {
      namespace   = var.metrics_namespace
      metric_name = var.scaling_metric_names.ingest_bytes
      statistic   = "Average"
      dimensions {
        name  = "ClusterName"
        value = aws_ecs_cluster.this.name
      }
      dimensions {
        name  = "ServiceName"
        value = aws_ecs_service.service["ingest"].name
      }
    }
  }
}

resource "aws_appautoscaling_policy" "ingest_backpressure" {
  name               = "${var.name}-ingest-backpressure"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.ingest.service_namespace
  scalable_dimension = aws_appautoscaling_target.ingest.scalable_dimension
  resource_id        = aws_appautoscaling_target.ingest.resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 120
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = var.ingest.backpressure_scale_out
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "ingest_backpressure" {
  alarm_name          = "${var.name}-ingest-backpressure"
  alarm_description   = "Produce requests refused with RESOURCE_EXHAUSTED (ingest buffers full): add ingest tasks."
  namespace           = var.metrics_namespace
  metric_name         = var.scaling_metric_names.ingest_backpressure
  statistic           = "Sum"
  period              = local.scrape_interval_seconds
  evaluation_periods  = 2
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  dimensions = {
    ClusterName = aws_ecs_cluster.this.name
    ServiceName = aws_ecs_service.service["ingest"].name
  }
  alarm_actions = [aws_appautoscaling_policy.ingest_backpressure.arn]
  tags          = var.tags
}

resource "aws_appautoscaling_target" "fetch" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.service["fetch"].name}"
  min_capacity       = var.fetch.min_count
  max_capacity       = var.fetch.max_count
  tags               = var.tags
}

resource "aws_appautoscaling_policy" "fetch_cpu" {
  name               = "${var.name}-fetch-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.fetch.service_namespace
  scalable_dimension = aws_appautoscaling_target.fetch.scalable_dimension
  resource_id        = aws_appautoscaling_target.fetch.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.fetch.cpu_target
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "fetch_cache" {
  count              = var.fetch.target_cache_misses_per_second == null ? 0 : 1
  name               = "${var.name}-fetch-cache-misses"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.fetch.service_namespace
  scalable_dimension = aws_appautoscaling_target.fetch.scalable_dimension
  resource_id        = aws_appautoscaling_target.fetch.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.fetch.target_cache_misses_per_second * local.scrape_interval_seconds
    scale_out_cooldown = 60
    scale_in_cooldown  = 600
    customized_metric_specification {
      namespace   = var.metrics_namespace
      metric_name = var.scaling_metric_names.fetch_cache_misses
      statistic   = "Average"
      dimensions {
        name  = "ClusterName"
        value = aws_ecs_cluster.this.name
      }
      dimensions {
        name  = "ServiceName"
        value = aws_ecs_service.service["fetch"].name
      }
    }
  }
}
