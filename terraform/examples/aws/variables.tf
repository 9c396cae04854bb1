variable "region" {
  description = "AWS region to deploy in."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Name of the deployment (ECS cluster, etcd cluster, load balancer)."
  type        = string
  default     = "varve"
}

variable "bucket_name" {
  description = "Globally unique name of the segment bucket."
  type        = string
}

variable "image" {
  description = "Varve image built from the repository's Dockerfile, pinned to a tag or digest."
  type        = string
}

variable "vpc_id" {
  description = "Existing VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "At least three private subnets in different availability zones (the first three host the etcd members)."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 3
    error_message = "Give at least three private subnets."
  }
}

variable "allowed_cidr_blocks" {
  description = "Networks allowed to reach the API."
  type        = list(string)
}

variable "etcd_sha256" {
  description = "SHA-256 of the etcd release tarball the members download (see the etcd module)."
  type        = string
  default     = null
}

variable "certificate_arn" {
  description = "ACM certificate the load balancer serves TLS with (null: TLS only if tls_secret_arns is set)."
  type        = string
  default     = null
}

variable "tls_secret_arns" {
  description = "Secrets Manager / SSM ARNs of the PEM certificate, key and (optional) CA the tasks serve TLS with (the module's tls); null: the tasks speak h2c behind the load balancer."
  type = object({
    cert_secret_arn = string
    key_secret_arn  = string
    ca_secret_arn   = optional(string)
  })
  default = null
}

variable "bootstrap_token_secret_arn" {
  description = "Secrets Manager / SSM ARN of the bootstrap admin API key (openssl rand -hex 32); set to null once real keys exist."
  type        = string
  default     = null
}

variable "cluster_secret_arn" {
  description = "Secrets Manager / SSM ARN of the cluster secret the fetch tasks present to each other (openssl rand -hex 32)."
  type        = string
}
