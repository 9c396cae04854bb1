// Package bench owns Varve's load generation: payloads, workloads and (with
// `varve bench`) peers, reports and plots. Benchmarks across the tree use its
// payloads so figures are comparable.
//
// Profiles: quick and full compare Varve with the physical floor and with
// peers; scale (ScaleWorkload at 8 and 1,000 partitions, 10,000 in full or
// with WithPartitions, on Varve over MinIO with one, two and four ingest
// nodes and etcd as its own process) reports what grows with partitions and
// nodes: commit latency from the nodes' /metrics, etcd Txn RPCs/s, writes/s,
// CPU, DB bytes and keys per GiB from etcd's own /metrics and a range
// count, S3 PUTs and GETs per GiB from MinIO's metrics, and CPU seconds of
// all server processes per MiB (docs/bench.md).
//
// bench is a client of Varve's API; it never reaches into a node's internals.
package bench
