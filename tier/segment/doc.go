// Package segment owns the segment object format: the bytes of the objects an
// ingest node PUTs on each flush and that compaction rewrites.
//
// A segment object holds one block per partition flushed (or several per
// partition after compaction), each compressed with zstd and protected by its
// own CRC32C, followed by a footer that lists every block and a fixed-size
// trailer. A reader fetches one block with one ranged GET and decodes it on
// its own with DecodeBlock; FooterSize and DecodeFooter read the footer from
// the object's tail; Decode verifies a whole object. Offsets are not stored:
// record i of a block has offset base+i, where etcd assigns the base —
// except in a sparse block (block version 2, written by compaction of a
// compacted topic), whose records carry the number of offsets removed
// before each (Record.Gap; Offsets turns gaps into offsets).
//
// A block of version 3 holds Kafka RecordBatch v2 batches as producers send
// them (each with its own CRC-32C and codec; offsets relative to the base):
// ValidateBatches checks a producer's batches cheaply, a builder from
// NewBatchBlockBuilder appends their bytes (or encodes Records as zstd
// batches), the read API decodes them like any block, and BlockBatches
// returns a block's batches with absolute offsets for a Kafka fetch.
// AppendProducerBatches and DecodeBatches are the client side of the
// produce and fetch wire forms (what the Go SDK sends and decodes). The
// Kafka batch codec itself (parse, validate, decompress, walk, encode) is
// package kafkabatch; segment re-exports its names.
//
// Build makes a whole object at once (ingest); Writer makes one block at a
// time (compaction, at a better compression level).
//
// The byte layout, the versioning rules and the reasons behind them are in
// docs/segment-format.md.
//
// segment never does I/O (no object store, no etcd, no files): it turns
// records into bytes and bytes into records. Every decoding failure wraps
// ErrCorrupt; decoders never panic and never allocate more than the verified
// input can hold.
package segment
