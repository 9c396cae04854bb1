// Package sdk is the Go client of Varve.
//
// It owns the data path of the public API: a [Client] for plain calls (one
// RPC each), a batching asynchronous [Producer] with retries, an
// assigned-partition [Consumer] that long-polls partitions concurrently, a
// [GroupConsumer], scans, and [Client.Tail], which follows one partition
// over the server-streaming Subscribe RPC. Administration (topics, groups,
// compaction) is package sdk/admin, built on a Client (as franz-go's kadm on
// kgo).
//
// [WithHooks] calls user functions after every Produce and Fetch request
// ([Hooks].OnProduceBatch, OnFetch: topic, partition, records, bytes,
// latency, error), so metrics plug in without forking; [WithLogger] gives
// the client a *slog.Logger (it logs nothing by default).
//
// sdk imports only the generated API (gen/varve/v1), connect, the standard
// library, google.golang.org/genproto's errdetails (to honour RetryInfo) and
// the OpenTelemetry API with connectrpc.com/otelconnect (for
// WithTracerProvider).
// It must never import server packages (node, ingest, query, metadata, tier):
// everything it knows about a cluster it learns through the API.
//
// Errors returned by the SDK wrap the *connect.Error of the failing call with
// what was attempted and on what, so callers can branch with
// connect.CodeOf(err) (for example connect.CodeNotFound for an unknown topic).
//
// The producer is idempotent by default: it retries batches that failed
// with a retriable code (Unavailable, ResourceExhausted, DeadlineExceeded,
// Aborted), and each batch carries a producer id and per-partition sequence
// numbers, so a retry after a lost response is stored once, through any
// node (docs/idempotence.md). Up to 5 batches of a topic are in flight,
// per-partition order kept. Every record completes, acknowledged or
// failed, within ProducerOptions.DeliveryTimeout (2 min); a failed record
// may or may not be stored. Produce requests go to the node the cluster
// places the client on, when a node names one and the client can reach it
// (see [New]). With
// ProducerOptions.DisableIdempotence delivery is at least once: a batch
// whose response was lost may be stored twice.
//
// Partitions are chosen as Kafka's default partitioner does: a record
// without ExplicitPartition goes to murmur2 of its key (the sticky
// partition without a key); see [Record]. Consumers reset an out-of-range
// position per ConsumerOptions.OffsetReset (Kafka's auto.offset.reset,
// latest by default).
package sdk
