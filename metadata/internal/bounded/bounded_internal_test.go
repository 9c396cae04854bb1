package bounded

import (
	"context"
	"testing"
	"time"
)

// deadlineOf returns how long a call bounded by h now may wait. The call
// is abandoned by its caller, so it records nothing.
func deadlineOf(t *testing.T, h *Health) time.Duration {
	t.Helper()
	parent, cancel := context.WithCancel(context.Background())
	ctx, done := h.bound(parent)
	defer func() { cancel(); done(context.Canceled) }()
	d, ok := ctx.Deadline()
	if !ok {
		t.Fatal("a bounded call has no deadline")
	}
	return time.Until(d)
}

// TestSuspectShortensTheWait: once a peer reports etcd unanswering (a
// sequencer whose write timed out), this node's next calls wait downWait,
// not a whole request timeout, even if the peer's failure began a moment
// ago; an answer clears the suspicion.
func TestSuspectShortensTheWait(t *testing.T) {
	h := &Health{timeout: 5 * time.Second}
	h.record(time.Now(), nil)
	if w := deadlineOf(t, h); w <= downWait || w > h.timeout {
		t.Fatalf("healthy: call waits %v, want the request timeout %v", w, h.timeout)
	}

	h.Suspect(time.Now())
	if d := h.Down(); d < h.timeout {
		t.Fatalf("after Suspect(now): Down() = %v, want ≥ the request timeout %v", d, h.timeout)
	}
	if w := deadlineOf(t, h); w > downWait {
		t.Fatalf("after Suspect: call waits %v, want ≤ %v", w, downWait)
	}

	// An earlier failure of its own is kept: Suspect does not move it.
	from := h.downFrom.Load()
	h.Suspect(time.Now().Add(-time.Hour))
	if h.downFrom.Load() != from {
		t.Fatal("Suspect replaced an outage already noted")
	}

	// etcd answers: the full timeout again.
	h.record(time.Now(), nil)
	if h.Down() != 0 {
		t.Fatalf("after an answer: Down() = %v, want 0", h.Down())
	}
	if w := deadlineOf(t, h); w <= downWait {
		t.Fatalf("after an answer: call waits %v, want the request timeout", w)
	}
}
