package backoff

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// Retriable reports whether err is worth retrying: its Connect code is
// Unavailable, ResourceExhausted (backpressure), DeadlineExceeded or Aborted.
// Errors of a done context are not retriable.
func Retriable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted:
		return true
	case connect.CodeResourceExhausted:
		// Backpressure carries RetryInfo; a request over the server's size
		// limit is also ResourceExhausted but will never succeed.
		_, ok := RetryDelay(err)
		return ok
	}
	return false
}

// RetryDelay returns the delay a RetryInfo detail of err asks for, if any.
func RetryDelay(err error) (time.Duration, bool) {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return 0, false
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if ri, ok := v.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			if dd := ri.GetRetryDelay().AsDuration(); dd >= 0 {
				return dd, true
			}
		}
	}
	return 0, false
}

// Policy is exponential backoff with jitter.
type Policy struct {
	Retries  int
	Base     time.Duration
	MaxDelay time.Duration
}

// Default is the SDK's policy where the user sets none: 10 retries from
// 50 ms up to 5 s.
func Default() Policy {
	return Policy{Retries: 10, Base: 50 * time.Millisecond, MaxDelay: 5 * time.Second}
}

// Delay is the wait before retry number attempt (0-based) after err: the
// server's RetryInfo delay plus up to 20% jitter when it gave one, otherwise
// Base·2^attempt capped at MaxDelay, jittered into [d/2, d].
func (p Policy) Delay(err error, attempt int) time.Duration {
	if d, ok := RetryDelay(err); ok {
		return d + jitter(d/5)
	}
	d := p.Base
	for i := 0; i < attempt && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	return d/2 + jitter(d/2)
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// Sleep waits d or until ctx is done.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
