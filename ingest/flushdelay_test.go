package ingest

import (
	"testing"
	"time"
)

// TestFlushDelayAlignsToTicks: a file opened at any moment is sealed at
// the next multiple of linger on the wall clock, never later than linger
// after it opened, so two nodes with the same linger seal at the same
// instants whenever their first records arrived.
func TestFlushDelayAlignsToTicks(t *testing.T) {
	for _, linger := range []time.Duration{time.Millisecond, 7 * time.Millisecond, 100 * time.Millisecond, time.Second} {
		base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		for _, off := range []time.Duration{0, 1, linger / 3, linger - 1, linger, linger + linger/2, 5*linger + 3} {
			now := base.Add(off)
			d := flushDelay(now, linger)
			if d <= 0 || d > linger {
				t.Fatalf("linger %v, opened at +%v: delay %v, want in (0, %v]", linger, off, d, linger)
			}
			if at := now.Add(d).UnixNano(); at%int64(linger) != 0 {
				t.Fatalf("linger %v, opened at +%v: sealed at %d ns, not a multiple of linger", linger, off, at)
			}
		}
	}
}
