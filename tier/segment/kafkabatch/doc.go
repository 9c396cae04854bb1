// Package kafkabatch is Kafka RecordBatch v2: parse, validate, decompress,
// walk and encode batches.
//
// It knows Kafka's batch format (KIP-98) and nothing of Varve's segments:
// package segment stores validated batches as they are in its version 3
// blocks and uses this package to read them. Like segment, it depends only
// on the standard library, github.com/klauspost/compress,
// github.com/pierrec/lz4/v4 and the varint reader, CRC table and zstd
// decoder it shares with segment (tier/segment/internal/wire);
// internal/lint/boundaries checks it.
package kafkabatch
