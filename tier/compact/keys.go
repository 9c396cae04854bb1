package compact

import (
	"context"
	"fmt"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/tier/segment"
)

// maxDirtyRawFactor bounds one pass of a compacted topic: the records read
// to build the key map are at most this many times TargetBytes
// (uncompressed), so the map's memory is bounded; a longer backlog takes
// several passes.
const maxDirtyRawFactor = 4

// keyPlan is one pass over a compacted topic's partition.
type keyPlan struct {
	// eligible is the prefix of the index the pass rewrites: every entry
	// older than min_compaction_lag_ms, up to the dirty bound.
	eligible []metadata.IndexEntry
	// dirty are its level-0 entries (not compacted yet): the key map is
	// built from them.
	dirty []metadata.IndexEntry
}

// planKeys picks the range of a compacted topic's pass, like Kafka's log
// cleaner: the "clean" entries (level 1, compacted before) and the "dirty"
// ones after them, never the head younger than the topic's minimum
// compaction lag. A pass is worth it with MinEntries dirty entries or half
// the target of dirty bytes.
func (c *Compactor) planKeys(t metadata.Topic, entries []metadata.IndexEntry) (keyPlan, bool) {
	now := c.cfg.Now().UnixMilli()
	n := 0
	for n < len(entries) && (t.MinCompactionLagMs <= 0 || entries[n].MaxTS <= now-t.MinCompactionLagMs) {
		n++
	}
	var plan keyPlan
	var dirtyBytes, dirtyRaw int64
	cut := n
	recs := map[uint64]bool{}
	cold := false
	for i := range n {
		e := entries[i]
		if e.Record != 0 && !recs[e.Record] {
			recs[e.Record] = true
			cold = cold || c.coldRecord(e)
		}
		if e.Level != 0 {
			continue
		}
		if len(plan.dirty) > 0 && dirtyRaw+e.RawBytes > maxDirtyRawFactor*c.cfg.TargetBytes {
			cut = i
			break
		}
		plan.dirty = append(plan.dirty, e)
		dirtyBytes += e.Len
		dirtyRaw += e.RawBytes
	}
	plan.eligible = entries[:cut]
	ok := len(plan.dirty) > 0 && (len(plan.dirty) >= c.cfg.MinEntries || dirtyBytes >= c.cfg.TargetBytes/2 || cold)
	return plan, ok
}

// compactKeys makes one pass over a compacted topic's partition: it maps
// every key of the dirty entries to its newest offset, then rewrites the
// eligible prefix keeping, in order and at their offsets, records without
// a key, the newest record of each key, and tombstones younger than
// delete_retention_ms. A run whose records are all dropped joins the next
// run; at the end of the pass it extends the previous output entry, or,
// when the pass kept nothing at all, leaves the index and moves the log
// start past it.
func (c *Compactor) compactKeys(ctx context.Context, t metadata.Topic, p int32, entries []metadata.IndexEntry) (Stats, error) {
	var st Stats
	plan, ok := c.planKeys(t, entries)
	if !ok {
		return st, nil
	}
	latest := map[string]int64{}
	err := c.read(ctx, plan.dirty, true, func(e metadata.IndexEntry, b decoded) error {
		for i := range b.recs {
			if b.recs[i].Key != nil {
				latest[string(b.recs[i].Key)] = b.offs[i]
			}
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("compact %s/%d: key map: %w", t.Name, p, err)
	}
	deleteRetention := t.DeleteRetentionMs
	if deleteRetention <= 0 {
		deleteRetention = metadata.DefaultDeleteRetentionMs
	}
	expired := c.cfg.Now().UnixMilli() - deleteRetention
	keep := func(r *segment.Record, off int64) bool {
		if r.Key == nil {
			return true // nothing to deduplicate by
		}
		if l, ok := latest[string(r.Key)]; ok && l != off {
			return false // a newer record of the key follows
		}
		return r.Value != nil || r.Timestamp >= expired
	}

	var pending []metadata.IndexEntry
	var lastOut *metadata.IndexEntry
	for run := plan.eligible; len(run) > 0; {
		n, size := 0, int64(0)
		for n < len(run) && (n == 0 || size+run[n].Len <= c.cfg.TargetBytes) {
			size += run[n].Len
			n++
		}
		pending = append(pending, run[:n]...)
		run = run[n:]
		out, js, err := c.rewrite(ctx, t.Name, p, pending, 1, keep)
		if err != nil {
			st.add(js)
			return st, err
		}
		if len(out.entries) == 0 {
			continue // nothing kept: the range joins the next run
		}
		js, err = c.store1(ctx, t.Name, p, job{old: pending, level: 1}, out, js)
		st.add(js)
		if err != nil {
			return st, err
		}
		e := out.entries[len(out.entries)-1]
		lastOut, pending = &e, nil
	}
	if len(pending) == 0 {
		return st, nil
	}
	end := pending[len(pending)-1].End()
	swap := compaction.Swap{Topic: t.Name, Partition: p, Old: pending, DropPrefix: true}
	if lastOut != nil {
		// Extend the pass's last output entry over the trailing range.
		fresh, _, err := c.meta.IndexEntries(ctx, t.Name, p)
		if err != nil {
			return st, err
		}
		var prev *metadata.IndexEntry
		for i := range fresh {
			if fresh[i].Base == lastOut.Base {
				prev = &fresh[i]
			}
		}
		if prev == nil || prev.Object != lastOut.Object || prev.End() != pending[0].Base {
			return st, fmt.Errorf("compact %s/%d: the entry at %d changed: %w", t.Name, p, lastOut.Base, compaction.ErrSwapConflict)
		}
		ext := *prev
		ext.Span, ext.ModRev = end-ext.Base, 0
		swap = compaction.Swap{Topic: t.Name, Partition: p, Old: append([]metadata.IndexEntry{*prev}, pending...), New: []metadata.IndexEntry{ext}}
	}
	return c.swap(ctx, swap, st)
}
