package sequencer

import (
	"testing"
	"time"

	"github.com/varve-io/varve/metadata"
)

// TestPlacementDecides drives the decision with a steady rate, a burst and
// a lull: more writers at once, fewer only after the rate stayed low for
// placementShrinkAfter, nothing before placementMinSpan of samples.
func TestPlacementDecides(t *testing.T) {
	const per = 1 << 20
	p := &placement{per: per}
	t0 := time.Unix(1000, 0)
	total := int64(0)
	at := t0
	step := func(rate int64) (int, bool) {
		at = at.Add(time.Second)
		total += rate
		return p.observe(at, total)
	}
	if n, changed := p.observe(t0, 0); changed || n != 0 {
		t.Fatalf("first sample: %d, %v; want no decision", n, changed)
	}
	if n, changed := step(per / 2); changed {
		t.Fatalf("decided %d after 1 s, before placementMinSpan", n)
	}
	if n, changed := step(per / 2); !changed || n != 1 {
		t.Fatalf("at half a writer's rate after 2 s: %d, %v; want 1, changed", n, changed)
	}
	// A burst to 3.5 writers' worth: the 10 s average passes 1, then 2
	// writers' rate; each rise is asked for at once.
	seen := map[int]bool{}
	for range 10 {
		if n, changed := step(per * 7 / 2); changed {
			seen[n] = true
		}
	}
	if !seen[4] || p.writers != 4 {
		t.Fatalf("after 10 s at 3.5 writers' rate: writers %d (changes %v), want 4", p.writers, seen)
	}
	// The rate falls to 1.5 writers' worth: 2 writers, but only once it
	// stayed below 4's for placementShrinkAfter.
	var shrunk time.Duration
	start := at
	for range 60 {
		if n, changed := step(per * 3 / 2); changed {
			if n != 2 {
				t.Fatalf("shrank to %d, want 2", n)
			}
			shrunk = at.Sub(start)
			break
		}
	}
	if shrunk < placementShrinkAfter || shrunk > placementShrinkAfter+placementWindow+2*time.Second {
		t.Fatalf("shrank after %v of low rate, want after %v (and the window's %v)", shrunk, placementShrinkAfter, placementWindow)
	}
	// Idle: one writer, never none.
	for range 60 {
		step(0)
	}
	if p.writers != 1 {
		t.Fatalf("idle: writers %d, want 1", p.writers)
	}
}

// TestPlacementCountsFlushesOnly: the produce load is the ingest nodes'
// flushes; a commit whose id is not a flush's object key (a tool's, the
// bench's floor) does not count.
func TestPlacementCountsFlushesOnly(t *testing.T) {
	apps := []metadata.Append{{RawBytes: 100}, {RawBytes: 20}}
	batch := []*request{
		{id: "flush", source: "n1", appends: apps},
		{id: "floor-1", appends: []metadata.Append{{RawBytes: 1 << 30}}},
	}
	if got := committedBytes(batch); got != 120 {
		t.Fatalf("committedBytes = %d, want 120 (the flush's records only)", got)
	}
}
