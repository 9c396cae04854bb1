output "topic_id" {
  description = "Id the cluster gave the topic."
  value       = varve_topic.clicks.topic_id
}

output "cluster_topics" {
  description = "Every topic on the cluster."
  value       = data.varve_cluster.this.topic_names
}
