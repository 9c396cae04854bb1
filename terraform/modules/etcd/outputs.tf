output "client_endpoints" {
  description = "etcd client URLs, one per member (https when client_tls is on); Varve's etcd_endpoints."
  value       = local.client_endpoints
}

output "client_security_group_id" {
  description = "Security group to attach to etcd clients (Varve tasks) so they may reach port 2379."
  value       = aws_security_group.client.id
}

output "security_group_id" {
  description = "Security group of the etcd members."
  value       = aws_security_group.etcd.id
}

output "ca_cert_pem" {
  description = "PEM certificate of the cluster's private CA."
  value       = tls_self_signed_cert.ca.cert_pem
}

output "client_cert_ssm_parameter" {
  description = "SSM parameter holding the client certificate (PEM)."
  value       = aws_ssm_parameter.client_cert.name
}

output "client_key_ssm_parameter" {
  description = "SSM SecureString parameter holding the client private key (PEM)."
  value       = aws_ssm_parameter.client_key.name
}

output "snapshot_bucket" {
  description = "Bucket receiving the scheduled snapshots (under snapshots/)."
  value       = aws_s3_bucket.snapshots.bucket
}

output "dns_zone_id" {
  description = "Private Route 53 zone holding the members' names."
  value       = aws_route53_zone.this.zone_id
}

output "autoscaling_group_names" {
  description = "One auto scaling group (of one instance) per member, in member order."
  value       = aws_autoscaling_group.node[*].name
}
