// Package kafka serves the Kafka wire protocol on a node: unmodified Kafka
// clients (librdkafka and kcat, franz-go, the Java client) produce,
// fetch, join consumer groups and manage topics (docs/kafka.md).
//
// It owns the mapping of Kafka's APIs onto Varve and nothing else: the
// encoding of every request and response is github.com/twmb/franz-go/pkg/kmsg,
// the writes go to an ingest.Ingester (record batches stored as they come,
// tier/segment block version 3), the reads to a fetch.Fetcher (stored
// batches copied out as they are), topics and committed offsets to
// metadata, authentication, authorization and quotas to the node's guard.
// It keeps no state that matters after a crash: fetch sessions and the
// group coordinator's members live in memory and clients rebuild them (a
// new full fetch, a new join), while committed offsets are in etcd. It
// never imports etcd (only package metadata does).
//
// Files: server.go (listener, connections, answer order, pipelined
// idempotent produces), frames.go (request frames and their memory
// budget), versions.go (ApiVersions and the table of served APIs),
// roles.go (nodes with one of the ingest and fetch roles: leaders and
// preferred read replicas), metadata.go (Metadata, DescribeCluster),
// produce.go (Produce, InitProducerId), fetch.go (Fetch, incremental fetch
// sessions), offsets.go (ListOffsets), coordinator.go (FindCoordinator,
// which node coordinates which group), groups.go (JoinGroup, SyncGroup,
// Heartbeat, LeaveGroup: the classic protocol in the coordinator's
// memory), groups_offsets.go (OffsetCommit, OffsetFetch, OffsetDelete on
// Varve's committed offsets), groups_admin.go (DescribeGroups, ListGroups,
// DeleteGroups), admin.go (CreateTopics, DeleteTopics, CreatePartitions),
// configs.go (DescribeConfigs, IncrementalAlterConfigs, AlterConfigs:
// Varve's topic settings under Kafka's config names), sasl.go
// (SaslHandshake, SaslAuthenticate, the TLS handshake and mutual-TLS
// identity, revoked keys), scram.go (the SCRAM-SHA-256/512 server),
// quota.go (throttle times and muted connections), errors.go (Varve
// errors as Kafka error codes).
package kafka
