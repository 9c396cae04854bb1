// Package topicapi serves the Connect TopicService: create, list,
// describe, update in place (retention, record limit, schema, partition
// growth) and delete topics, on metadata. Schemas are checked and stored in
// their canonical form (scan.ParseTopicSchema).
package topicapi
