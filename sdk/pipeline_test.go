package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// failOneProduce is a client interceptor that loses the failAt-th Produce
// request before it reaches the node, once two later requests have been
// answered (so they were pipelined behind it), and counts the
// OUT_OF_ORDER_SEQUENCE refusals and the Produce calls at once.
type failOneProduce struct {
	failAt, injected  atomic.Int64
	calls, ooo        atomic.Int64
	active, maxActive atomic.Int64
	failing           atomic.Bool
	later             chan struct{}
}

func (f *failOneProduce) intercept(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().Procedure != varvev1connect.ProduceServiceProduceProcedure {
			return next(ctx, req)
		}
		a := f.active.Add(1)
		defer f.active.Add(-1)
		for m := f.maxActive.Load(); a > m && !f.maxActive.CompareAndSwap(m, a); m = f.maxActive.Load() {
		}
		n := f.calls.Add(1)
		if n == f.failAt.Load() && f.injected.Load() == 0 {
			f.failing.Store(true)
			answered := 0
			for answered < 2 {
				select {
				case <-f.later:
					answered++
					continue
				case <-time.After(2 * time.Second):
				}
				break
			}
			f.failing.Store(false)
			if answered == 2 {
				f.injected.Add(1)
				return nil, connect.NewError(connect.CodeUnavailable, errors.New("injected: request lost before the node"))
			}
			// Sent while the producer was resending one at a time:
			// nothing behind it. Try a later request.
			f.failAt.Store(f.calls.Load() + 3)
		}
		res, err := next(ctx, req)
		if sdk.ErrorReason(err) == sdk.ReasonOutOfOrderSequence {
			f.ooo.Add(1)
		}
		if f.failing.Load() && n > f.failAt.Load() {
			select {
			case f.later <- struct{}{}:
			default:
			}
		}
		return res, err
	}
}

// TestPipelinedProducerKeepsOrderAcrossRetries: with MaxInFlight 5, one
// Produce request is lost while later batches of the same partitions are
// in flight; those are refused as out of order, resent after the lost one
// in sequence order, and no record fails, is stored twice or out of order.
func TestPipelinedProducerKeepsOrderAcrossRetries(t *testing.T) {
	ctx := testCtx(t)
	f := &failOneProduce{later: make(chan struct{}, 2)}
	f.failAt.Store(10)
	c := newClient(t, sdk.WithClientOptions(connect.WithInterceptors(connect.UnaryInterceptorFunc(f.intercept))))
	const partitions, n = 2, 3000
	topic := uniq("pipeline")
	createTopic(t, c, topic, partitions)
	p := c.NewProducer(sdk.ProducerOptions{MaxInFlight: 5, MaxBatchBytes: 1 << 10, Linger: time.Millisecond, RetryBackoff: time.Millisecond})
	var got produced
	for i := range n {
		p.Produce(ctx, sdk.Record{Topic: topic, Partition: int32(i % partitions), ExplicitPartition: true, Value: fmt.Appendf(nil, "%d", i)}, got.cb)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got.errs) > 0 {
		t.Fatalf("%d records failed, first: %v", len(got.errs), got.errs[0])
	}
	if f.maxActive.Load() < 2 {
		t.Fatalf("at most %d Produce requests in flight, want several", f.maxActive.Load())
	}
	if f.injected.Load() != 1 {
		t.Fatalf("the failure was not injected behind pipelined requests")
	}
	if f.ooo.Load() == 0 {
		t.Fatalf("no batch was refused as out of order: the lost request had nothing pipelined behind it")
	}
	t.Logf("%d Produce calls, up to %d at once, %d refused as out of order", f.calls.Load(), f.maxActive.Load(), f.ooo.Load())
	total := 0
	for part := int32(0); part < partitions; part++ {
		acked := got.byPart[part]
		stored := readAll(t, c, topic, part)
		total += len(stored)
		if len(stored) != len(acked) {
			t.Fatalf("partition %d: %d records stored, %d acknowledged", part, len(stored), len(acked))
		}
		last := -1
		for i, r := range acked {
			if r.Offset != int64(i) || !bytes.Equal(stored[i].Value, r.Value) {
				t.Fatalf("partition %d: callback %d got offset %d value %q; stored there: %q", part, i, r.Offset, r.Value, stored[i].Value)
			}
			var v int
			fmt.Sscan(string(r.Value), &v)
			if v <= last {
				t.Fatalf("partition %d: record %d stored after %d", part, v, last)
			}
			last = v
		}
	}
	if total != n {
		t.Fatalf("%d records stored, want %d", total, n)
	}
}

// TestPipelinedProducerNoOutOfOrderRefusals: when nothing fails, a
// producer's pipelined requests are never refused as out of order: the
// node waits for a batch's predecessor when the batch overtakes it on the
// way in, instead of refusing it (which costs a round trip and a read of
// the producer's state).
func TestPipelinedProducerNoOutOfOrderRefusals(t *testing.T) {
	ctx := testCtx(t)
	f := &failOneProduce{later: make(chan struct{}, 2)}
	f.failAt.Store(-1) // fail nothing
	c := newClient(t, sdk.WithClientOptions(connect.WithInterceptors(connect.UnaryInterceptorFunc(f.intercept))))
	const partitions, n = 4, 4000
	topic := uniq("pipeline-ooo")
	createTopic(t, c, topic, partitions)
	p := c.NewProducer(sdk.ProducerOptions{MaxInFlight: 5, MaxBatchBytes: 2 << 10, Linger: time.Millisecond})
	var got produced
	value := bytes.Repeat([]byte("v"), 200)
	for i := range n {
		p.Produce(ctx, sdk.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: value}, got.cb)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got.errs) > 0 {
		t.Fatalf("%d records failed, first: %v", len(got.errs), got.errs[0])
	}
	if f.maxActive.Load() < 3 {
		t.Fatalf("at most %d Produce requests in flight, want several", f.maxActive.Load())
	}
	t.Logf("%d Produce calls, up to %d at once", f.calls.Load(), f.maxActive.Load())
	if f.ooo.Load() != 0 {
		t.Fatalf("%d of %d Produce requests refused as out of order, want none", f.ooo.Load(), f.calls.Load())
	}
	total := 0
	for part := int32(0); part < partitions; part++ {
		total += len(readAll(t, c, topic, part))
	}
	if total != n {
		t.Fatalf("%d records stored, want %d", total, n)
	}
}

// BenchmarkProducerInFlight: one idempotent producer's throughput (1 KiB
// records, 8 partitions) with one and five batches in flight.
func BenchmarkProducerInFlight(b *testing.B) {
	for _, inflight := range []int{1, 5} {
		b.Run(fmt.Sprintf("MaxInFlight=%d", inflight), func(b *testing.B) {
			var requests, refused atomic.Int64
			c := sdk.New(addr, sdk.WithHooks(sdk.Hooks{OnProduceBatch: func(e sdk.ProduceBatchEvent) {
				requests.Add(1)
				if e.Err != nil {
					refused.Add(1)
				}
			}}))
			defer c.Close()
			topic := uniq("bench-inflight")
			if _, err := admin.NewFromClient(c).CreateTopic(context.Background(), topic, 8, nil); err != nil {
				b.Fatal(err)
			}
			p := c.NewProducer(sdk.ProducerOptions{MaxInFlight: inflight})
			value := bytes.Repeat([]byte("x"), 1024)
			var failed atomic.Int64
			b.SetBytes(int64(len(value)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p.Produce(context.Background(), sdk.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: value}, func(_ sdk.Record, err error) {
					if err != nil {
						failed.Add(1)
					}
				})
			}
			if err := p.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(requests.Load()), "requests")
			b.ReportMetric(float64(refused.Load()), "failed-attempts")
			if failed.Load() > 0 {
				b.Fatalf("%d records failed", failed.Load())
			}
		})
	}
}
