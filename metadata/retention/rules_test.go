package retention

import (
	"testing"
	"time"

	"github.com/varve-io/varve/metadata"
)

// expired applies r as Apply does: how many entries, from the
// start of a partition's index holding bytes in all, expire.
func (r rule) expired(entries []metadata.IndexEntry, bytes int64) int {
	for i, e := range entries {
		if !r.expires(e, bytes) {
			return i
		}
		bytes -= e.Len
	}
	return len(entries)
}

func TestRetentionRules(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	// Four entries of 100 bytes, newest records at 10, 20, 30 and 40 s.
	entries := []metadata.IndexEntry{{Len: 100, MaxTS: 10_000}, {Len: 100, MaxTS: 20_000}, {Len: 100, MaxTS: 30_000}, {Len: 100, MaxTS: 40_000}}
	cases := []struct {
		name    string
		topic   metadata.Topic
		applies bool
		want    int
	}{
		{"compact policy drops nothing", metadata.Topic{CleanupPolicy: metadata.CleanupCompact, RetentionMs: 1, RetentionBytes: 0}, false, 0},
		{"no limits", metadata.Topic{RetentionMs: 0, RetentionBytes: -1}, false, 0},
		{"negative time, no size", metadata.Topic{RetentionMs: -1, RetentionBytes: -1}, false, 0},
		{"time: records older than 25 s before now", metadata.Topic{RetentionMs: now.UnixMilli() - 25_000, RetentionBytes: -1}, true, 2},
		{"time: newest exactly at the cutoff stays", metadata.Topic{RetentionMs: now.UnixMilli() - 20_000, RetentionBytes: -1}, true, 1},
		{"time: everything expired", metadata.Topic{RetentionMs: 1, RetentionBytes: -1}, true, 4},
		{"time: nothing expired", metadata.Topic{RetentionMs: now.UnixMilli(), RetentionBytes: -1}, true, 0},
		{"size: keep at least 250 bytes", metadata.Topic{RetentionMs: 0, RetentionBytes: 250}, true, 1},
		{"size: keep at least 200 bytes", metadata.Topic{RetentionMs: 0, RetentionBytes: 200}, true, 2},
		{"size: zero keeps nothing", metadata.Topic{RetentionMs: 0, RetentionBytes: 0}, true, 4},
		{"size: more than held", metadata.Topic{RetentionMs: 0, RetentionBytes: 1000}, true, 0},
		{"either rule expires an entry", metadata.Topic{RetentionMs: now.UnixMilli() - 15_000, RetentionBytes: 150}, true, 2},
		{"time expires more than size", metadata.Topic{RetentionMs: now.UnixMilli() - 35_000, RetentionBytes: 350}, true, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := newRule(tc.topic, now)
			if ok != tc.applies {
				t.Fatalf("applies = %v, want %v", ok, tc.applies)
			}
			if !ok {
				return
			}
			if got := r.expired(entries, 400); got != tc.want {
				t.Fatalf("expired = %d, want %d", got, tc.want)
			}
		})
	}
	// An entry after a kept one never expires: retention drops a prefix.
	r, _ := newRule(metadata.Topic{RetentionMs: now.UnixMilli() - 15_000, RetentionBytes: -1}, now)
	mixed := []metadata.IndexEntry{{Len: 1, MaxTS: 10_000}, {Len: 1, MaxTS: 50_000}, {Len: 1, MaxTS: 10_000}}
	if got := r.expired(mixed, 3); got != 1 {
		t.Fatalf("expired = %d, want 1 (a prefix)", got)
	}
}

// TestDue: Due says whether Apply would drop anything, from the served
// entries and the state alone: the rules of TestRetentionRules on the
// first entry above the log start, and index keys left below it.
func TestDue(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	// Offsets [0,10), [10,20), [20,30), 100 bytes each, newest records
	// at 10, 20 and 30 s; the last one a sequencer record's block.
	entries := []metadata.IndexEntry{
		{Base: 0, Records: 10, Len: 100, MaxTS: 10_000},
		{Base: 10, Records: 10, Len: 100, MaxTS: 20_000},
		{Base: 20, Records: 10, Len: 100, MaxTS: 30_000, Record: 5},
	}
	byTime := func(olderThan int64) metadata.Topic {
		return metadata.Topic{RetentionMs: now.UnixMilli() - olderThan, RetentionBytes: -1}
	}
	cases := []struct {
		name    string
		topic   metadata.Topic
		start   int64
		entries []metadata.IndexEntry
		want    bool
	}{
		{"no limits", metadata.Topic{RetentionMs: 0, RetentionBytes: -1}, 0, entries, false},
		{"compact policy", metadata.Topic{CleanupPolicy: metadata.CleanupCompact, RetentionMs: 1, RetentionBytes: 0}, 0, entries, false},
		{"no entries", byTime(0), 0, nil, false},
		{"time: the first expired", byTime(15_000), 0, entries, true},
		{"time: nothing expired", byTime(5_000), 0, entries, false},
		{"time: the first above the start decides", byTime(15_000), 10, entries[1:], false},
		{"time: the record entry above the start", byTime(35_000), 20, entries[2:], true},
		{"size: keep 250 of 300 bytes", metadata.Topic{RetentionBytes: 250}, 0, entries, false},
		{"size: keep 200 of 300 bytes", metadata.Topic{RetentionBytes: 200}, 0, entries, true},
		{"size: bytes above the start only", metadata.Topic{RetentionBytes: 150}, 10, entries[1:], false},
		{"size: keep 100 of 200 above the start", metadata.Topic{RetentionBytes: 100}, 10, entries[1:], true},
		{"size: keep 50 of 100 above the start", metadata.Topic{RetentionBytes: 50}, 20, entries[2:], false},
		{"an index key below the start", byTime(5_000), 10, entries, true},
		{"only a record entry below the start", byTime(5_000), 30, entries[2:], false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Due(tc.topic, now, metadata.PartitionState{Start: tc.start}, tc.entries); got != tc.want {
				t.Fatalf("Due = %v, want %v", got, tc.want)
			}
		})
	}
}
