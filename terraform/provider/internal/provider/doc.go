// Package provider is the Terraform provider for Varve's own resources: the
// varve_topic resource and the varve_topic, varve_topics and varve_cluster
// data sources. It talks to a cluster only through the Go SDK
// (github.com/varve-io/varve/sdk); it must never import server packages.
//
// Settings change in place through UpdateTopic (retention, size limits,
// the schema, partition growth); only what UpdateTopic cannot change
// replaces a topic (its name, cleanup policy, delete_retention_ms and
// min_compaction_lag_ms), marked "forces replacement" in the plan, with a
// warning for the settings. Shrinking
// partitions is refused at plan time. There are no ACLs in the API, so
// there is no varve_acl resource.
package provider
