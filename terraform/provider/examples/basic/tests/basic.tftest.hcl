# `terraform test` for the example: creates the topic on the cluster at
# var.endpoint, checks what the provider and the cluster report, then
# destroys it.

run "create_topic" {
  assert {
    condition     = varve_topic.clicks.partitions == 3 && varve_topic.clicks.retention_ms == 86400000
    error_message = "the topic was not created with 3 partitions and one day of retention"
  }
  assert {
    condition     = can(regex("^[0-9a-f]{32}$", output.topic_id))
    error_message = "the cluster did not report a topic id"
  }
  assert {
    condition     = contains(output.cluster_topics, var.topic_name)
    error_message = "the cluster does not list the topic"
  }
}
