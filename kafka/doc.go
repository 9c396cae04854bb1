// Package kafka serves the Kafka wire protocol on a node: unmodified Kafka
// clients (librdkafka and kcat, franz-go, the Java client) produce,
// fetch, join consumer groups and manage topics.
//
// It owns the mapping of Kafka's APIs onto Varve and nothing else: the
// encoding of every request and response is github.com/twmb/franz-go/pkg/kmsg,
// the writes go to an ingest.Ingester (record batches stored as they come,
// tier/segment block version 3), the reads to a fetch.Fetcher (stored
// batches copied out as they are), topics and committed offsets to
// metadata, and authorization to the node's guard. It keeps no state that
// matters after a crash: fetch sessions and the group coordinator's
// members live in memory and clients rebuild them (a new full fetch, a
// new join), while committed offsets are in etcd (docs/kafka.md).
//
// Files: server.go (listener, connections, framing), versions.go
// (ApiVersions and the table of served APIs), metadata.go, produce.go,
// fetch.go (incremental fetch sessions), offsets.go (ListOffsets),
// errors.go (Varve errors as Kafka error codes).
package kafka
