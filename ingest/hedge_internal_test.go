package ingest

import (
	"testing"
	"time"
)

// The hedge delay: none before the warm-up or when off; then twice the p90
// of the last hedgeWindow PUTs, never below the minimum.
func TestPutHedgeDelay(t *testing.T) {
	h := putHedge{min: 10 * time.Millisecond}
	for range hedgeWarmup - 1 {
		h.observe(time.Millisecond)
	}
	if d := h.delay(); d != 0 {
		t.Fatalf("delay %v before the warm-up", d)
	}
	h.observe(time.Millisecond)
	if d := h.delay(); d != 10*time.Millisecond {
		t.Fatalf("delay %v, want the minimum (2 × p90 is 2ms)", d)
	}
	// 100 PUTs of 20 ms and 28 of 1 s fill the window: p90 is 1 s.
	for range 100 {
		h.observe(20 * time.Millisecond)
	}
	for range 28 {
		h.observe(time.Second)
	}
	if d := h.delay(); d != 2*time.Second {
		t.Fatalf("delay %v, want 2s", d)
	}
	// 128 more of 30 ms push every older one out of the window.
	for range hedgeWindow {
		h.observe(30 * time.Millisecond)
	}
	if d := h.delay(); d != 60*time.Millisecond {
		t.Fatalf("delay %v, want 60ms", d)
	}
	off := putHedge{min: -1}
	for range hedgeWindow {
		off.observe(time.Millisecond)
	}
	if d := off.delay(); d != 0 {
		t.Fatalf("delay %v with hedging off", d)
	}
}
