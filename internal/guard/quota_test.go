package guard_test

import (
	"context"
	cryptorand "crypto/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
)

// TestProduceQuota: a principal limited to 1 MiB/s is held to it over 10 s
// while another, unlimited, is not slowed to it. It measures and reports;
// the bounds are generous except the limit itself (+10 %).
func TestProduceQuota(t *testing.T) {
	const rate = 1 << 20
	n, a := securedNode(t, nil, nil, func(c *node.Config) {
		c.Security.Quotas = []string{"limited:produce=1MiB", "burst:produce=1MiB"}
	})
	ctx := context.Background()
	for _, topic := range []string{"lim", "free"} {
		if _, err := a.CreateTopic(ctx, topic, 4, nil); err != nil {
			t.Fatal(err)
		}
	}
	limited := principal(t, a, n.Addr(), "limited", "topic:lim produce")
	burst := principal(t, a, n.Addr(), "burst", "topic:lim produce")
	free := principal(t, a, n.Addr(), "free", "topic:free produce")

	// Requests over the quota are held (throttled, as a Kafka broker
	// delays its answer) up to a second; what would wait longer is
	// answered RESOURCE_EXHAUSTED with a retry delay: 5 MiB at once.
	c := sdk.New(n.Addr(), sdk.WithToken(burst))
	defer c.Close()
	errs := make(chan error, 20)
	for range 20 {
		big := make([]byte, 256<<10)
		cryptorand.Read(big)
		go func() {
			_, err := c.Produce(ctx, "lim", []sdk.Record{{Topic: "lim", Value: big}})
			errs <- err
		}()
	}
	var err error
	refused := 0
	for range 20 {
		if e := <-errs; e != nil {
			if connect.CodeOf(e) != connect.CodeResourceExhausted {
				t.Fatalf("5 MiB at once from a 1 MiB/s principal: %v, want resource_exhausted", e)
			}
			err = e
			refused++
		}
	}
	if refused == 0 || refused == 20 {
		t.Fatalf("5 MiB at once from a 1 MiB/s principal: %d of 20 requests refused, want some (those past a second of throttling)", refused)
	}
	if d, ok := sdk.RetryDelay(err); !ok || d <= 0 {
		t.Fatalf("no RetryInfo in %v", err)
	}
	t.Logf("over quota: %v", err)

	const window = 10 * time.Second
	// Incompressible values, each its own: the quota counts request bytes
	// as sent, and the SDK sends zstd-compressed batches (Kafka's quotas
	// count wire bytes too).
	const valueBytes = 4 << 10
	run := func(tok, topic string, batch int) (acked *atomic.Int64, wait func()) {
		cl := sdk.New(n.Addr(), sdk.WithToken(tok))
		p := cl.NewProducer(sdk.ProducerOptions{MaxBatchBytes: batch, MaxBufferedBytes: int64(16 * batch), Retries: 100000})
		acked = new(atomic.Int64)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			end := time.Now().Add(window)
			for time.Now().Before(end) {
				value := make([]byte, valueBytes)
				cryptorand.Read(value)
				p.Produce(ctx, sdk.Record{Topic: topic, Value: value}, func(_ sdk.Record, err error) {
					if err == nil && time.Now().Before(end) {
						acked.Add(valueBytes)
					}
				})
			}
		}()
		return acked, func() {
			wg.Wait()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_ = p.Close(cctx)
			cl.Close()
		}
	}
	// The limited producer sends small batches (the quota is enforced per
	// request), the free one large ones (one batch in flight per topic).
	limAcked, limWait := run(limited, "lim", 64<<10)
	freeAcked, freeWait := run(free, "free", 1<<20)
	limWait()
	freeWait()
	limRate := float64(limAcked.Load()) / window.Seconds()
	freeRate := float64(freeAcked.Load()) / window.Seconds()
	t.Logf("over %v: limited principal %.3f MiB/s (quota 1 MiB/s), unlimited principal %.3f MiB/s", window, limRate/rate, freeRate/rate)
	if limRate > 1.10*rate {
		t.Errorf("limited principal produced %.3f MiB/s, more than 1 MiB/s + 10 %%", limRate/rate)
	}
	if limRate < 0.5*rate {
		t.Errorf("limited principal produced only %.3f MiB/s of its 1 MiB/s", limRate/rate)
	}
	if freeRate < 3*rate {
		t.Errorf("unlimited principal produced only %.3f MiB/s: slowed by the other's quota?", freeRate/rate)
	}
}

// TestFetchQuota: a principal over its fetch quota is answered
// RESOURCE_EXHAUSTED with a retry delay; another principal is not.
func TestFetchQuota(t *testing.T) {
	n, a := securedNode(t, nil, nil, func(c *node.Config) {
		c.Security.Quotas = []string{"limited:fetch=64KiB", "many:fetch=64KiB"}
	})
	ctx := context.Background()
	if _, err := a.CreateTopic(ctx, "t", 1, nil); err != nil {
		t.Fatal(err)
	}
	var recs []sdk.Record
	for range 16 {
		recs = append(recs, sdk.Record{Topic: "t", Value: make([]byte, 64<<10)})
	}
	if _, err := a.Client().Produce(ctx, "t", recs); err != nil {
		t.Fatal(err)
	}
	limited := principal(t, a, n.Addr(), "limited", "topic:t consume")
	free := principal(t, a, n.Addr(), "free", "topic:t consume")
	fetch := func(tok string) error {
		c := sdk.New(n.Addr(), sdk.WithToken(tok))
		defer c.Close()
		_, err := c.Fetch(ctx, "t", 0, 0, 1<<20, 0)
		return err
	}
	for i := range 3 {
		if err := fetch(free); err != nil {
			t.Fatalf("free fetch %d: %v", i, err)
		}
	}
	if err := fetch(limited); err != nil {
		t.Fatalf("first fetch within the burst: %v", err)
	}
	err := fetch(limited)
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("second 1 MiB fetch at 64 KiB/s: %v, want resource_exhausted", err)
	}
	if d, ok := sdk.RetryDelay(err); !ok || d < 5*time.Second {
		t.Fatalf("retry delay %v (%v): want about 1 MiB / 64 KiB/s = 16 s", d, ok)
	}
	// FetchPartitions (the consumer's fetch) is charged and refused alike.
	many := principal(t, a, n.Addr(), "many", "topic:t consume")
	fetchMany := func(tok string) error {
		c := sdk.New(n.Addr(), sdk.WithToken(tok))
		defer c.Close()
		hc, base, opts := c.ConnectConfig()
		fc := varvev1connect.NewFetchServiceClient(hc, base, opts...)
		_, err := fc.FetchPartitions(ctx, connect.NewRequest(&varvev1.FetchPartitionsRequest{Topic: "t",
			Partitions: []*varvev1.FetchPartition{{Partition: 0, MaxBytes: 1 << 20}}}))
		return err
	}
	if err := fetchMany(many); err != nil {
		t.Fatalf("first FetchPartitions within the burst: %v", err)
	}
	if err := fetchMany(many); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("second 1 MiB FetchPartitions at 64 KiB/s: %v, want resource_exhausted", err)
	}
}
