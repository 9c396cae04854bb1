package compact

import (
	"fmt"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// emitter writes a run's kept records, in offset order, into version 3
// blocks (Kafka record batches, docs/segment-format.md) of about
// blockBytes uncompressed each, all in one object, and makes the index
// entries that tile the run: each entry starts where the previous one
// ended, so offsets dropped between two blocks belong to the later entry
// (its first record carries the gap) and offsets dropped after the last
// record extend the last entry.
//
// Batches of version 3 input blocks are copied as they are (addBatch:
// only their baseOffset is rewritten); records (from version 1 and 2
// blocks, or what a compacted topic keeps) are encoded into new zstd
// batches of up to 1 MiB of records (add), compressed when the block is
// added to the object, at the writer's level.
type emitter struct {
	topic      string
	p          int32
	level      int
	blockBytes int // the current target, grown to stay within maxEntries
	minBlock   int
	raw        int64
	maxEntries int

	w       *segment.Writer
	shared  bool // w holds other partitions' blocks too: finish leaves it open
	b       *segment.BlockBuilder
	entries []metadata.IndexEntry
	start   int64 // base of the open entry
	last    int64 // offset of the last record added (start-1 when none)
	records int64

	// open is the open block's uncompressed size: its records and batch
	// headers, counting copied batches decompressed (copiedStored is their
	// stored size, copiedRaw their decompressed size).
	copiedStored, copiedRaw int64
	scratch                 []byte
	// inStored is the stored size of the run's input, readStored what was
	// read of it so far, and outRaw the uncompressed bytes emitted: their
	// ratio predicts the rest, so that blocks grow when the run would
	// otherwise need more than maxEntries of them.
	inStored, readStored, outRaw int64
}

// newEmitter starts a run at offset start; raw bounds the records' size (a
// hint for buffers), inStored is the stored size of the input and
// maxEntries the most entries the run may make.
func newEmitter(topic string, p int32, level, blockBytes int, start, raw, inStored int64, maxEntries int, lvl segment.Level, w *segment.Writer) *emitter {
	shared := w != nil
	if w == nil {
		w = segment.NewWriter(lvl)
	}
	em := &emitter{topic: topic, p: p, level: level, blockBytes: blockBytes, minBlock: blockBytes, raw: raw, maxEntries: maxEntries,
		w: w, shared: shared, start: start, last: start - 1, inStored: inStored}
	em.newBlock()
	return em
}

// newBlock starts the next block, with room for a full one.
func (em *emitter) newBlock() {
	em.b = segment.NewBatchBlockBuilder(em.topic, em.p)
	em.b.DeferCompression() // compressed by the Writer, at its level
	em.b.Grow(int(min(int64(em.blockBytes+em.blockBytes/8), em.raw)))
	em.copiedStored, em.copiedRaw = 0, 0
}

// open returns the open block's uncompressed size.
func (em *emitter) open() int64 {
	return int64(em.b.RawBytes()) - em.copiedStored + em.copiedRaw
}

// read notes n stored bytes of input read.
func (em *emitter) read(n int64) { em.readStored += n }

// add appends a record at offset off (greater than every offset so far).
func (em *emitter) add(r segment.Record, off int64) error {
	r.Gap = off - em.last - 1
	em.b.Append(r)
	em.last = off
	em.records++
	return em.maybeSeal()
}

// addBatch copies a stored batch of a version 3 block whose entry starts
// at base (its first offset greater than every offset so far).
func (em *emitter) addBatch(sb *segment.StoredBatch, base int64) error {
	size, err := sb.UncompressedSize(&em.scratch)
	if err != nil {
		return err
	}
	// A reader decompresses at most MaxBlockRawBytes of a block's batches.
	if em.b.Len() > 0 && em.open()+int64(size) > segment.MaxBlockRawBytes {
		if err := em.seal(em.last + 1); err != nil {
			return err
		}
	}
	first := base + sb.Offset
	if first <= em.last {
		return fmt.Errorf("%w: batch at offset %d after offset %d", segment.ErrCorrupt, first, em.last)
	}
	if err := em.b.AppendStoredBatch(sb, first-em.start); err != nil {
		return err
	}
	em.copiedStored += int64(len(sb.Bytes))
	em.copiedRaw += int64(segment.BatchHeaderSize + size)
	em.last = first + int64(sb.LastOffsetDelta)
	em.records += int64(sb.Records)
	return em.maybeSeal()
}

// maybeSeal seals the open block once it reaches the target, unless the
// run is out of entries (the last one then takes the rest).
func (em *emitter) maybeSeal() error {
	if em.open() >= int64(em.blockBytes) && len(em.entries) < em.maxEntries-1 {
		return em.seal(em.last + 1)
	}
	return nil
}

// seal closes the open block as an entry covering [start, end).
func (em *emitter) seal(end int64) error {
	open := em.open()
	bi, err := em.w.Add(em.b)
	if err != nil {
		return err
	}
	e := metadata.IndexEntry{
		Topic: em.topic, Partition: em.p, Base: em.start,
		Off: bi.Offset, Len: bi.Length, Records: bi.Records,
		MinTS: bi.MinTimestamp, MaxTS: bi.MaxTimestamp, RawBytes: bi.RawBytes, Level: em.level,
	}
	if span := end - em.start; span != bi.Records {
		e.Span = span
	}
	em.entries = append(em.entries, e)
	em.start, em.last = end, end-1
	em.outRaw += open
	// Predict the rest from what the input gave so far and grow the
	// blocks if the entries left would not hold it.
	if left := em.maxEntries - 1 - len(em.entries); left > 0 && em.readStored > 0 && em.inStored > em.readStored {
		rest := float64(em.outRaw) / float64(em.readStored) * float64(em.inStored-em.readStored)
		em.blockBytes = int(min(max(int64(em.minBlock), int64(rest)/int64(left)+1), segment.MaxBlockRawBytes/2))
	}
	em.newBlock()
	return nil
}

// finish closes the run at end and returns the object and its entries.
// There must be at least one record.
func (em *emitter) finish(end int64) ([]byte, []metadata.IndexEntry, error) {
	if em.b.Len() > 0 {
		if err := em.seal(end); err != nil {
			return nil, nil, err
		}
	} else if n := len(em.entries); n > 0 && end > em.start {
		// The run ends with dropped offsets after a sealed block.
		last := &em.entries[n-1]
		last.Span = end - last.Base
		if last.Span == last.Records {
			last.Span = 0
		}
	}
	if em.shared {
		return nil, em.entries, nil
	}
	obj, _, err := em.w.Finish()
	if err != nil {
		return nil, nil, err
	}
	return obj, em.entries, nil
}
