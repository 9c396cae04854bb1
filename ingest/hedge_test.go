package ingest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// stallStore is a real store whose PUT number stallAt (counting from 1)
// hangs until its context ends, and then stores the object anyway: a
// straggler that the store finished but whose answer never came back.
// With dead set, every PUT from stallAt on hangs and stores nothing: a
// store that stopped answering.
type stallStore struct {
	tier.Store
	stallAt int
	dead    bool

	mu      sync.Mutex
	puts    []string
	stalled string
	landed  chan struct{} // closed once the stalled PUT has stored its object
}

func (s *stallStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	s.mu.Lock()
	s.puts = append(s.puts, key)
	stall := len(s.puts) == s.stallAt
	if stall {
		s.stalled = key
	}
	dead := s.dead && len(s.puts) >= s.stallAt
	s.mu.Unlock()
	if dead {
		<-ctx.Done()
		return ctx.Err()
	}
	if !stall {
		return s.Store.PutIfAbsent(ctx, key, data)
	}
	<-ctx.Done()
	err := s.Store.PutIfAbsent(context.Background(), key, data)
	close(s.landed)
	if err != nil {
		return err
	}
	return ctx.Err()
}

// hedgeEnv is an ingester over real etcd and a stalling filesystem store.
type hedgeEnv struct {
	meta   *metadata.Client
	store  *stallStore
	in     *ingest.Ingester
	reader *sdkmetric.ManualReader
}

func newHedgeEnv(t *testing.T, stallAt int, hedgeMin time.Duration, onMinIO bool) *hedgeEnv {
	t.Helper()
	meta, store, cache := metaTopicFS(t, 1)
	if onMinIO {
		m := testenv.MinIO(t)
		s3, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
		if err != nil {
			t.Fatal(err)
		}
		store = s3
	}
	st := &stallStore{Store: store, stallAt: stallAt, landed: make(chan struct{})}
	reader := sdkmetric.NewManualReader()
	in, err := ingest.New(ingest.Config{NodeID: "a", Linger: time.Millisecond, PutHedgeMin: hedgeMin, PutTimeout: 3 * time.Second}, st, meta, cache, nil,
		sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	return &hedgeEnv{meta: meta, store: st, in: in, reader: reader}
}

// produce stores one record and returns its offset and how long the
// acknowledgement took.
func (e *hedgeEnv) produce(t *testing.T, ctx context.Context, v string) (int64, time.Duration) {
	t.Helper()
	start := time.Now()
	res, err := e.in.Produce(ctx, "t", []ingest.Record{{Partition: 0, Record: segment.Record{Value: []byte(v)}}})
	if err != nil {
		t.Fatalf("produce %s: %v", v, err)
	}
	return res[0].Offset, time.Since(start)
}

// A PUT that hangs is raced by a second PUT of the same bytes under a new
// key once it is slower than twice the recent p90: the records are
// acknowledged when the second lands, the index names the second object,
// and the first, which the store finished after all, is deleted. On the
// filesystem store and on MinIO (conditional PUTs, a cancelled request).
func TestHedgedPutOutrunsAStalledPut(t *testing.T) {
	for _, onMinIO := range []bool{false, true} {
		t.Run(map[bool]string{false: "fs", true: "minio"}[onMinIO], func(t *testing.T) {
			testHedgedPutOutrunsAStalledPut(t, onMinIO)
		})
	}
}

func testHedgedPutOutrunsAStalledPut(t *testing.T, onMinIO bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const warm = 25 // past the ingester's warm-up of 20 PUTs
	e := newHedgeEnv(t, warm+1, 20*time.Millisecond, onMinIO)
	for i := range warm {
		if off, _ := e.produce(t, ctx, "warm"); off != int64(i) {
			t.Fatalf("offset %d, want %d", off, i)
		}
	}
	off, took := e.produce(t, ctx, "stalled")
	if off != warm {
		t.Fatalf("offset %d, want %d", off, warm)
	}
	// The stalled PUT never answers on its own: only the hedge can have
	// stored the batch, whatever the time it took.
	ent, _, found, _, err := e.meta.LookupIndex(ctx, "t", 0, warm)
	if err != nil || !found {
		t.Fatalf("index entry of offset %d: found %v, %v", warm, found, err)
	}
	e.store.mu.Lock()
	stalled, puts := e.store.stalled, len(e.store.puts)
	e.store.mu.Unlock()
	if stalled == "" || ent.Object == stalled || puts != warm+2 {
		t.Fatalf("index names %s; stalled PUT %q; %d PUTs, want %d", ent.Object, stalled, puts, warm+2)
	}
	if _, err := e.store.Head(ctx, ent.Object); err != nil {
		t.Fatalf("hedged object %s: %v", ent.Object, err)
	}
	if n, won := counter(t, e.reader, "varve.ingest.put.hedges"), counter(t, e.reader, "varve.ingest.put.hedges.won"); n != 1 || won != 1 {
		t.Fatalf("hedges %d, won %d; want 1, 1", n, won)
	}
	// The loser stored its object when it was cancelled; it is deleted.
	select {
	case <-e.store.landed:
	case <-ctx.Done():
		t.Fatal("the stalled PUT was never cancelled")
	}
	for {
		_, err := e.store.Head(ctx, stalled)
		if errors.Is(err, tier.ErrNotFound) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the losing object %s is still there: %v", stalled, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The next batch is stored as usual, at the next offset.
	if off, _ := e.produce(t, ctx, "after"); off != warm+1 {
		t.Fatalf("offset %d after the hedge, want %d", off, warm+1)
	}
	t.Logf("acknowledged in %v with the first PUT hung", took)
}

// With hedging off, a stalled PUT is waited for: it is never raced.
func TestPutHedgeOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const warm = 25
	e := newHedgeEnv(t, warm+1, -1, false)
	for range warm {
		e.produce(t, ctx, "warm")
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	_, err := e.in.Produce(pctx, "t", []ingest.Record{{Partition: 0, Record: segment.Record{Value: []byte("stalled")}}})
	if err == nil {
		t.Fatal("a batch whose only PUT hangs was acknowledged")
	}
	if n := counter(t, e.reader, "varve.ingest.put.hedges"); n != 0 {
		t.Fatalf("%d hedges with hedging off", n)
	}
	e.store.mu.Lock()
	puts := len(e.store.puts)
	e.store.mu.Unlock()
	if puts != warm+1 {
		t.Fatalf("%d PUTs, want %d", puts, warm+1)
	}
}

// A store that stops answering makes the PUT and its hedge both hang: the
// batch fails within the put timeout (it is never acknowledged, and no
// offset is taken), whatever the hedge did.
func TestHedgedPutsOfADeadStoreFail(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const warm = 25
	e := newHedgeEnv(t, warm+1, 20*time.Millisecond, false)
	e.store.dead = true // set before any PUT; it takes effect at PUT warm+1
	for range warm {
		e.produce(t, ctx, "warm")
	}
	start := time.Now()
	_, err := e.in.Produce(ctx, "t", []ingest.Record{{Partition: 0, Record: segment.Record{Value: []byte("lost")}}})
	took := time.Since(start)
	if err == nil {
		t.Fatal("a batch no PUT stored was acknowledged")
	}
	if took > 10*time.Second { // the put timeout is 3 s
		t.Fatalf("the failure took %v", took)
	}
	if n, won := counter(t, e.reader, "varve.ingest.put.hedges"), counter(t, e.reader, "varve.ingest.put.hedges.won"); n < 1 || won != 0 {
		t.Fatalf("hedges %d, won %d; want at least 1, none won", n, won)
	}
	if _, _, found, _, err := e.meta.LookupIndex(ctx, "t", 0, warm); err != nil || found {
		t.Fatalf("offset %d after a failed batch: found %v, %v", warm, found, err)
	}
	t.Logf("failed in %v: %v", took, err)
}
