package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/varve-io/varve/internal/guard"
)

// Quotas are the node's per-principal byte rates (guard's quotas), as
// the Kafka listener charges them; the Security of Deps provides them
// when it implements this.
type Quotas interface {
	// KafkaProduceThrottle charges a produce of n bytes and returns how
	// long the connection must wait before its next request.
	KafkaProduceThrottle(id guard.Identity, n int) time.Duration
	// KafkaFetchThrottle returns how long the principal's fetch quota is
	// in debt (0: it may fetch).
	KafkaFetchThrottle(id guard.Identity) time.Duration
	// KafkaFetchCharge charges n bytes a fetch answered.
	KafkaFetchCharge(id guard.Identity, n int)
}

// maxThrottle bounds one throttle time.
const maxThrottle = 30 * time.Second

// throttle is a connection's mute (KIP-219): a response over the quota
// goes out at once with its throttle time, and the connection reads no
// further request until that time has passed, so a client that ignores
// the throttle time is held to the rate too.
type throttle struct {
	mu    sync.Mutex
	until time.Time
}

// set mutes the connection for d (the later of this and a mute already
// set) and returns d in milliseconds, for the response's ThrottleMillis.
func (t *throttle) set(d time.Duration) int32 {
	if d <= 0 {
		return 0
	}
	d = min(d, maxThrottle)
	t.mu.Lock()
	if u := time.Now().Add(d); u.After(t.until) {
		t.until = u
	}
	t.mu.Unlock()
	return int32(max(d/time.Millisecond, 1))
}

// wait waits out a mute; false when ctx ended first.
func (t *throttle) wait(ctx context.Context) bool {
	t.mu.Lock()
	d := time.Until(t.until)
	t.mu.Unlock()
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// quotas are the connection's quotas, nil without any.
func (c *conn) quotas() Quotas {
	q, _ := c.s.d.Security.(Quotas)
	return q
}
