package segment

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/klauspost/compress/zstd"
)

// Copying stored Kafka batches from one version 3 block into another
// (compaction merging blocks without decoding their records).

// StoredBatch is one Kafka RecordBatch v2 batch of a version 3 block, as
// StoredBatches returns it.
type StoredBatch struct {
	// Bytes is the whole batch (header and records) as stored; it aliases
	// the block.
	Bytes []byte
	// Offset is the batch's baseOffset, relative to the block's base
	// offset; its records are at Offset+offsetDelta, the last at most at
	// Offset+LastOffsetDelta.
	Offset          int64
	LastOffsetDelta int32
	Records         int
	Compression     Compression
	// BaseTimestamp and MaxTimestamp are the header fields; MinTimestamp
	// is BaseTimestamp, or MaxTimestamp for a LogAppendTime batch (what
	// the footer counts).
	BaseTimestamp, MaxTimestamp, MinTimestamp int64
}

// StoredBatches checks a version 3 block (exactly its byte range, as
// DecodeBlock takes it) without decompressing it — block header and CRC,
// every batch's framing, header and CRC-32C, relative offsets in order,
// the record count — and returns its batches, aliasing block. ok is false
// for a block of version 1 or 2 (nothing else is checked then: decode it
// with DecodeBlock). Every format failure wraps ErrCorrupt.
func StoredBatches(block []byte) (batches []StoredBatch, ok bool, err error) {
	h, err := parseBlockHeader(block)
	if err != nil {
		return nil, false, err
	}
	if h.version != BatchesBlockVersion {
		return nil, false, nil
	}
	payload := block[BlockHeaderSize:]
	next := int64(0)
	total := 0
	for p, i := 0, 0; p < len(payload); i++ {
		bh, field, reason := parseBatchHeader(payload[p:], MaxBlockRawBytes, attrKnownForRead)
		if reason == "" {
			switch {
			case bh.BaseOffset < next:
				field, reason = "baseOffset", fmt.Sprintf("%d, want at least %d (after the previous batch)", bh.BaseOffset, next)
			case bh.BaseOffset > math.MaxInt64-1-int64(bh.LastOffsetDelta):
				field, reason = "baseOffset", fmt.Sprintf("%d + lastOffsetDelta %d overflows", bh.BaseOffset, bh.LastOffsetDelta)
			case i == 0 && bh.BaseTimestamp != h.base:
				field, reason = "baseTimestamp", fmt.Sprintf("%d, the block header says %d", bh.BaseTimestamp, h.base)
			case int64(total)+int64(bh.RecordCount) > int64(h.records):
				field, reason = "recordCount", fmt.Sprintf("batches hold more than the block header's %d records", h.records)
			}
		}
		if reason != "" {
			return nil, true, corrupt("block batches: batch %d at %d: %s: %s", i, p, field, reason)
		}
		sb := StoredBatch{
			Bytes: payload[p : p+bh.Length : p+bh.Length], Offset: bh.BaseOffset, LastOffsetDelta: bh.LastOffsetDelta,
			Records: int(bh.RecordCount), Compression: bh.Codec(),
			BaseTimestamp: bh.BaseTimestamp, MaxTimestamp: bh.MaxTimestamp, MinTimestamp: bh.BaseTimestamp,
		}
		if bh.Attributes&attrLogAppendTime != 0 {
			sb.MinTimestamp = bh.MaxTimestamp
		}
		batches = append(batches, sb)
		total += int(bh.RecordCount)
		next = bh.BaseOffset + int64(bh.LastOffsetDelta) + 1
		p += bh.Length
	}
	if total != int(h.records) {
		return nil, true, corrupt("block batches: batches hold %d records, the block header says %d", total, h.records)
	}
	return batches, true, nil
}

// UncompressedSize returns the size of the batch's records once
// decompressed: the stored size for an uncompressed batch, the declared
// content sizes of its frames for a zstd batch whose every frame declares
// one (the frames' block headers are walked, nothing is decompressed),
// else the size found by decompressing it (into *scratch, which is kept
// for the next call; scratch may be nil). It is what a reader's budget
// (MaxBlockRawBytes per block) counts.
func (sb *StoredBatch) UncompressedSize(scratch *[]byte) (int, error) {
	recs := sb.Bytes[BatchHeaderSize:]
	switch sb.Compression {
	case CompressionNone:
		return len(recs), nil
	case CompressionZstd:
		if n, ok := zstdDeclaredSize(recs); ok {
			return n, nil
		}
	}
	var buf []byte
	if scratch != nil {
		buf = *scratch
	}
	raw, err := decompressBatch(recs, sb.Compression, MaxBlockRawBytes, buf)
	if err != nil {
		return 0, corrupt("batch at relative offset %d: records: %v", sb.Offset, err)
	}
	if scratch != nil && sb.Compression == CompressionZstd && cap(raw) > cap(*scratch) {
		*scratch = raw[:0]
	}
	return len(raw), nil
}

// zstdDeclaredSize sums the content sizes the zstd frames of p declare,
// walking the frames' block headers to find where each frame ends. ok is
// false when a frame does not declare its size or p does not parse (the
// caller then decompresses, which reports what is wrong).
func zstdDeclaredSize(p []byte) (int, bool) {
	total := uint64(0)
	for len(p) > 0 {
		var fh zstd.Header
		if err := fh.Decode(p); err != nil {
			return 0, false
		}
		if fh.Skippable {
			n := uint64(fh.HeaderSize) + uint64(fh.SkippableSize)
			if n > uint64(len(p)) {
				return 0, false
			}
			p = p[n:]
			continue
		}
		if !fh.HasFCS || fh.HeaderSize > len(p) {
			return 0, false
		}
		p = p[fh.HeaderSize:]
		for last := false; !last; {
			if len(p) < 3 {
				return 0, false
			}
			bh := uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16
			last = bh&1 == 1
			size := int(bh >> 3)
			switch (bh >> 1) & 3 {
			case 1: // RLE: one byte repeated size times
				size = 1
			case 3:
				return 0, false
			}
			if size > len(p)-3 {
				return 0, false
			}
			p = p[3+size:]
		}
		if fh.HasCheckSum {
			if len(p) < 4 {
				return 0, false
			}
			p = p[4:]
		}
		total += fh.FrameContentSize
		if total > MaxBlockRawBytes {
			return 0, false
		}
	}
	return int(total), true
}

// AppendStoredBatch appends a batch from StoredBatches of another block
// at offset off relative to this block's base (at least the offset after
// everything appended so far), copying its bytes and rewriting only its
// baseOffset (outside the batch CRC). Records appended before are sealed
// into a batch first. On error nothing is appended.
func (b *BlockBuilder) AppendStoredBatch(sb *StoredBatch, off int64) error {
	if !b.batches {
		return fmt.Errorf("segment: AppendStoredBatch on a version %d block builder (use NewBatchBlockBuilder)", BlockVersion)
	}
	if len(sb.Bytes) < BatchHeaderSize || int(binary.BigEndian.Uint32(sb.Bytes[8:]))+batchLengthBase != len(sb.Bytes) ||
		int32(binary.BigEndian.Uint32(sb.Bytes[23:])) != sb.LastOffsetDelta || sb.Records < 1 {
		return fmt.Errorf("segment: AppendStoredBatch: the batch does not match its description")
	}
	if b.kpendN > 0 {
		b.seal()
	}
	if off < b.knext || off > math.MaxInt64-1-int64(sb.LastOffsetDelta) {
		return fmt.Errorf("segment: AppendStoredBatch: relative offset %d, want at least %d", off, b.knext)
	}
	start := len(b.kbuf)
	b.kbuf = append(b.kbuf, sb.Bytes...)
	binary.BigEndian.PutUint64(b.kbuf[start:], uint64(off))
	if b.n == 0 {
		b.base, b.minTS, b.maxTS = sb.BaseTimestamp, sb.MinTimestamp, sb.MaxTimestamp
	} else {
		b.minTS = min(b.minTS, sb.MinTimestamp)
		b.maxTS = max(b.maxTS, sb.MaxTimestamp)
	}
	b.n += sb.Records
	b.knext = off + int64(sb.LastOffsetDelta) + 1
	return nil
}
