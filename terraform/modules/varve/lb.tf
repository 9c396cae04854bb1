# One network load balancer, one listener and target group per API role:
# producers use the ingest port, consumers the fetch port. Both serve topic
# administration. Health checks use /readyz, which answers 503 as soon as a
# task starts draining.
#
# TLS on this path: certificate_arn alone terminates TLS at the listener
# (ACM) and forwards h2c; tls alone passes TCP through to tasks serving TLS
# (end to end); both terminate at the listener and re-encrypt to the tasks.

locals {
  lb_services = { for k, s in local.services : k => s if s.lb }
  lb_ports    = { ingest = var.ingest_port, fetch = var.fetch_port }
}

resource "aws_lb" "this" {
  name                             = "${var.name}-api"
  load_balancer_type               = "network"
  internal                         = var.internal
  subnets                          = coalesce(var.lb_subnet_ids, var.subnet_ids)
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  tags                             = var.tags
}

resource "aws_lb_target_group" "api" {
  for_each    = local.lb_services
  name        = "${var.name}-${each.key}"
  target_type = "ip"
  # TLS when the listener terminates TLS and the tasks serve it too
  # (re-encrypted); otherwise TCP (TLS passed through, or h2c).
  protocol = local.lb_tls && local.task_tls ? "TLS" : "TCP"
  port     = local.container_port
  vpc_id   = var.vpc_id

  # ECS deregisters a stopping task first: new connections go elsewhere at
  # once, open ones (in-flight produces, long polls) get this long, then ECS
  # sends SIGTERM and Varve drains within shutdown_timeout.
  deregistration_delay   = var.deregistration_delay_seconds
  connection_termination = false

  health_check {
    protocol            = local.task_tls ? "HTTPS" : "HTTP"
    path                = "/readyz"
    port                = "traffic-port"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

resource "aws_lb_listener" "api" {
  for_each          = local.lb_services
  load_balancer_arn = aws_lb.this.arn
  port              = local.lb_ports[each.key]
  protocol          = local.lb_tls ? "TLS" : "TCP"
  certificate_arn   = var.certificate_arn
  ssl_policy        = local.lb_tls ? "ELBSecurityPolicy-TLS13-1-2-2021-06" : null
  alpn_policy       = local.lb_tls ? "HTTP2Preferred" : null

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api[each.key].arn
  }

  tags = var.tags
}

# Kafka (kafka enabled): one TCP listener on the Kafka port forwarding to the
# ingest and fetch tasks, a bootstrap address only. A Kafka client asks it
# for Metadata, which lists every task by its advertised address (its own
# IP), then connects to the tasks directly. So the listener never terminates
# TLS, even with certificate_arn: the client must speak to the tasks as it
# spoke to the listener, and the tasks serve TLS themselves when tls is set.
resource "aws_lb_target_group" "kafka" {
  count       = var.kafka.enabled ? 1 : 0
  name        = "${var.name}-kafka"
  target_type = "ip"
  protocol    = "TCP"
  port        = var.kafka.port
  vpc_id      = var.vpc_id

  deregistration_delay   = var.deregistration_delay_seconds
  connection_termination = false

  # A TCP connect to the Kafka listener (open and close: no Kafka request,
  # no TLS handshake).
  health_check {
    protocol            = "TCP"
    port                = "traffic-port"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = var.tags
}

resource "aws_lb_listener" "kafka" {
  count             = var.kafka.enabled ? 1 : 0
  load_balancer_arn = aws_lb.this.arn
  port              = var.kafka.port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.kafka[0].arn
  }

  lifecycle {
    precondition {
      condition     = !contains([var.ingest_port, var.fetch_port], var.kafka.port)
      error_message = "kafka.port must differ from ingest_port and fetch_port: the load balancer listens on all three."
    }
  }

  tags = var.tags
}
