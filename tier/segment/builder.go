package segment

import (
	"encoding/binary"
	"fmt"
)

// BlockBuilder accumulates one partition's records in encoded, uncompressed
// form: the block's payload before compression. The first record's timestamp
// is the block's base; later timestamps are stored as deltas from it.
//
// A BlockBuilder is not safe for concurrent use; Build only reads it.
type BlockBuilder struct {
	topic     string
	partition int32
	buf       []byte
	n         int
	base      int64
	minTS     int64
	maxTS     int64
}

// NewBlockBuilder returns an empty builder for one partition's block.
func NewBlockBuilder(topic string, partition int32) *BlockBuilder {
	return &BlockBuilder{topic: topic, partition: partition}
}

// Topic returns the block's topic.
func (b *BlockBuilder) Topic() string { return b.topic }

// Partition returns the block's partition.
func (b *BlockBuilder) Partition() int32 { return b.partition }

// Append encodes r at the end of the block, copying its bytes: the caller
// may reuse r's slices afterwards.
func (b *BlockBuilder) Append(r Record) {
	if b.n == 0 {
		b.base, b.minTS, b.maxTS = r.Timestamp, r.Timestamp, r.Timestamp
	} else {
		b.minTS = min(b.minTS, r.Timestamp)
		b.maxTS = max(b.maxTS, r.Timestamp)
	}
	b.buf = appendRecord(b.buf, &r, b.base)
	b.n++
}

// Len returns the number of records appended.
func (b *BlockBuilder) Len() int { return b.n }

// RawBytes returns the encoded, uncompressed size of the records appended:
// the block's payload size before compression.
func (b *BlockBuilder) RawBytes() int { return len(b.buf) }

// Decode returns the appended records decoded from the builder's buffer,
// without compression (to put freshly flushed blocks in the read cache).
// The records alias the buffer, which later appends never modify.
func (b *BlockBuilder) Decode() ([]Record, error) {
	if b.n == 0 {
		return nil, nil
	}
	recs, reason := decodeRecords(b.buf[:len(b.buf):len(b.buf)], b.n, b.base)
	if reason != "" {
		return nil, fmt.Errorf("%w: decode block builder %s/%d: %s", ErrCorrupt, b.topic, b.partition, reason)
	}
	return recs, nil
}

// EncodedSize is the number of uncompressed bytes r adds to a block, for
// memory accounting. It is exact except for the timestamp delta, whose width
// depends on the block's first timestamp and is counted at its widest (10
// bytes): EncodedSize never undercounts, and the sum over a block's records
// is at most 9 bytes per record above the builder's RawBytes.
func EncodedSize(r Record) int {
	return binary.MaxVarintLen64 + recordSizeNoTimestamp(&r)
}
