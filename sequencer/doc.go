// Package sequencer orders every commit of the cluster (docs/metadata.md,
// "The sequencer"): one elected node holds the partitions' high watermarks
// and the idempotent producers' states in memory, takes the flush
// manifests ingest nodes send it, decides each block exactly as the direct
// commit path does (metadata.CheckBatch), and writes each batch of
// manifests as one etcd transaction (metadata/seqlog) before answering.
// A node that wins the election recovers from the last checkpoint and the
// records after it before it answers anything.
//
// Client implements ingest.Committer over a Service: a Sequencer in
// process, or the internal SequencerService (proto/varve/v1/sequencer.proto;
// NewHandler serves it, NewDialer reaches the leader by the URL it
// campaigned with). The package never imports etcd: metadata/seqlog is its
// only way to it. Nodes run it with the sequence role and commit_path
// sequencer, the default (node/sequence.go).
package sequencer
