variable "endpoint" {
  description = "Base URL of a Varve node or load balancer."
  type        = string
  default     = "http://127.0.0.1:7700"
}

variable "topic_name" {
  description = "Name of the example topic."
  type        = string
  default     = "clicks"
}

variable "partitions" {
  description = "Partitions of the example topic; they can grow in place but never shrink."
  type        = number
  default     = 3
}

variable "retention_ms" {
  description = "How long the example topic keeps records, in ms (-1: forever); a change is applied in place."
  type        = number
  default     = 86400000 # one day
}

variable "cleanup_policy" {
  description = "\"delete\" or \"compact\"; the API cannot change it in place, so a change replaces the topic (and deletes its records)."
  type        = string
  default     = "delete"
}
