package inflight

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

var errLost = errors.New("lost")

func newSeq(t *testing.T) (*Sequencer, *atomic.Int64) {
	var inits atomic.Int64
	s := NewSequencer(t.Context(), 0, func(ctx context.Context, id int64) (int64, int32, error) {
		n := inits.Add(1)
		if id == 0 {
			return n, 0, nil
		}
		return id, int32(n), nil
	})
	return s, &inits
}

// number numbers b on partition 0, waiting for an identity if needed.
func number(t *testing.T, w *Window[int], b *Batch[int], count int32) {
	t.Helper()
	for {
		wait, err := w.Number(b, "t", []int32{0}, []int32{count})
		if err != nil {
			t.Fatal(err)
		}
		if wait == nil {
			return
		}
		select {
		case <-wait:
		case <-time.After(10 * time.Second):
			t.Fatal("no identity")
		}
	}
}

// TestWindowResendsInOrder: batch 1 of three pipelined batches is lost,
// 2 and 3 are refused as out of order; the window resends 1, then 2, then
// 3, one at a time, with their original sequences, and pops them in order.
func TestWindowResendsInOrder(t *testing.T) {
	seq, _ := newSeq(t)
	w := NewWindow[int](5, seq)
	now := time.Now()
	dl := now.Add(time.Minute)
	var bs []*Batch[int]
	for i := range 3 {
		if !w.Room() {
			t.Fatal("no room")
		}
		bs = append(bs, w.Push(i, dl))
		b, _ := w.Next(now)
		if b != bs[i] {
			t.Fatalf("next is %v, want batch %d", b, i)
		}
		number(t, w, b, 10)
		w.Start(b)
	}
	if bs[2].Nums.First[0] != 20 {
		t.Fatalf("batch 2 first sequence %d", bs[2].Nums.First[0])
	}
	w.Result(bs[0], errLost, Retry, 0, now)
	w.Result(bs[2], errLost, OutOfOrder, 0, now)
	if b, _ := w.Next(now); b != nil {
		t.Fatalf("sent %d while batch 1 is in flight", b.Data)
	}
	w.Result(bs[1], errLost, OutOfOrder, 0, now)
	if w.Room() {
		t.Fatal("a new batch may enter while resending")
	}
	for i := range 3 {
		b, _ := w.Next(now)
		if b != bs[i] {
			t.Fatalf("resent %v, want batch %d", b, i)
		}
		w.Start(b)
		if nb, _ := w.Next(now); nb != nil {
			t.Fatalf("two batches in flight while resending")
		}
		w.Result(b, nil, Final, 0, now)
		if got := w.Pop(); len(got) != 1 || got[0] != b || got[0].Err() != nil {
			t.Fatalf("pop after batch %d: %v", i, got)
		}
	}
	if !w.Room() || w.Len() != 0 {
		t.Fatal("window not back to pipelining")
	}
	if id, epoch := seq.Identity(); id != 1 || epoch != 0 {
		t.Fatalf("identity %d/%d changed though nothing failed", id, epoch)
	}
}

// TestWindowOutOfOrderFinal: out of order with nothing earlier unresolved
// fails the batch, and the producer's next batch starts a new epoch after
// every numbered batch is released.
func TestWindowOutOfOrderFinal(t *testing.T) {
	seq, _ := newSeq(t)
	w := NewWindow[int](5, seq)
	now := time.Now()
	a := w.Push(0, now.Add(time.Minute))
	number(t, w, a, 1)
	w.Start(a)
	b := w.Push(1, now.Add(time.Minute))
	number(t, w, b, 1)
	w.Start(b)
	w.Result(a, errLost, OutOfOrder, 0, now)
	if got := w.Pop(); len(got) != 1 || !errors.Is(got[0].Err(), errLost) {
		t.Fatalf("batch a: %v", got)
	}
	c := w.Push(2, now.Add(time.Minute))
	if wait, err := w.Number(c, "t", []int32{0}, []int32{1}); wait == nil || err != nil {
		t.Fatalf("numbered under the old epoch while batch b is unresolved (wait %v, err %v)", wait, err)
	}
	w.Result(b, nil, Final, 0, now)
	number(t, w, c, 1)
	if _, epoch := seq.Identity(); epoch == 0 || c.Nums.Epoch != epoch || c.Nums.First[0] != 0 {
		t.Fatalf("batch c numbered %+v, want a new epoch from sequence 0", c.Nums)
	}
}

// TestWindowDeliveryTimeout: a batch past its deadline fails with
// ErrDeliveryTimeout wrapping the last error, and a retry that cannot
// happen before the deadline fails at once.
func TestWindowDeliveryTimeout(t *testing.T) {
	w := NewWindow[int](5, nil)
	now := time.Now()
	a := w.Push(0, now.Add(time.Second))
	w.Start(a)
	if d := AttemptDeadline(a, now, time.Hour); !d.Equal(a.Deadline) {
		t.Fatalf("attempt deadline %v after the batch's %v", d, a.Deadline)
	}
	w.Result(a, errLost, Retry, 2*time.Second, now)
	if got := w.Pop(); len(got) != 1 || !errors.Is(got[0].Err(), ErrDeliveryTimeout) || !errors.Is(got[0].Err(), errLost) {
		t.Fatalf("got %v", got)
	}
	b := w.Push(1, now.Add(time.Second))
	w.Start(b)
	w.Result(b, errLost, Retry, time.Millisecond, now)
	if n, wake := w.Next(now); n != nil || !wake.Equal(now.Add(time.Millisecond)) {
		t.Fatalf("next %v wake %v", n, wake)
	}
	if n, _ := w.Next(now.Add(2 * time.Second)); n != nil {
		t.Fatalf("sent %v past its deadline", n)
	}
	if got := w.Pop(); len(got) != 1 || !errors.Is(got[0].Err(), ErrDeliveryTimeout) {
		t.Fatalf("got %v", got)
	}
}

// TestWindowUnknownProducerRenumbers: an expired id renumbers the batch
// and the later ones under a new id, in order.
func TestWindowUnknownProducerRenumbers(t *testing.T) {
	seq, _ := newSeq(t)
	w := NewWindow[int](5, seq)
	now := time.Now()
	a := w.Push(0, now.Add(time.Minute))
	number(t, w, a, 3)
	w.Start(a)
	b := w.Push(1, now.Add(time.Minute))
	number(t, w, b, 3)
	w.Start(b)
	w.Result(b, errLost, Retry, 0, now)
	w.Result(a, errLost, UnknownProducer, 0, now)
	if a.Numbered || b.Numbered {
		t.Fatal("batches of the expired id keep their numbers")
	}
	na, _ := w.Next(now)
	if na != a {
		t.Fatal("batch a is not resent first")
	}
	number(t, w, a, 3)
	number(t, w, b, 3)
	if a.Nums.ID == 1 || a.Nums.First[0] != 0 || b.Nums.First[0] != 3 || b.Nums.ID != a.Nums.ID {
		t.Fatalf("renumbered %+v and %+v", a.Nums, b.Nums)
	}
}

// TestWindowOvertakenResendsAtOnce: a batch refused as out of order while
// the earlier one is in flight and fine is resent at once, still before
// the later batches, without stopping the pipeline; after maxRaced such
// refusals the window resends in order.
func TestWindowOvertakenResendsAtOnce(t *testing.T) {
	seq, _ := newSeq(t)
	w := NewWindow[int](5, seq)
	now := time.Now()
	var bs []*Batch[int]
	for i := range 2 {
		bs = append(bs, w.Push(i, now.Add(time.Minute)))
		b, _ := w.Next(now)
		number(t, w, b, 1)
		w.Start(b)
	}
	w.Result(bs[1], errLost, OutOfOrder, 0, now)
	if !w.Room() {
		t.Fatal("pipeline stopped after an overtaking batch")
	}
	c := w.Push(2, now.Add(time.Minute))
	if b, _ := w.Next(now); b != bs[1] {
		t.Fatalf("next is %v, want the refused batch 1 before the new one", b)
	}
	w.Start(bs[1])
	if b, _ := w.Next(now); b != c {
		t.Fatalf("next is %v, want the new batch", b)
	}
	for range maxRaced - 1 {
		w.Result(bs[1], errLost, OutOfOrder, 0, now)
		if b, _ := w.Next(now); b != bs[1] {
			t.Fatal("refused batch not resent at once")
		}
		w.Start(bs[1])
	}
	w.Result(bs[1], errLost, OutOfOrder, 0, now)
	if w.Room() {
		t.Fatalf("still pipelining after %d refusals", maxRaced+1)
	}
	if b, _ := w.Next(now); b != nil {
		t.Fatalf("sent %v while batch 0 is in flight in order mode", b)
	}
	w.Result(bs[0], nil, Final, 0, now)
	if b, _ := w.Next(now); b != bs[1] {
		t.Fatalf("next is %v, want batch 1", b)
	}
}
