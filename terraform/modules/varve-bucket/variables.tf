variable "bucket_name" {
  description = "Name of the S3 bucket holding Varve's segment objects (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !can(regex("\\.\\.", var.bucket_name))
    error_message = "The bucket name must be 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit."
  }
}

variable "prefix" {
  description = "Key prefix under which Varve stores objects (without leading or trailing '/'); empty for the whole bucket. The IAM policy is limited to it."
  type        = string
  default     = ""

  validation {
    condition     = var.prefix == "" || can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.prefix))
    error_message = "The prefix must be path segments of safe characters separated by '/', with no leading or trailing '/'."
  }
}

variable "kms_key_arn" {
  description = "KMS key for SSE-KMS encryption (with an S3 Bucket Key). Null uses SSE-S3 (AES256)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:...)."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Days after which incomplete multipart uploads (from crashed ingest nodes) are aborted and their parts deleted."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_multipart_upload_days >= 1 && floor(var.abort_incomplete_multipart_upload_days) == var.abort_incomplete_multipart_upload_days
    error_message = "abort_incomplete_multipart_upload_days must be a whole number of days, at least 1."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a bucket that still holds objects. Keep false in production: the bucket is Varve's only durable copy of the data."
  type        = bool
  default     = false
}

variable "create_role" {
  description = "Create an IAM role (assumable by the services in role_trusted_services) with the bucket policy attached. Set false to attach policy_arn to your own role."
  type        = bool
  default     = true
}

variable "role_name" {
  description = "Name of the IAM role to create when create_role is true; defaults to \"<bucket_name>-varve\"."
  type        = string
  default     = null

  validation {
    condition     = var.role_name == null || can(regex("^[\\w+=,.@-]{1,64}$", var.role_name))
    error_message = "role_name must be 1 to 64 characters of letters, digits and +=,.@_-."
  }
}

variable "role_trusted_services" {
  description = "AWS service principals allowed to assume the created role (ECS tasks by default)."
  type        = list(string)
  default     = ["ecs-tasks.amazonaws.com"]

  validation {
    condition     = length(var.role_trusted_services) > 0 && alltrue([for s in var.role_trusted_services : endswith(s, ".amazonaws.com")])
    error_message = "role_trusted_services must list service principals such as ecs-tasks.amazonaws.com."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
