variable "name" {
  description = "Name of the cluster; prefixes every resource and names the private DNS zone (<name>.etcd.internal)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 32 lowercase letters, digits or '-', starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC the etcd nodes run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per node (node i lives in subnet_ids[i] with its volume and fixed IP). Use three subnets in three availability zones."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) == 3 || length(var.subnet_ids) == 5
    error_message = "etcd needs an odd quorum: give 3 (or 5) subnets, one per node."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the nodes (Graviton types need architecture = \"arm64\")."
  type        = string
  default     = "t3.medium"
}

variable "architecture" {
  description = "CPU architecture of instance_type: x86_64 or arm64 (selects the AMI and the etcd build)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "etcd_version" {
  description = "etcd release installed on the nodes (from the etcd-io/etcd GitHub releases)."
  type        = string
  default     = "v3.6.5"

  validation {
    condition     = can(regex("^v3\\.[5-9]\\.[0-9]+$", var.etcd_version))
    error_message = "etcd_version must be a v3.5 or later release such as v3.6.5."
  }
}

variable "etcd_sha256" {
  description = "SHA-256 of the etcd release tarball for etcd_version and architecture; the node refuses to start etcd if the download differs. Null skips the check (not recommended)."
  type        = string
  default     = null

  validation {
    condition     = var.etcd_sha256 == null || can(regex("^[0-9a-f]{64}$", var.etcd_sha256))
    error_message = "etcd_sha256 must be 64 lowercase hex digits."
  }
}

variable "volume_size_gb" {
  description = "Size of each node's persistent data volume (gp3), in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.volume_size_gb >= 8 && var.volume_size_gb <= 1024
    error_message = "volume_size_gb must be between 8 and 1024."
  }
}

variable "client_tls" {
  description = "Serve clients over TLS with client-certificate authentication. Peer traffic is always TLS. Varve's etcd client has no TLS settings yet, so set false until it does (clients are then limited by security group)."
  type        = bool
  default     = true
}

variable "allowed_client_cidr_blocks" {
  description = "CIDR blocks allowed to reach the client port 2379, in addition to members of client_security_group_id."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.allowed_client_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "Every entry of allowed_client_cidr_blocks must be a CIDR block."
  }
}

variable "snapshot_schedule" {
  description = "When the leader saves a snapshot to S3, as a systemd OnCalendar expression (\"hourly\", \"*:0/15\", ...)."
  type        = string
  default     = "hourly"

  validation {
    condition     = length(trimspace(var.snapshot_schedule)) > 0
    error_message = "snapshot_schedule must not be empty."
  }
}

variable "snapshot_bucket_name" {
  description = "Bucket created for the snapshots (versioning on, encrypted, public access blocked); defaults to \"<name>-etcd-snapshots-<account id>\"."
  type        = string
  default     = null
}

variable "snapshot_retention_days" {
  description = "Days snapshots are kept before S3 expires them."
  type        = number
  default     = 14

  validation {
    condition     = var.snapshot_retention_days >= 1
    error_message = "snapshot_retention_days must be at least 1."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
