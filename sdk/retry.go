package sdk

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/internal/apierr"
	"github.com/varve-io/varve/sdk/internal/backoff"
)

// Retriable reports whether err is worth retrying: its Connect code is
// Unavailable, ResourceExhausted (backpressure), DeadlineExceeded or Aborted.
// Errors of a done context are not retriable.
func Retriable(err error) bool { return backoff.Retriable(err) }

// RetryDelay returns the delay a RetryInfo detail of err asks for, if any.
func RetryDelay(err error) (time.Duration, bool) { return backoff.RetryDelay(err) }

// retryPolicy is exponential backoff with jitter (backoff.Policy).
type retryPolicy struct {
	retries  int
	base     time.Duration
	maxDelay time.Duration
}

func defaultRetry() retryPolicy {
	d := backoff.Default()
	return retryPolicy{retries: d.Retries, base: d.Base, maxDelay: d.MaxDelay}
}

// delay is the wait before retry number attempt (0-based) after err
// (backoff.Policy.Delay).
func (p retryPolicy) delay(err error, attempt int) time.Duration {
	return backoff.Policy{Retries: p.retries, Base: p.base, MaxDelay: p.maxDelay}.Delay(err, attempt)
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error { return backoff.Sleep(ctx, d) }

// producerErrorReason returns the ErrorInfo reason of an idempotence
// refusal (PRODUCER_FENCED, OUT_OF_ORDER_SEQUENCE, UNKNOWN_PRODUCER), or "".
func producerErrorReason(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeFailedPrecondition {
		return ""
	}
	return apierr.ReasonOf(err)
}
