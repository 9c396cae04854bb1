package segment

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/varve-io/varve/tier/segment/internal/wire"
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
	// gaps holds one uvarint offset gap per record once any record has a
	// non-zero Gap (nil while the block is dense); badGap the first
	// negative Gap, which Build refuses.
	gaps   []byte
	badGap int64
	// span is the number of offsets the records cover (records plus gaps),
	// saturated at spanOverflow.
	span  uint64
	base  int64
	minTS int64
	maxTS int64

	// A batch builder (NewBatchBlockBuilder) writes a version 3 block:
	// kbuf holds the sealed batches (relative baseOffsets), kpend the
	// records of the batch being filled (kpendN of them, the first at
	// relative offset kpendBase, the last at offset delta kpendLast),
	// knext the next free relative offset. minTS and maxTS are then the
	// smallest batch baseTimestamp and the largest maxTimestamp.
	batches                  bool
	kbuf, kpend              []byte
	kpendN                   int
	kpendBase, knext         int64
	kpendLast                int32
	kpendFirstTS, kpendMaxTS int64
	// krecBytes counts the bytes records appended one by one took in
	// pending batches (RecordBytes).
	krecBytes int
	// kraw seals batches uncompressed (AppendRecordBatches without
	// compress).
	kraw bool
	// klazy (DeferCompression) seals batches uncompressed and lists their
	// starts in kdefer; Build compresses them.
	klazy  bool
	kdefer []int
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
	if b.batches {
		b.appendBatchRecord(&r)
		return
	}
	if b.n == 0 {
		b.base, b.minTS, b.maxTS = r.Timestamp, r.Timestamp, r.Timestamp
	} else {
		b.minTS = min(b.minTS, r.Timestamp)
		b.maxTS = max(b.maxTS, r.Timestamp)
	}
	b.buf = appendRecord(b.buf, &r, b.base)
	if g := uint64(max(r.Gap, 0)); b.span < spanOverflow && g < spanOverflow-b.span-1 {
		b.span += 1 + g
	} else {
		b.span = spanOverflow
	}
	switch {
	case r.Gap < 0:
		if b.badGap == 0 {
			b.badGap = r.Gap
		}
	case r.Gap > 0 && b.gaps == nil:
		// The first gap: the records so far had none.
		b.gaps = make([]byte, b.n, b.n+16)
		fallthrough
	case b.gaps != nil:
		b.gaps = appendUvarint(b.gaps, uint64(r.Gap))
	}
	b.n++
}

// spanOverflow marks a block whose offsets (records plus gaps) do not fit
// in an int64.
const spanOverflow = 1 << 63

// Grow makes room for n more bytes of records, so that appending them
// does not reallocate (a compactor fills blocks of a known size).
func (b *BlockBuilder) Grow(n int) {
	if b.batches {
		b.kpend = slices.Grow(b.kpend, min(n, batchTargetBytes))
		return
	}
	b.buf = slices.Grow(b.buf, n)
}

// RecordBytes returns how many bytes the records appended one by one
// (Append, AppendBatchesRecords) took encoded, batch headers not counted:
// what Grow of a next block for the same partition should make room for.
// Batches appended as sent (AppendBatches) are not counted.
func (b *BlockBuilder) RecordBytes() int {
	if b.batches {
		return b.krecBytes
	}
	return len(b.buf)
}

// Sparse reports whether some record has an offset gap: the block is then
// written as a version 2 block.
func (b *BlockBuilder) Sparse() bool { return b.gaps != nil }

// Len returns the number of records appended.
func (b *BlockBuilder) Len() int { return b.n }

// RawBytes returns the encoded, uncompressed size of the records appended:
// the block's payload size before compression (with the offset gaps of a
// sparse block).
//
// For a batch builder it is the batches' bytes as stored plus the
// pending records uncompressed with a batch header: the block's payload
// is at most that.
func (b *BlockBuilder) RawBytes() int {
	if b.batches {
		return b.batchesRawBytes()
	}
	return len(b.gaps) + len(b.buf)
}

// Decode returns the appended records decoded from the builder's buffer,
// without compression (to put freshly flushed blocks in the read cache).
// The records alias the buffer, which later appends never modify.
func (b *BlockBuilder) Decode() ([]Record, error) {
	if b.n == 0 {
		return nil, nil
	}
	if b.batches {
		payload := b.kbuf[:len(b.kbuf):len(b.kbuf)]
		if b.kpendN > 0 {
			payload = b.appendPending(append([]byte(nil), b.kbuf...), nil, false)
		}
		recs, _, reason := decodeBatchesRecords(payload, b.n, b.base)
		if reason != "" {
			return nil, fmt.Errorf("%w: decode block builder %s/%d: %s", ErrCorrupt, b.topic, b.partition, reason)
		}
		return recs, nil
	}
	recs, reason := decodeRecords(b.buf[:len(b.buf):len(b.buf)], b.n, b.base)
	if reason == "" && b.gaps != nil {
		r := wire.Reader{B: b.gaps}
		for i := range recs {
			recs[i].Gap = int64(r.Uvarint())
		}
		reason = r.Err
	}
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
//
// A record with an offset gap also counts the gap's width; in a sparse
// block each record without a gap costs one more byte than counted.
func EncodedSize(r Record) int {
	n := binary.MaxVarintLen64 + recordSizeNoTimestamp(&r)
	if r.Gap > 0 {
		n += wire.UvarintLen(uint64(r.Gap))
	}
	return n
}
