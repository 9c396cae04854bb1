package retention

import (
	"time"

	"github.com/varve-io/varve/metadata"
)

// Retention rules, as plain numbers: no etcd here. Apply reads a
// partition and applies them in a transaction.

// rule is a topic's retention at one instant.
type rule struct {
	cutoff int64 // entries whose newest record is older (ms) expire; -1: no time limit
	bytes  int64 // the partition keeps at least this many bytes; -1: no size limit
}

// newRule returns topic t's rule at now. ok is false when
// retention drops nothing: cleanup policy compact, or neither a time nor a
// size limit.
func newRule(t metadata.Topic, now time.Time) (r rule, ok bool) {
	if t.CleanupPolicy == metadata.CleanupCompact || (t.RetentionMs <= 0 && t.RetentionBytes < 0) {
		return rule{}, false
	}
	r = rule{cutoff: -1, bytes: t.RetentionBytes}
	if t.RetentionMs > 0 {
		r.cutoff = now.UnixMilli() - t.RetentionMs
	}
	return r, true
}

// expires reports whether e, the oldest entry left of a partition holding
// bytes (e included), expires: its newest record is older than the cutoff
// (by time), or dropping it still leaves at least the retained bytes (by
// size). Kafka's rules.
func (r rule) expires(e metadata.IndexEntry, bytes int64) bool {
	byTime := r.cutoff >= 0 && e.MaxTS < r.cutoff
	bySize := r.bytes >= 0 && bytes-e.Len >= r.bytes
	return byTime || bySize
}

// Due reports whether Apply would drop anything from a partition whose
// state and served entries (index keys and the record entries no key
// overlaps, in base order) are st and entries: an index key left below the
// log start, or an oldest entry that expires under topic t's retention at
// now. A pass decides from a watched copy of the index which partitions
// to read from etcd: a stale copy lacks the newest entries (retention by
// size then waits a pass) or still holds dropped ones (then the read finds
// nothing to do).
func Due(t metadata.Topic, now time.Time, st metadata.PartitionState, entries []metadata.IndexEntry) bool {
	rule, ok := newRule(t, now)
	if !ok {
		return false
	}
	bytes := liveBytes(entries, st.Start)
	for _, e := range entries {
		if e.End() <= st.Start {
			if e.Record == 0 {
				return true
			}
			continue
		}
		return rule.expires(e, bytes)
	}
	return false
}

// liveBytes sums the stored bytes of the entries that end after the log
// start: what retention by size counts.
func liveBytes(entries []metadata.IndexEntry, start int64) int64 {
	var n int64
	for _, e := range entries {
		if e.End() > start {
			n += e.Len
		}
	}
	return n
}
