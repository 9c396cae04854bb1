package ingest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// stateReads returns the ingester's count of producer state reads.
func stateReads(t *testing.T, r *sdkmetric.ManualReader) int64 {
	t.Helper()
	return counter(t, r, "varve.ingest.producer_state.reads")
}

// counter returns the value of the ingester's counter name.
func counter(t *testing.T, r *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				var n int64
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					n += dp.Value
				}
				return n
			}
		}
	}
	return 0
}

// TestRememberedProducerStates: a node accepts the next batch of a producer
// whose state its own commits wrote without reading etcd; whatever the
// remembered state would not accept is decided on a fresh read; and a
// stale remembered state (another node committed, or fenced the producer)
// never weakens an answer: the commit transaction refuses the duplicate
// (answered with its original offsets) or the fenced epoch.
func TestRememberedProducerStates(t *testing.T) {
	ctx := context.Background()
	meta, store := metaAndStore(t)
	reader := sdkmetric.NewManualReader()
	var nodes []*ingest.Ingester
	for i, mp := range []metric.MeterProvider{sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)), nil} {
		cache, err := meta.NewCache(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		in, err := ingest.New(ingest.Config{NodeID: "ab"[i : i+1], Linger: 5 * time.Millisecond}, store, meta, cache, nil, mp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close(context.Background()) })
		nodes = append(nodes, in)
	}
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	a, b := nodes[0], nodes[1]
	p, err := a.InitProducer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	idem := func(epoch int32, seqs map[int32]int32) ingest.Idempotence {
		return ingest.Idempotence{ProducerID: p.ID, Epoch: epoch, Sequences: seqs}
	}
	produce := func(in *ingest.Ingester, rs []ingest.Record, id ingest.Idempotence, want ...int64) {
		t.Helper()
		res, err := in.ProduceIdempotent(ctx, "t", rs, id)
		if err != nil {
			t.Fatalf("produce %v: %v", id.Sequences, err)
		}
		for i, w := range want {
			if res[i].Offset != w {
				t.Fatalf("produce %v: offsets %v, want %v", id.Sequences, offsets(res), want)
			}
		}
	}
	wantReads := func(n int64) {
		t.Helper()
		if got := stateReads(t, reader); got != n {
			t.Fatalf("node a read producer state %d times, want %d", got, n)
		}
	}

	// First batch: a read. The next ones on the same partition: none.
	produce(a, recs(0, "a0", "a1"), idem(0, map[int32]int32{0: 0}), 0, 1)
	wantReads(1)
	produce(a, recs(0, "a2"), idem(0, map[int32]int32{0: 2}), 2)
	produce(a, recs(0, "a3", "a4"), idem(0, map[int32]int32{0: 3}), 3, 4)
	wantReads(1)
	// A partition the node has not seen for the producer: a read.
	produce(a, append(recs(0, "a5"), recs(1, "b0")...), idem(0, map[int32]int32{0: 5, 1: 0}), 5, 0)
	wantReads(2)

	// A duplicate is never answered from memory: a read, original offsets,
	// no PUT.
	puts := store.Count(tier.OpPut)
	produce(a, recs(0, "a3", "a4"), idem(0, map[int32]int32{0: 3}), 3, 4)
	wantReads(3)
	// A gap neither: a read, then the precise refusal.
	if _, err := a.ProduceIdempotent(ctx, "t", recs(0, "zz"), idem(0, map[int32]int32{0: 9})); !errors.Is(err, metadata.ErrOutOfOrderSequence) {
		t.Fatalf("gap: %v, want ErrOutOfOrderSequence", err)
	}
	wantReads(4)
	if n := store.Count(tier.OpPut); n != puts {
		t.Fatalf("a duplicate and a gap stored %d objects", n-puts)
	}

	// Stale memory: the producer's next batch commits through b; its retry
	// through a is accepted from a's memory, and the commit answers it as
	// the duplicate it is, with b's offsets. The log is unchanged.
	produce(b, recs(0, "a6", "a7"), idem(0, map[int32]int32{0: 6}), 6, 7)
	produce(a, recs(0, "a6", "a7"), idem(0, map[int32]int32{0: 6}), 6, 7)
	wantReads(4)
	if st, err := meta.PartitionStates(ctx, "t"); err != nil || st[0].Next != 8 {
		t.Fatalf("partition 0 after the retry: %+v %v, want next 8", st, err)
	}
	// The refused commit made a forget the producer: the next batch reads.
	produce(a, recs(0, "a8"), idem(0, map[int32]int32{0: 8}), 8)
	wantReads(5)

	// Fencing through another node: a still remembers epoch 0 and accepts
	// the zombie's next batch; the commit refuses it as fenced.
	if _, err := b.InitProducer(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ProduceIdempotent(ctx, "t", recs(0, "z"), idem(0, map[int32]int32{0: 9})); !errors.Is(err, metadata.ErrProducerFenced) {
		t.Fatalf("fenced epoch: %v, want ErrProducerFenced", err)
	}
	if st, err := meta.PartitionStates(ctx, "t"); err != nil || st[0].Next != 9 {
		t.Fatalf("partition 0 after the fenced batch: %+v %v, want next 9", st, err)
	}
	// The new epoch starts at 0 on each partition.
	produce(a, recs(0, "c0"), idem(1, map[int32]int32{0: 0}), 9)
	produce(a, recs(0, "c1"), idem(1, map[int32]int32{0: 1}), 10)
	wantReads(6)
}

// TestIdempotentBatchWaitsForItsPredecessor: a producer's batch that
// reaches the node before the batch preceding it (pipelined requests are
// decided concurrently) waits for it instead of being refused as out of
// order, and both are stored in sequence order; a gap that nothing fills
// is refused as out of order once OrderWait has passed, and counted.
func TestIdempotentBatchWaitsForItsPredecessor(t *testing.T) {
	ctx := context.Background()
	meta, fs := metaAndStore(t)
	reader := sdkmetric.NewManualReader()
	cache, err := meta.NewCache(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	const orderWait = time.Second
	in, err := ingest.New(ingest.Config{NodeID: "a", Linger: 5 * time.Millisecond, OrderWait: orderWait}, fs, meta, cache, nil,
		sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	p, err := in.InitProducer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	idem := func(seqs map[int32]int32) ingest.Idempotence {
		return ingest.Idempotence{ProducerID: p.ID, Epoch: p.Epoch, Sequences: seqs}
	}
	// Sequences 2-3 arrive first, on both partitions; 0-1 later.
	later := make(chan produced, 1)
	go func() {
		res, err := in.ProduceIdempotent(ctx, "t", append(recs(0, "c", "d"), recs(1, "C", "D")...), idem(map[int32]int32{0: 2, 1: 2}))
		later <- produced{res, err}
	}()
	if !testenv.Eventually(10*time.Second, func() bool { return counter(t, reader, "varve.ingest.order_waits") == 1 }) {
		t.Fatal("the batch ahead of its sequence did not wait")
	}
	first, err := in.ProduceIdempotent(ctx, "t", append(recs(0, "a", "b"), recs(1, "A", "B")...), idem(map[int32]int32{0: 0, 1: 0}))
	if err != nil {
		t.Fatal(err)
	}
	got := <-later
	if got.err != nil {
		t.Fatalf("the batch that overtook its predecessor: %v", got.err)
	}
	if o := offsets(first); !slices.Equal(o, []int64{0, 1, 0, 1}) {
		t.Fatalf("first batch offsets %v", o)
	}
	if o := offsets(got.res); !slices.Equal(o, []int64{2, 3, 2, 3}) {
		t.Fatalf("second batch offsets %v", o)
	}
	if n := counter(t, reader, "varve.ingest.out_of_order"); n != 0 {
		t.Fatalf("%d out-of-order refusals", n)
	}

	// A gap nothing fills: refused after OrderWait, nothing stored.
	start := time.Now()
	_, err = in.ProduceIdempotent(ctx, "t", recs(0, "x"), idem(map[int32]int32{0: 9}))
	if !errors.Is(err, metadata.ErrOutOfOrderSequence) {
		t.Fatalf("gap: got %v, want out of order", err)
	}
	if el := time.Since(start); el < orderWait {
		t.Fatalf("gap refused after %v, before OrderWait %v", el, orderWait)
	}
	if n := counter(t, reader, "varve.ingest.out_of_order"); n != 1 {
		t.Fatalf("%d out-of-order refusals counted, want 1", n)
	}
	if _, err := in.ProduceIdempotent(ctx, "t", recs(0, "e"), idem(map[int32]int32{0: 4})); err != nil {
		t.Fatalf("the next batch after the refused gap: %v", err)
	}
	// A stale sequence (behind, not a duplicate) is refused at once.
	start = time.Now()
	if _, err := in.ProduceIdempotent(ctx, "t", recs(0, "y"), idem(map[int32]int32{0: 1})); !errors.Is(err, metadata.ErrOutOfOrderSequence) {
		t.Fatalf("stale: got %v, want out of order", err)
	}
	if el := time.Since(start); el >= orderWait {
		t.Fatalf("a stale sequence waited %v", el)
	}
}

// TestIngestBytesCountsUncompressed: varve.ingest.bytes counts the records
// uncompressed, as documented, also for the batch form whose batches are
// stored compressed as sent.
func TestIngestBytesCountsUncompressed(t *testing.T) {
	ctx := context.Background()
	meta, fs := metaAndStore(t)
	reader := sdkmetric.NewManualReader()
	cache, err := meta.NewCache(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(ingest.Config{NodeID: "a", Linger: 5 * time.Millisecond}, fs, meta, cache, nil,
		sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	var recs []segment.Record
	values := 0
	for i := range 100 {
		v := bytes.Repeat(fmt.Appendf(nil, "%d", i), 500)
		values += len(v)
		recs = append(recs, segment.Record{Value: v, Timestamp: time.Now().UnixMilli()})
	}
	plain, err := segment.AppendProducerBatches(nil, recs)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) >= values/3 {
		t.Fatalf("the batch is %d bytes for %d bytes of values: not compressed", len(plain), values)
	}
	if _, err := in.ProduceBatches(ctx, "t", []ingest.Batches{{Partition: 0, Bytes: plain}}, nil); err != nil {
		t.Fatal(err)
	}
	check := func(n int) {
		t.Helper()
		got := counter(t, reader, "varve.ingest.bytes")
		if got < int64(n*values) || got > int64(n*(values+100*32)) {
			t.Fatalf("varve.ingest.bytes %d after %d batches of %d value bytes (%d stored)", got, n, values, len(plain))
		}
	}
	check(1)
}
