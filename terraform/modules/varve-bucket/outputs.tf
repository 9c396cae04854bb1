output "bucket_name" {
  description = "Name of the bucket."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the bucket."
  value       = aws_s3_bucket.this.arn
}

output "store_url" {
  description = "The bucket as Varve's --bucket / VARVE_BUCKET setting: s3://bucket[/prefix]."
  value       = var.prefix == "" ? "s3://${aws_s3_bucket.this.bucket}" : "s3://${aws_s3_bucket.this.bucket}/${var.prefix}"
}

output "policy_arn" {
  description = "ARN of the IAM policy granting exactly Varve's S3 actions on the bucket (prefix)."
  value       = aws_iam_policy.varve.arn
}

output "policy_json" {
  description = "The IAM policy document, to inline elsewhere."
  value       = data.aws_iam_policy_document.varve.json
}

output "role_arn" {
  description = "ARN of the created role (null when create_role is false); use it as the ECS task role."
  value       = var.create_role ? aws_iam_role.varve[0].arn : null
}

output "role_name" {
  description = "Name of the created role (null when create_role is false)."
  value       = var.create_role ? aws_iam_role.varve[0].name : null
}
