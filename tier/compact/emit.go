package compact

import (
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// emitter writes a run's kept records, in offset order, into blocks of
// about blockBytes of one object, and makes the index entries that tile
// the run: each entry starts where the previous one ended, so offsets
// dropped between two blocks belong to the later entry (its first record
// carries the gap) and offsets dropped after the last record extend the
// last entry.
type emitter struct {
	topic      string
	p          int32
	level      int
	blockBytes int
	raw        int64

	w       *segment.Writer
	b       *segment.BlockBuilder
	entries []metadata.IndexEntry
	start   int64 // base of the open entry
	last    int64 // offset of the last record added (start-1 when none)
	records int64
}

// newEmitter starts a run at offset start; raw bounds the records' size (a
// hint for buffers).
func newEmitter(topic string, p int32, level, blockBytes int, start, raw int64, lvl segment.Level) *emitter {
	em := &emitter{topic: topic, p: p, level: level, blockBytes: blockBytes, raw: raw, w: segment.NewWriter(lvl), start: start, last: start - 1}
	em.newBlock()
	return em
}

// newBlock starts the next block, with room for a full one.
func (em *emitter) newBlock() {
	em.b = segment.NewBlockBuilder(em.topic, em.p)
	em.b.Grow(int(min(int64(em.blockBytes+em.blockBytes/8), em.raw)))
}

// add appends a record at offset off (greater than every offset so far).
func (em *emitter) add(r segment.Record, off int64) error {
	r.Gap = off - em.last - 1
	em.b.Append(r)
	em.last = off
	em.records++
	if em.b.RawBytes() >= em.blockBytes {
		return em.seal(em.last + 1)
	}
	return nil
}

// seal closes the open block as an entry covering [start, end).
func (em *emitter) seal(end int64) error {
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
	obj, _, err := em.w.Finish()
	if err != nil {
		return nil, nil, err
	}
	return obj, em.entries, nil
}
