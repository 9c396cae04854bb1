# A topic managed by the Varve provider, plus what the cluster reports.
# Run against `varve dev` (see ../../README.md for the CLI configuration).

terraform {
  required_version = ">= 1.5"
  required_providers {
    varve = {
      source  = "varve-io/varve"
      version = ">= 0.1"
    }
  }
}

provider "varve" {
  endpoint = var.endpoint
}

resource "varve_topic" "clicks" {
  name           = var.topic_name
  partitions     = var.partitions
  retention_ms   = var.retention_ms
  cleanup_policy = var.cleanup_policy
}

data "varve_cluster" "this" {
  depends_on = [varve_topic.clicks]
}
