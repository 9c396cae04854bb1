// Package ingest owns the write path of a node: it validates and places
// produced records — or, in the batch form, producers' Kafka record
// batches, checked in full and stored as they are, without decoding a
// record (docs/segment-format.md, "The produce wire form") — buffers them
// as version 3 blocks in one open file for all partitions, and
// flushes each file as exactly one segment object (one PUT) followed by an
// etcd commit that assigns offsets. Producers are answered only after that
// commit: an acknowledged record is durable.
//
// ingest keeps nothing that matters across a crash except unacknowledged
// records. It never reads segments back and never serves fetches.
package ingest
