# Varve on AWS: a bucket, a 3-member etcd cluster and the ingest and fetch
# services on ECS Fargate behind a network load balancer, in an existing VPC.
#
#   terraform init && terraform apply -var-file=my.tfvars
#
# The image is built from the repository's Dockerfile and pushed to a
# registry the tasks can pull from (ECR).

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = { "varve:deployment" = var.name }
  }
}

module "bucket" {
  source      = "../../modules/varve-bucket"
  bucket_name = var.bucket_name
  prefix      = "segments"
  # The services module creates the task role and attaches the policy.
  create_role = false
}

module "etcd" {
  source     = "../../modules/etcd"
  name       = var.name
  vpc_id     = var.vpc_id
  subnet_ids = slice(var.private_subnet_ids, 0, 3)
  # Varve's etcd client has no TLS settings yet: clients are limited to the
  # client security group; peers always use TLS.
  client_tls  = false
  etcd_sha256 = var.etcd_sha256
}

module "varve" {
  source              = "../../modules/varve"
  name                = var.name
  image               = var.image
  vpc_id              = var.vpc_id
  subnet_ids          = var.private_subnet_ids
  allowed_cidr_blocks = var.allowed_cidr_blocks
  etcd_endpoints      = module.etcd.client_endpoints
  store_url           = module.bucket.store_url
  task_policy_arns    = [module.bucket.policy_arn]
  security_group_ids  = [module.etcd.client_security_group_id]

  # TLS at the load balancer (ACM) and, with tls_secret_arns, on the tasks
  # too; API keys, the first one from the bootstrap secret (docs/security.md).
  certificate_arn            = var.certificate_arn
  tls                        = var.tls_secret_arns
  auth                       = "token"
  bootstrap_token_secret_arn = var.bootstrap_token_secret_arn
  cluster_secret_arn         = var.cluster_secret_arn

  shutdown_timeout_seconds = 30
  ingest = {
    min_count               = 2
    max_count               = 12
    target_bytes_per_second = 50 * 1024 * 1024
  }
  fetch = {
    min_count = 2
    max_count = 12
  }
}
