variable "name" {
  description = "Name of the deployment; prefixes the ECS cluster, services, load balancer and roles."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 22 lowercase letters, digits or '-', starting with a letter (load balancer names are short)."
  }
}

variable "image" {
  description = "Varve container image built from this repository's Dockerfile, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/varve:v0.1.0."
  type        = string

  validation {
    condition     = length(var.image) > 0 && !endswith(var.image, ":latest")
    error_message = "image must be set and pinned to a tag or digest other than :latest."
  }
}

variable "vpc_id" {
  description = "VPC of the services and the load balancer."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks (spread over availability zones)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "Give at least two subnets in different availability zones."
  }
}

variable "lb_subnet_ids" {
  description = "Subnets of the network load balancer; defaults to subnet_ids. Public subnets when internal is false."
  type        = list(string)
  default     = null
}

variable "internal" {
  description = "Make the load balancer internal (reachable only inside the VPC and peered networks)."
  type        = bool
  default     = true
}

variable "allowed_cidr_blocks" {
  description = "CIDR blocks allowed to reach the API ports of the load balancer and, with kafka enabled, its Kafka port and the tasks' Kafka port (Kafka clients connect to the tasks directly)."
  type        = list(string)

  validation {
    condition     = length(var.allowed_cidr_blocks) > 0 && alltrue([for c in var.allowed_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "allowed_cidr_blocks must list at least one CIDR block."
  }
}

variable "certificate_arn" {
  description = "ACM certificate: the load balancer's listeners terminate TLS with it (HTTP/2 via ALPN) and forward to the tasks in TLS when tls is set, h2c otherwise. Null: the listeners pass TCP through (TLS end to end when tls is set, plaintext h2c otherwise)."
  type        = string
  default     = null
}

variable "tls" {
  description = <<-EOT
    TLS served by the tasks themselves (Varve's tls_cert_file / tls_key_file / tls_ca_file),
    from PEM texts kept in Secrets Manager secrets or SSM SecureString parameters, given by ARN.
    ECS injects them as VARVE_TLS_CERT_PEM, VARVE_TLS_KEY_PEM and VARVE_TLS_CA_PEM (the task
    execution role may read exactly these). cert_secret_arn: the certificate chain, whose names
    must cover what clients dial (the load balancer's DNS name or your alias) when the load
    balancer passes TLS through. key_secret_arn: its private key. ca_secret_arn: the CAs nodes
    trust when they call each other (null: the system roots). peer_server_name: a name in the
    certificate that nodes check each other against (Varve's tls_peer_server_name: tasks call
    each other by IP, which the certificate does not name; null: the certificate's first DNS
    name must then be given here or node-to-node block reads fall back to the bucket).
    Null: the tasks speak h2c.
  EOT
  type = object({
    cert_secret_arn  = string
    key_secret_arn   = string
    ca_secret_arn    = optional(string)
    peer_server_name = optional(string)
  })
  default = null

  validation {
    condition     = var.tls == null || alltrue([for a in compact([try(var.tls.cert_secret_arn, null), try(var.tls.key_secret_arn, null), try(var.tls.ca_secret_arn, null)]) : can(regex("^arn:aws[a-z-]*:(secretsmanager|ssm):", a))])
    error_message = "tls.*_secret_arn must be ARNs of Secrets Manager secrets (arn:aws:secretsmanager:...) or SSM parameters (arn:aws:ssm:...)."
  }
}

variable "auth" {
  description = "Varve's auth setting: token (API keys; the first admin key comes from bootstrap_token_secret_arn) or none (anyone who reaches the load balancer may do everything: the tasks then run with --insecure unless tls is set). mtls is not offered by this module: the load balancer's health checks and the metrics sidecar present no client certificate."
  type        = string
  default     = "token"

  validation {
    condition     = contains(["token", "none"], var.auth)
    error_message = "auth must be token or none (mtls is not supported by this module)."
  }
}

variable "bootstrap_token_secret_arn" {
  description = "Secrets Manager secret or SSM SecureString parameter holding a bootstrap admin API key (16+ characters, e.g. openssl rand -hex 32), injected as VARVE_BOOTSTRAP_TOKEN. Use it to create the real keys and ACLs, then set it to null (docs/security.md). Null: no bootstrap key."
  type        = string
  default     = null

  validation {
    condition     = var.bootstrap_token_secret_arn == null || can(regex("^arn:aws[a-z-]*:(secretsmanager|ssm):", var.bootstrap_token_secret_arn))
    error_message = "bootstrap_token_secret_arn must be the ARN of a Secrets Manager secret or an SSM parameter."
  }
}

variable "cluster_secret_arn" {
  description = "Secrets Manager secret or SSM SecureString parameter holding the cluster secret (16+ characters) nodes present to each other's internal BlockService, injected as VARVE_CLUSTER_SECRET. Required with auth token."
  type        = string
  default     = null

  validation {
    condition     = var.cluster_secret_arn == null || can(regex("^arn:aws[a-z-]*:(secretsmanager|ssm):", var.cluster_secret_arn))
    error_message = "cluster_secret_arn must be the ARN of a Secrets Manager secret or an SSM parameter."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer-managed KMS keys encrypting the secrets above (the execution role gets kms:Decrypt on them); empty when they use the AWS managed keys."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for k in var.secrets_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:", k))])
    error_message = "secrets_kms_key_arns must list KMS key ARNs."
  }
}

variable "ingest_port" {
  description = "Load balancer port for producers (ingest service). Topic administration works on both ports."
  type        = number
  default     = 7700

  validation {
    condition     = var.ingest_port >= 1 && var.ingest_port <= 65535
    error_message = "ingest_port must be a TCP port."
  }
}

variable "fetch_port" {
  description = "Load balancer port for consumers (fetch service)."
  type        = number
  default     = 7701

  validation {
    condition     = var.fetch_port >= 1 && var.fetch_port <= 65535
    error_message = "fetch_port must be a TCP port."
  }
}

variable "kafka" {
  description = <<-EOT
    The Kafka protocol listener of the ingest and fetch tasks (Varve's kafka_listen). Off by default.
    enabled: the tasks listen on 0.0.0.0:port (VARVE_KAFKA_LISTEN) and each advertises its own task
    IP with that port to Kafka clients (Metadata); allowed_cidr_blocks may reach the tasks on it
    directly, which Kafka clients must (produce goes to the partition's ingest task, fetch to a fetch
    task), and the load balancer gets a TCP listener on the same port in front of all of them, for
    bootstrap only (output kafka_bootstrap). It never terminates TLS: the tasks serve TLS on it when
    tls is set. port: the Kafka port of the tasks and of the load balancer (not 7700, the tasks' API
    port, nor ingest_port or fetch_port).
  EOT
  type = object({
    enabled = optional(bool, false)
    port    = optional(number, 9092)
  })
  default = {}

  validation {
    condition     = var.kafka.port == floor(var.kafka.port) && var.kafka.port >= 1 && var.kafka.port <= 65535 && var.kafka.port != 7700
    error_message = "kafka.port must be a TCP port other than 7700 (the tasks' API port)."
  }
}

variable "etcd_endpoints" {
  description = "etcd client URLs (Varve's etcd_endpoints), e.g. the etcd module's client_endpoints."
  type        = list(string)

  validation {
    condition     = length(var.etcd_endpoints) > 0 && alltrue([for e in var.etcd_endpoints : can(regex("^https?://", e))])
    error_message = "etcd_endpoints must list http:// or https:// URLs."
  }
}

variable "store_url" {
  description = "Segment store as s3://bucket[/prefix] (the bucket module's store_url)."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]+[a-z0-9](/.*)?$", var.store_url))
    error_message = "store_url must look like s3://bucket or s3://bucket/prefix."
  }
}

variable "task_policy_arns" {
  description = "IAM policies attached to the tasks' role; include the bucket module's policy_arn."
  type        = list(string)

  validation {
    condition     = length(var.task_policy_arns) > 0
    error_message = "Attach at least the policy that grants access to the bucket."
  }
}

variable "security_group_ids" {
  description = "Extra security groups for the tasks, such as the etcd module's client_security_group_id."
  type        = list(string)
  default     = []
}

variable "shutdown_timeout_seconds" {
  description = "Varve's shutdown_timeout: how long a drain (stop accepting, flush, commit, answer) may take. The container stopTimeout is this plus 5 s, within Fargate's 120 s limit."
  type        = number
  default     = 30

  validation {
    condition     = var.shutdown_timeout_seconds >= 1 && var.shutdown_timeout_seconds <= 115
    error_message = "shutdown_timeout_seconds must be between 1 and 115 (Fargate stops a container at most 120 s after SIGTERM)."
  }
}

variable "deregistration_delay_seconds" {
  description = "How long the load balancer keeps sending existing connections to a stopping task before ECS sends SIGTERM; new connections go elsewhere at once."
  type        = number
  default     = 15

  validation {
    condition     = var.deregistration_delay_seconds >= 0 && var.deregistration_delay_seconds <= 3600
    error_message = "deregistration_delay_seconds must be between 0 and 3600."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the tasks: X86_64 or ARM64 (the image must match)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "ingest" {
  description = <<-EOT
    The ingest service: task size, task count bounds and scaling targets.
    cpu_target: average CPU % to hold. target_bytes_per_second: produce bytes/s per task
    to hold (varve_ingest_bytes_total). backpressure_scale_out: tasks added when any
    produce is refused for a full buffer (varve_ingest_backpressure_total) two minutes running.
    flush_bytes / max_buffer_bytes: Varve settings (null keeps Varve's defaults).
  EOT
  type = object({
    cpu                     = optional(number, 1024)
    memory                  = optional(number, 2048)
    min_count               = optional(number, 2)
    max_count               = optional(number, 20)
    cpu_target              = optional(number, 60)
    target_bytes_per_second = optional(number, 52428800)
    backpressure_scale_out  = optional(number, 2)
    flush_bytes             = optional(number)
    max_buffer_bytes        = optional(number)
  })
  default = {}

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.ingest.cpu) && var.ingest.memory >= 2 * var.ingest.cpu && var.ingest.memory <= 8 * var.ingest.cpu
    error_message = "ingest.cpu must be a Fargate size (256 ... 16384) and ingest.memory between 2 and 8 times it (MiB)."
  }
  validation {
    condition     = var.ingest.min_count >= 1 && var.ingest.min_count <= var.ingest.max_count
    error_message = "ingest needs 1 <= min_count <= max_count."
  }
  validation {
    condition     = var.ingest.cpu_target > 0 && var.ingest.cpu_target <= 100 && var.ingest.target_bytes_per_second > 0 && var.ingest.backpressure_scale_out >= 1
    error_message = "ingest.cpu_target must be in (0, 100], target_bytes_per_second positive and backpressure_scale_out at least 1."
  }
}

variable "fetch" {
  description = <<-EOT
    The fetch service: task size, task count bounds and scaling targets.
    cpu_target: average CPU % to hold. target_cache_misses_per_second: block reads per task
    and second that miss the cache and go to S3 (varve_fetch_cache_misses_total), null to
    scale on CPU only. cache_bytes: Varve's cache_bytes (null: half the task memory).
  EOT
  type = object({
    cpu                            = optional(number, 1024)
    memory                         = optional(number, 4096)
    min_count                      = optional(number, 2)
    max_count                      = optional(number, 20)
    cpu_target                     = optional(number, 60)
    target_cache_misses_per_second = optional(number, 200)
    cache_bytes                    = optional(number)
  })
  default = {}

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.fetch.cpu) && var.fetch.memory >= 2 * var.fetch.cpu && var.fetch.memory <= 8 * var.fetch.cpu
    error_message = "fetch.cpu must be a Fargate size (256 ... 16384) and fetch.memory between 2 and 8 times it (MiB)."
  }
  validation {
    condition     = var.fetch.min_count >= 1 && var.fetch.min_count <= var.fetch.max_count
    error_message = "fetch needs 1 <= min_count <= max_count."
  }
  validation {
    condition     = var.fetch.cpu_target > 0 && var.fetch.cpu_target <= 100 && coalesce(var.fetch.target_cache_misses_per_second, 1) > 0
    error_message = "fetch.cpu_target must be in (0, 100] and target_cache_misses_per_second positive or null."
  }
}

variable "compaction" {
  description = "A small service of its own running the compaction role (roles = compact). Off by default: the role ships in a later Varve release; enabling it with an older image makes the tasks exit with 'unknown role'."
  type = object({
    enabled = optional(bool, false)
    cpu     = optional(number, 512)
    memory  = optional(number, 1024)
    count   = optional(number, 1)
  })
  default = {}

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096], var.compaction.cpu) && var.compaction.count >= 0 && var.compaction.count <= 3
    error_message = "compaction.cpu must be a Fargate size up to 4096 and compaction.count between 0 and 3."
  }
}

variable "commit_path" {
  description = "How ingest tasks commit (Varve's commit_path): sequencer (through the elected sequencer, which the ingest tasks run: roles ingest,sequence) or direct (each writes etcd itself). Once a sequencer has led, direct commits are refused: do not switch back."
  type        = string
  default     = "sequencer"

  validation {
    condition     = contains(["direct", "sequencer"], var.commit_path)
    error_message = "commit_path must be direct or sequencer."
  }
}

variable "environment" {
  description = "Further Varve settings as environment variables (VARVE_LINGER, VARVE_LOG_LEVEL, ...), given to every service."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.environment) : startswith(k, "VARVE_") && !contains(["VARVE_ROLES", "VARVE_LISTEN", "VARVE_ETCD_ENDPOINTS", "VARVE_BUCKET", "VARVE_STORE", "VARVE_SHUTDOWN_TIMEOUT", "VARVE_AUTH", "VARVE_COMMIT_PATH", "VARVE_INSECURE", "VARVE_BOOTSTRAP_TOKEN", "VARVE_CLUSTER_SECRET", "VARVE_TLS_CERT_PEM", "VARVE_TLS_KEY_PEM", "VARVE_TLS_CA_PEM", "VARVE_KAFKA_LISTEN", "VARVE_KAFKA_ADVERTISED_ADDR"], k)])
    error_message = "environment keys must start with VARVE_ and must not override what the module sets (roles, listen, etcd endpoints, bucket/store, shutdown timeout, auth, commit_path, insecure, secrets: use tls, bootstrap_token_secret_arn and cluster_secret_arn; the Kafka listener: use kafka, and every task advertises its own IP, which one address given to all tasks would override)."
  }
}

variable "metrics_namespace" {
  description = "CloudWatch namespace the metrics sidecar publishes Varve's Prometheus metrics to (used by autoscaling)."
  type        = string
  default     = "Varve"
}

variable "metrics_sidecar_image" {
  description = "AWS Distro for OpenTelemetry collector image that scrapes /metrics and publishes to CloudWatch (EMF)."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "log_retention_days" {
  description = "Retention of the services' CloudWatch log groups, in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ...)."
  }
}

variable "fargate_spot" {
  description = "Run fetch and compaction tasks on Fargate Spot (ingest always runs on on-demand Fargate)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "scaling_metric_names" {
  description = "CloudWatch metric names (in metrics_namespace) autoscaling reads. The defaults are Varve's Prometheus names; change them if your collector normalizes names (for example drops _total)."
  type = object({
    ingest_bytes        = optional(string, "varve_ingest_bytes_total")
    ingest_backpressure = optional(string, "varve_ingest_backpressure_total")
    fetch_cache_misses  = optional(string, "varve_fetch_cache_misses_total")
  })
  default = {}
}
