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
  description = "Partitions of the example topic; it can grow (replacing the topic) but never shrink."
  type        = number
  default     = 3
}
