package sdk_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/flushtick"
	"github.com/varve-io/varve/sdk"
)

// startTickNode starts a dev node of its own that seals its file every
// linger, and returns its address.
func startTickNode(t *testing.T, linger time.Duration) string {
	t.Helper()
	d, err := startDev(t.TempDir(), linger)
	if err != nil {
		t.Fatalf("start dev node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("close dev node: %v", err)
		}
	})
	return d.Addr()
}

// TestProducerSendsOncePerSeal: against a node that seals every 200 ms, a
// producer with a 1 ms linger fed a record every 5 ms sends about one batch
// per seal (it holds records until just before the node's next seal, which
// every Produce answer names), where it sent one per linger before; every
// record is acknowledged, in order, at dense offsets. With a negative
// linger (as soon as possible) it does not hold records.
func TestProducerSendsOncePerSeal(t *testing.T) {
	const linger = 200 * time.Millisecond
	addr := startTickNode(t, linger)
	ctx := testCtx(t)

	// The hint itself, as any client sees it.
	ac := sdk.New(addr)
	t.Cleanup(ac.Close)
	topic := uniq("tick")
	createTopic(t, ac, topic, 2)
	raw := varvev1connect.NewProduceServiceClient(http.DefaultClient, addr)
	res, err := raw.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: topic,
		Records: []*varvev1.ProduceRecord{{Record: &varvev1.Record{Value: []byte("raw")}}}}))
	if err != nil {
		t.Fatal(err)
	}
	next, every, ok := flushtick.Parse(res.Header().Get(flushtick.Header))
	if !ok || every != linger || next > linger {
		t.Fatalf("%s: %q (next %v, every %v, ok %v)", flushtick.Header, res.Header().Get(flushtick.Header), next, every, ok)
	}

	run := func(t *testing.T, opts sdk.ProducerOptions, n int) (rpcs int64, elapsed time.Duration) {
		// Calls sent after the first answer: before it the producer knows
		// no seal, and fills its window as it always did.
		var calls, firstAck atomic.Int64
		c := sdk.New(addr, sdk.WithHooks(sdk.Hooks{OnProduceBatch: func(ev sdk.ProduceBatchEvent) {
			now := time.Now()
			firstAck.CompareAndSwap(0, now.UnixNano())
			if ev.Err == nil && now.Add(-ev.Latency).UnixNano() > firstAck.Load() {
				calls.Add(1)
			}
		}}))
		defer c.Close()
		p := c.NewProducer(opts)
		var got produced
		start := time.Now()
		for i := range n {
			p.Produce(ctx, sdk.Record{Topic: topic, Partition: int32(i % 2), ExplicitPartition: true, Value: fmt.Appendf(nil, "%d", i)}, got.cb)
			time.Sleep(5 * time.Millisecond)
		}
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		elapsed = time.Since(start)
		if len(got.errs) > 0 || got.calls.Load() != int64(n) {
			t.Fatalf("%d callbacks of %d, errors %v", got.calls.Load(), n, got.errs)
		}
		for part, recs := range got.byPart {
			for i := 1; i < len(recs); i++ {
				if recs[i].Offset != recs[i-1].Offset+1 {
					t.Fatalf("partition %d: offset %d after %d", part, recs[i].Offset, recs[i-1].Offset)
				}
			}
		}
		return calls.Load(), elapsed
	}

	const n = 240 // about 1.2 s, 6 seals
	rpcs, elapsed := run(t, sdk.ProducerOptions{Linger: time.Millisecond}, n)
	// One batch per seal that passed after the first answer, plus the
	// records the full window held back then and the rest Close sends.
	seals := int64(math.Ceil(float64(elapsed) / float64(linger)))
	t.Logf("linger 1ms: %d records, %d calls after the first answer, over %v (%d seals)", n, rpcs, elapsed.Round(time.Millisecond), seals)
	if rpcs > seals+2 {
		t.Errorf("%d Produce calls after the first answer for %d seals: the producer did not hold records for the seal", rpcs, seals)
	}

	asap, _ := run(t, sdk.ProducerOptions{Linger: -1}, n)
	t.Logf("linger -1: %d records, %d calls after the first answer", n, asap)
	if asap <= seals+2 {
		t.Errorf("linger -1 (as soon as possible) sent only %d calls for %d seals", asap, seals)
	}
}
