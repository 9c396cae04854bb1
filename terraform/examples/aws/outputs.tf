output "endpoint" {
  description = "Producers and topic administration: sdk.New(endpoint), varve --addr, the varve Terraform provider."
  value       = module.varve.endpoint
}

output "fetch_endpoint" {
  description = "Consumers."
  value       = module.varve.fetch_endpoint
}

output "bucket" {
  description = "Segment store (s3://bucket/prefix)."
  value       = module.bucket.store_url
}

output "etcd_endpoints" {
  description = "etcd client URLs."
  value       = module.etcd.client_endpoints
}

output "etcd_snapshot_bucket" {
  description = "Where etcd snapshots land."
  value       = module.etcd.snapshot_bucket
}
