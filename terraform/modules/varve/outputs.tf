output "endpoint" {
  description = "API URL for producers and topic administration (ingest port), e.g. for sdk.New or the varve provider."
  value       = "${local.scheme}://${aws_lb.this.dns_name}:${var.ingest_port}"
}

output "fetch_endpoint" {
  description = "API URL for consumers (fetch port); also serves topic administration."
  value       = "${local.scheme}://${aws_lb.this.dns_name}:${var.fetch_port}"
}

output "kafka_bootstrap" {
  description = "Kafka bootstrap.servers (host:port on the load balancer) with kafka enabled, null otherwise. Bootstrap only: clients then connect to the tasks' own IPs on the Kafka port."
  value       = var.kafka.enabled ? "${aws_lb.this.dns_name}:${var.kafka.port}" : null
}

output "lb_dns_name" {
  description = "DNS name of the network load balancer."
  value       = aws_lb.this.dns_name
}

output "lb_zone_id" {
  description = "Route 53 zone id of the load balancer, for alias records."
  value       = aws_lb.this.zone_id
}

output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "service_names" {
  description = "ECS service names by role (ingest, fetch and, when enabled, compaction)."
  value       = { for k, s in aws_ecs_service.service : k => s.name }
}

output "task_security_group_id" {
  description = "Security group of the Varve tasks."
  value       = aws_security_group.tasks.id
}

output "task_role_arn" {
  description = "IAM role the Varve tasks run as."
  value       = aws_iam_role.task.arn
}
