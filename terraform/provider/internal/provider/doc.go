// Package provider is the Terraform provider for Varve's own resources: the
// varve_topic resource and the varve_topic, varve_topics and varve_cluster
// data sources. It talks to a cluster only through the Go SDK
// (github.com/varve-io/varve/sdk); it must never import server packages.
//
// The Varve API has CreateTopic, ListTopics, DescribeTopic and DeleteTopic
// and no UpdateTopic yet, so every change to a topic's settings replaces the
// topic (and its records), and shrinking partitions is refused at plan time.
// There are no ACLs and no schemas in the API, so there is no varve_acl
// resource and no schema attribute.
package provider
