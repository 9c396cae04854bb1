// Package flushtick is the hint an ingest node's Produce answer carries of
// when it seals its next file, and the producer's use of it.
//
// A node seals its open file at every multiple of its linger on the wall
// clock, and a Produce call is answered only after the file holding its
// records is stored and committed. Every record that reaches the node
// before a seal is therefore acknowledged at the same moment, whenever it
// was sent: a producer that sends one batch just before the seal gets the
// same acknowledgement time as one that sends a batch every few
// milliseconds, with a fraction of the calls. Without the hint a producer
// with a short linger fills its window of in-flight batches early in the
// tick, and the records after that wait in the producer for the next one.
//
// The hint is relative ("the next seal is in 37 ms, then every 100 ms"),
// so the producer's clock need not agree with the node's.
package flushtick

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header is the response header of ProduceService.Produce carrying the
// hint: "in=<µs>; every=<µs>".
const Header = "Varve-Next-Flush"

// Format is the header's value for a seal in next, then every every.
func Format(next, every time.Duration) string {
	return fmt.Sprintf("in=%d; every=%d", next.Microseconds(), every.Microseconds())
}

// Parse reads Format's value. ok is false for anything else, a period of
// zero or less, or a next seal outside [0, every].
func Parse(v string) (next, every time.Duration, ok bool) {
	var in, ev int64
	var seen int
	for _, part := range strings.Split(v, ";") {
		k, val, found := strings.Cut(strings.TrimSpace(part), "=")
		if !found {
			return 0, 0, false
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		switch k {
		case "in":
			in, seen = n, seen|1
		case "every":
			ev, seen = n, seen|2
		default:
			return 0, 0, false
		}
	}
	if seen != 3 || ev <= 0 || in < 0 || in > ev {
		return 0, 0, false
	}
	return time.Duration(in) * time.Microsecond, time.Duration(ev) * time.Microsecond, true
}

// Tick is a node's seal schedule on the local clock: a seal at At and
// every Every before and after it, as heard at Heard. The zero Tick is no
// schedule.
type Tick struct {
	At    time.Time
	Every time.Duration
	Heard time.Time
}

// MaxAge is how long a schedule is used after it was heard: the two clocks
// drift apart, and the node's may be stepped. A producer's first batch
// after that is sent at once, and its answer brings a fresh schedule.
const MaxAge = 10 * time.Second

// Fresh reports whether k was heard within MaxAge before t.
func (k Tick) Fresh(t time.Time) bool {
	return !k.At.IsZero() && t.Sub(k.Heard) <= MaxAge
}

// FromHeader is the schedule of a hint received at now; the zero Tick
// when v is not a hint.
func FromHeader(v string, now time.Time) Tick {
	next, every, ok := Parse(v)
	if !ok {
		return Tick{}
	}
	return Tick{At: now.Add(next), Every: every, Heard: now}
}

// minMargin and maxMargin bound how long before a seal a batch is sent:
// the call's way to the node and the node's work before the records are
// in the open file.
const (
	minMargin = 5 * time.Millisecond
	maxMargin = 50 * time.Millisecond
)

// Margin is how long before a seal of k a batch is sent: a tenth of the
// period, within [5 ms, 50 ms].
func (k Tick) Margin() time.Duration {
	return min(max(k.Every/10, minMargin), maxMargin)
}

// SendAt is when a batch whose oldest record arrived at t is sent: the
// first instant at or after t that is Margin before a seal. It is t itself
// for the zero Tick and for ticks too short to hold records for (a period
// of at most twice the margin).
func (k Tick) SendAt(t time.Time) time.Time {
	m := k.Margin()
	if k.Every <= 2*m || k.At.IsZero() {
		return t
	}
	// Send points are At - m + i*Every for every integer i.
	first := k.At.Add(-m)
	d := t.Sub(first)
	i := d / k.Every
	if d%k.Every > 0 {
		i++ // round up (Go's division truncates toward zero)
	}
	return first.Add(i * k.Every)
}
