package segment

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/varve-io/varve/tier/segment/kafkabatch"
)

// AppendProducerBatches appends recs to dst as Kafka RecordBatch v2
// batches, the batch form of a produce request (docs/segment-format.md,
// "The produce wire form"): batches of up to 1 MiB of records, each
// zstd-compressed when that makes it smaller, baseOffsets 0, n1, ...
// (a node ignores them), producerId, epoch and baseSequence -1. Records'
// Gap must be 0. It is what a producer sends and a node stores as is.
func AppendProducerBatches(dst []byte, recs []Record) ([]byte, error) {
	for i := range recs {
		if recs[i].Gap != 0 {
			return dst, fmt.Errorf("segment: produce batches: record %d has offset gap %d, want 0", i, recs[i].Gap)
		}
	}
	return AppendRecordBatches(dst, recs, 0, true)
}

// AppendRecordBatches appends the records of a block whose first offset
// is base (gaps as in Offsets) to dst as Kafka RecordBatch v2 batches of
// up to 1 MiB of records with absolute baseOffsets: zstd-compressed when
// compress is set and that is smaller, else uncompressed (cheap: a fetch
// node serving records it holds decoded). producerId, epoch and
// baseSequence are -1.
func AppendRecordBatches(dst []byte, recs []Record, base int64, compress bool) ([]byte, error) {
	if len(recs) == 0 {
		return dst, nil
	}
	b := NewBatchBlockBuilder("", 0)
	b.kraw = !compress
	start := len(dst)
	// Size the buffers once: growing them by append copies the records
	// again and again.
	est := 0
	for i := range recs {
		est += BatchEncodedSize(recs[i])
	}
	need := min(est, batchTargetBytes+BatchEncodedSize(recs[len(recs)-1]))
	pp, _ := pendPool.Get().(*[]byte)
	if pp == nil || cap(*pp) < need {
		pp = new([]byte)
		*pp = make([]byte, 0, need)
	}
	defer func() {
		if cap(*pp) <= 2*batchTargetBytes {
			*pp = (*pp)[:0]
			pendPool.Put(pp)
		}
	}()
	b.kpend = (*pp)[:0]
	if !compress {
		dst = slices.Grow(dst, est+(est/batchTargetBytes+1)*BatchHeaderSize)
	}
	b.kbuf = dst
	for i := range recs {
		b.Append(recs[i])
	}
	if b.badGap != 0 || b.span >= spanOverflow || base < 0 || base > math.MaxInt64-b.knext {
		return dst[:start], fmt.Errorf("segment: record batches: offsets from %d do not fit", base)
	}
	b.seal()
	*pp = b.kpend // sealed: its records are in kbuf now
	out := b.kbuf
	for p := start; p < len(out); {
		binary.BigEndian.PutUint64(out[p:], uint64(base+int64(binary.BigEndian.Uint64(out[p:]))))
		p += int(binary.BigEndian.Uint32(out[p+8:])) + batchLengthBase
	}
	return out, nil
}

// pendPool holds AppendRecordBatches' buffers of uncompressed records,
// which are garbage once the batches are sealed.
var pendPool sync.Pool

// DecodeBatches decodes Kafka RecordBatch v2 batches with absolute
// baseOffsets (what BlockBatches returns, and a fetch of batches carries)
// into records and their offsets, skipping records below from. Every
// batch is checked (framing, CRC, records) and its records must follow
// the previous batch's; errors wrap ErrCorrupt. The records alias fresh
// buffers (and the uncompressed parts of b).
func DecodeBatches(b []byte, from int64) ([]Record, []int64, error) {
	var recs []Record
	var offs []int64
	err := VisitBatches(b, from, func(off int64, kr *kafkabatch.Record) {
		if recs == nil {
			recs = make([]Record, 0, min(BatchesRecordCount(b), len(b)/minKafkaRecordSize+1))
			offs = make([]int64, 0, cap(recs))
		}
		recs = append(recs, kafkaRecordOf(kr))
		offs = append(offs, off)
	})
	if err != nil {
		return nil, nil, err
	}
	return recs, offs, nil
}

// BatchesRecordCount is the sum of the recordCount fields of the batches
// back to back in b, read from the headers alone (nothing is checked: a
// size hint for what DecodeBatches or VisitBatches will give).
func BatchesRecordCount(b []byte) int {
	n := 0
	for len(b) >= BatchHeaderSize {
		n += max(int(int32(binary.BigEndian.Uint32(b[57:]))), 0)
		l := int(binary.BigEndian.Uint32(b[8:])) + batchLengthBase
		if l < BatchHeaderSize || l > len(b) {
			break
		}
		b = b[l:]
	}
	return n
}

// VisitBatches is DecodeBatches calling fn with each record at or above
// from and its offset, in order, instead of collecting them, with the same
// checks and errors. kr is reused from call to call; its slices are not:
// they alias fresh buffers (and the uncompressed parts of b).
func VisitBatches(b []byte, from int64, fn func(off int64, kr *kafkabatch.Record)) error {
	next := int64(math.MinInt64)
	for p, i := 0, 0; p < len(b); i++ {
		h, field, reason := parseBatchHeader(b[p:], MaxBlockRawBytes, attrKnownForRead)
		if reason == "" {
			switch {
			case h.BaseOffset < 0 || h.BaseOffset > math.MaxInt64-1-int64(h.LastOffsetDelta):
				field, reason = "baseOffset", fmt.Sprintf("%d out of range", h.BaseOffset)
			case h.BaseOffset < next:
				field, reason = "baseOffset", fmt.Sprintf("%d, want at least %d (after the previous batch)", h.BaseOffset, next)
			}
		}
		if reason != "" {
			return corrupt("batch %d at %d: %s: %s", i, p, field, reason)
		}
		next = h.BaseOffset + int64(h.LastOffsetDelta) + 1
		if next <= from {
			p += h.Length
			continue
		}
		raw, err := decompressBatch(b[p+BatchHeaderSize:p+h.Length], h.Codec(), MaxBlockRawBytes, nil)
		if err != nil {
			return corrupt("batch %d at %d: records: %v", i, p, err)
		}
		err = walkKafkaRecords(raw, &h, math.MaxInt, func(_ int, kr *kafkaRecord) {
			if off := h.BaseOffset + int64(kr.OffsetDelta); off >= from {
				fn(off, kr)
			}
		})
		if err != nil {
			return corrupt("batch %d at %d: records: %v", i, p, err)
		}
		p += h.Length
	}
	return nil
}
