package inflight

import (
	"errors"
	"fmt"
	"time"
)

// ErrDeliveryTimeout is the error of records not acknowledged within the
// producer's delivery timeout.
var ErrDeliveryTimeout = errors.New("delivery timeout")

// Class is how the producer classifies a failed attempt.
type Class int

const (
	// Final: not retried (a bad request, a fenced producer, ...).
	Final Class = iota
	// Retry: retriable, with the same sequence numbers, after a delay.
	Retry
	// OutOfOrder: refused as out of order. Retried (after the earlier
	// batches) while an earlier batch of the window is unresolved, since
	// that batch may still fill the gap; final otherwise.
	OutOfOrder
	// UnknownProducer: the producer id expired. The batch, and the later
	// ones numbered under the same id, are renumbered under a new id.
	UnknownProducer
)

// maxRaced is how often a batch is resent at once after overtaking its
// predecessor before the window falls back to resending in order.
const maxRaced = 3

// Batch is one request's worth of records in a Window.
type Batch[T any] struct {
	Data     T
	Deadline time.Time
	// Nums are the batch's sequences, valid while Numbered.
	Nums     Numbers
	Numbered bool

	attempts  int
	inFlight  bool
	failed    bool // an attempt failed: resent only in order
	raced     int  // refusals as out of order while every earlier batch was fine
	done      bool
	notBefore time.Time
	err       error // the last attempt's error; once done, the batch's
}

// Attempts returns how many attempts were started.
func (b *Batch[T]) Attempts() int { return b.attempts }

// Err returns the error of a resolved batch (nil when acknowledged).
func (b *Batch[T]) Err() error { return b.err }

// Window is one topic's batches from the first sent until their callbacks
// may run, in the order they were created (so in sequence order for every
// partition). It decides which batch to send when:
//
//   - normally up to max batches are in flight, each sent when created; a
//     batch refused as out of order while every earlier one is in flight
//     or acknowledged (it overtook one) is resent at once, before later
//     new batches;
//   - once any attempt fails, no new batch enters and the window resends
//     its unresolved batches one at a time, in order, each after the
//     earlier ones are resolved, until it is empty. A batch refused as out
//     of order while an earlier one is unresolved is resent after it, as
//     Kafka's idempotent producer does;
//   - a batch not acknowledged by its deadline fails with
//     ErrDeliveryTimeout; no attempt outlives it (see AttemptDeadline).
//
// Batches leave (Pop) in order, so callbacks run in produce order. A
// Window is used by one goroutine.
type Window[T any] struct {
	max      int
	seq      *Sequencer // nil without idempotence
	bs       []*Batch[T]
	inFlight int
	ordered  bool
}

// NewWindow returns a window of at most max batches numbered by seq (nil
// without idempotence).
func NewWindow[T any](size int, seq *Sequencer) *Window[T] {
	return &Window[T]{max: max(size, 1), seq: seq}
}

// Len returns the number of batches in the window.
func (w *Window[T]) Len() int { return len(w.bs) }

// InFlight returns the number of attempts under way.
func (w *Window[T]) InFlight() int { return w.inFlight }

// Room reports whether a new batch may enter.
func (w *Window[T]) Room() bool { return !w.ordered && len(w.bs) < w.max }

// Push adds a new batch that must be resolved by deadline.
func (w *Window[T]) Push(data T, deadline time.Time) *Batch[T] {
	b := &Batch[T]{Data: data, Deadline: deadline}
	w.bs = append(w.bs, b)
	return b
}

// Next returns the batch to send now, if any, and otherwise when the
// window next needs attention (a retry delay or a deadline; zero if
// none). It first fails the batches past their deadline.
func (w *Window[T]) Next(now time.Time) (next *Batch[T], wake time.Time) {
	soon := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	for _, b := range w.bs {
		if b.done || b.inFlight {
			continue
		}
		if !now.Before(b.Deadline) {
			w.resolve(b, w.timeout(b), Failed)
			continue
		}
		soon(b.Deadline)
	}
	for _, b := range w.bs {
		if b.done {
			continue
		}
		if w.ordered {
			if w.inFlight > 0 {
				return nil, wake
			}
			if now.Before(b.notBefore) {
				soon(b.notBefore)
				return nil, wake
			}
			return b, wake
		}
		if b.inFlight {
			continue
		}
		if b.attempts > 0 && now.Before(b.notBefore) {
			soon(b.notBefore)
			return nil, wake // later batches go after it
		}
		return b, wake
	}
	return nil, wake
}

// Number numbers b (if it is not) for the given partitions and record
// counts. wait non-nil: call again when it is closed. err: the batch
// failed (it is resolved).
func (w *Window[T]) Number(b *Batch[T], topic string, parts, counts []int32) (wait <-chan struct{}, err error) {
	if w.seq == nil || b.Numbered {
		return nil, nil
	}
	n, wait, err := w.seq.Number(topic, parts, counts)
	if err != nil {
		w.resolve(b, err, Failed)
		return nil, err
	}
	if wait != nil {
		if ierr := w.seq.LastInitError(); ierr != nil {
			b.err = fmt.Errorf("waiting for a producer id: %w", ierr)
		}
		return wait, nil
	}
	b.Nums, b.Numbered = n, true
	return nil, nil
}

// Start marks b's attempt as under way.
func (w *Window[T]) Start(b *Batch[T]) {
	b.attempts++
	b.inFlight = true
	w.inFlight++
}

// AttemptDeadline is when an attempt of b started now must end: after at
// most timeout (none if not positive), and by b's deadline.
func AttemptDeadline[T any](b *Batch[T], now time.Time, timeout time.Duration) time.Time {
	if timeout > 0 && now.Add(timeout).Before(b.Deadline) {
		return now.Add(timeout)
	}
	return b.Deadline
}

// Result records the outcome of b's attempt (or of its preparation, when
// it was not started): err nil is an acknowledgment; otherwise class says
// how to go on and delay is the wait before a Retry.
func (w *Window[T]) Result(b *Batch[T], err error, class Class, delay time.Duration, now time.Time) {
	if b.inFlight {
		b.inFlight = false
		w.inFlight--
	}
	if b.done {
		return
	}
	if err == nil {
		w.resolve(b, nil, Stored)
		return
	}
	b.err = err
	switch {
	case class == Final:
		w.resolve(b, err, Failed)
		return
	case class == OutOfOrder && !w.earlierUnresolved(b):
		w.resolve(b, err, Failed)
		return
	case class == OutOfOrder && !w.ordered && b.raced < maxRaced:
		// Every earlier batch is fine and in flight or acknowledged: b
		// most likely overtook its predecessor on the way to the node
		// (which decides requests concurrently). Resend it at once,
		// still after the earlier batches and before the later ones.
		b.raced++
		b.notBefore = now
		return
	case class == Retry && !now.Add(delay).Before(b.Deadline), !now.Before(b.Deadline):
		w.resolve(b, w.timeout(b), Failed)
		return
	}
	b.failed, w.ordered = true, true
	b.notBefore = now
	if class == Retry {
		b.notBefore = now.Add(delay)
	}
	if class == UnknownProducer || w.earlierUnnumbered(b) {
		// The id expired: nothing of it can commit any more, so b and
		// the later batches of that id are renumbered, in order.
		w.unnumberFrom(b)
	}
}

// Pop removes and returns the resolved batches at the head of the window.
func (w *Window[T]) Pop() []*Batch[T] {
	n := 0
	for n < len(w.bs) && w.bs[n].done {
		n++
	}
	out := w.bs[:n:n]
	w.bs = w.bs[n:]
	if len(w.bs) == 0 {
		w.bs, w.ordered = nil, false
	}
	return out
}

// Abort fails every unresolved batch not in flight with err.
func (w *Window[T]) Abort(err error) {
	for _, b := range w.bs {
		if !b.done && !b.inFlight {
			w.resolve(b, err, Failed)
		}
	}
}

func (w *Window[T]) resolve(b *Batch[T], err error, o Outcome) {
	b.done, b.err = true, err
	if b.Numbered {
		w.seq.Release(b.Nums, o)
	}
}

func (w *Window[T]) timeout(b *Batch[T]) error {
	switch {
	case b.err != nil && b.attempts > 0:
		return fmt.Errorf("%w (%d attempts), last: %w", ErrDeliveryTimeout, b.attempts, b.err)
	case b.err != nil:
		return fmt.Errorf("%w (not sent): %w", ErrDeliveryTimeout, b.err)
	}
	return fmt.Errorf("%w (not sent: earlier batches unresolved)", ErrDeliveryTimeout)
}

func (w *Window[T]) earlierUnresolved(b *Batch[T]) bool {
	for _, e := range w.bs {
		if e == b {
			return false
		}
		if !e.done {
			return true
		}
	}
	return false
}

func (w *Window[T]) earlierUnnumbered(b *Batch[T]) bool {
	if w.seq == nil {
		return false
	}
	for _, e := range w.bs {
		if e == b {
			return false
		}
		if !e.done && !e.Numbered {
			return true
		}
	}
	return false
}

// unnumberFrom drops the numbers of b and of every later unresolved batch
// not in flight numbered under the same identity.
func (w *Window[T]) unnumberFrom(b *Batch[T]) {
	if w.seq == nil || !b.Numbered {
		return
	}
	gen, on := b.Nums.Gen, false
	for _, e := range w.bs {
		on = on || e == b
		if on && !e.done && !e.inFlight && e.Numbered && e.Nums.Gen == gen {
			e.Numbered = false
			w.seq.Release(e.Nums, Expired)
		}
	}
}
