package ingest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

type idemEnv struct {
	meta  *metadata.Client
	store *tier.Recorder
	nodes []*ingest.Ingester
}

// newIdemEnv starts two ingest nodes on one etcd and one store, the first
// with a short linger, the second with a linger long enough that a test
// decides when it flushes.
func newIdemEnv(t *testing.T) *idemEnv {
	t.Helper()
	ctx := context.Background()
	meta, store := metaAndStore(t)
	env := &idemEnv{meta: meta, store: store}
	for i, linger := range []time.Duration{5 * time.Millisecond, time.Hour} {
		cache, err := meta.NewCache(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		in, err := ingest.New(ingest.Config{NodeID: []string{"a", "b"}[i], Linger: linger}, env.store, meta, cache, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close(context.Background()) })
		env.nodes = append(env.nodes, in)
	}
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	return env
}

// metaAndStore connects to an embedded etcd and opens a filesystem store
// in a temporary directory, recorded; both are closed with the test.
func metaAndStore(t *testing.T) (*metadata.Client, *tier.Recorder) {
	t.Helper()
	meta, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	fs, err := tier.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return meta, tier.NewRecorder(fs)
}

func (e *idemEnv) next(t *testing.T, p int32) int64 {
	t.Helper()
	st, err := e.meta.PartitionStates(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	return st[p].Next
}

func recs(p int32, vals ...string) []ingest.Record {
	out := make([]ingest.Record, len(vals))
	for i, v := range vals {
		out[i] = ingest.Record{Partition: p, Record: segment.Record{Value: []byte(v)}}
	}
	return out
}

func offsets(res []ingest.Result) []int64 {
	out := make([]int64, len(res))
	for i, r := range res {
		out[i] = r.Offset
	}
	return out
}

type produced struct {
	res []ingest.Result
	err error
}

func goProduce(in *ingest.Ingester, rs []ingest.Record, idem ingest.Idempotence) chan produced {
	ch := make(chan produced, 1)
	go func() {
		res, err := in.ProduceIdempotent(context.Background(), "t", rs, idem)
		ch <- produced{res, err}
	}()
	return ch
}

// TestIdempotentRetryAcrossNodes: a batch retried through another node is
// answered with its original offsets, without a second PUT; a retry that
// was already buffered on the other node when the first commit landed makes
// that node refuse the block, answer the duplicate, and fail the batch of
// another producer sharing the block with a retriable error.
func TestIdempotentRetryAcrossNodes(t *testing.T) {
	env := newIdemEnv(t)
	ctx := context.Background()
	a, b := env.nodes[0], env.nodes[1]
	pa, err := a.InitProducer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := a.InitProducer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	idemA := func(seq int32) ingest.Idempotence {
		return ingest.Idempotence{ProducerID: pa.ID, Sequences: map[int32]int32{0: seq}}
	}
	first := recs(0, "x0", "x1", "x2")
	res, err := a.ProduceIdempotent(ctx, "t", first, idemA(0))
	if err != nil || offsets(res)[2] != 2 {
		t.Fatalf("first produce: %v %v", res, err)
	}
	puts := env.store.Count(tier.OpPut)
	// The fast path: a retry through node b is answered from etcd.
	res, err = b.ProduceIdempotent(ctx, "t", recs(0, "x0", "x1", "x2"), idemA(0))
	if err != nil || offsets(res)[0] != 0 || offsets(res)[2] != 2 {
		t.Fatalf("retry through b: %v %v", res, err)
	}
	if n := env.store.Count(tier.OpPut); n != puts {
		t.Fatalf("retry stored %d objects", n-puts)
	}

	// The commit-time path: b buffers the next batch of A and one of B;
	// meanwhile A's retry commits through a.
	viaB := goProduce(b, recs(0, "y0", "y1"), idemA(3))
	other := goProduce(b, recs(0, "z0"), ingest.Idempotence{ProducerID: pb.ID, Sequences: map[int32]int32{0: 0}})
	if !testenv.Eventually(10*time.Second, func() bool { _, n := b.Pending(); return n == 3 }) {
		t.Fatal("node b never buffered the two batches")
	}
	res, err = a.ProduceIdempotent(ctx, "t", recs(0, "y0", "y1"), idemA(3))
	if err != nil || offsets(res)[0] != 3 {
		t.Fatalf("retry through a: %v %v", res, err)
	}
	// A third copy on b shares the answer of the one b holds (or, if it
	// arrives after the flush, is answered from etcd: the same offsets).
	joined := goProduce(b, recs(0, "y0", "y1"), idemA(3))
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan produced{"held": viaB, "joined": joined} {
		r := <-ch
		if r.err != nil || offsets(r.res)[0] != 3 || offsets(r.res)[1] != 4 {
			t.Fatalf("%s duplicate on b: %v %v, want offsets 3, 4", name, r.res, r.err)
		}
	}
	r := <-other
	if !errors.Is(r.err, metadata.ErrBlockRefused) {
		t.Fatalf("other producer sharing the refused block: %v, want ErrBlockRefused", r.err)
	}
	if n := env.next(t, 0); n != 5 {
		t.Fatalf("next = %d, want 5 (no duplicate, nothing of the refused block)", n)
	}
	// Its retry commits.
	res, err = a.ProduceIdempotent(ctx, "t", recs(0, "z0"), ingest.Idempotence{ProducerID: pb.ID, Sequences: map[int32]int32{0: 0}})
	if err != nil || offsets(res)[0] != 5 {
		t.Fatalf("retry of the refused batch: %v %v", res, err)
	}
}

// TestIdempotentBadInput: each bad request gets a precise error and
// changes nothing: no PUT, no offset.
func TestIdempotentBadInput(t *testing.T) {
	env := newIdemEnv(t)
	ctx := context.Background()
	a := env.nodes[0]
	p, err := a.InitProducer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ProduceIdempotent(ctx, "t", recs(0, "a", "b"), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{0: 0}}); err != nil {
		t.Fatal(err)
	}
	fenced, err := a.InitProducer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.InitProducer(ctx, fenced.ID); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		recs []ingest.Record
		idem ingest.Idempotence
		want error
	}{
		{"gap", recs(0, "c"), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{0: 5}}, metadata.ErrOutOfOrderSequence},
		{"stale sequence", recs(0, "c"), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{0: 1}}, metadata.ErrOutOfOrderSequence},
		{"new partition not at 0", recs(1, "c"), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{1: 3}}, metadata.ErrOutOfOrderSequence},
		{"fenced epoch", recs(1, "c"), ingest.Idempotence{ProducerID: fenced.ID, Epoch: 0, Sequences: map[int32]int32{1: 0}}, metadata.ErrProducerFenced},
		{"epoch from the future", recs(1, "c"), ingest.Idempotence{ProducerID: p.ID, Epoch: 3, Sequences: map[int32]int32{1: 0}}, metadata.ErrInvalidArgument},
		{"unknown producer", recs(1, "c"), ingest.Idempotence{ProducerID: 1 << 50, Sequences: map[int32]int32{1: 0}}, metadata.ErrUnknownProducer},
		{"no partition", recs(-1, "c"), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{-1: 2}}, metadata.ErrInvalidArgument},
		{"missing sequence", recs(1, "c"), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{}}, metadata.ErrInvalidArgument},
		{"sequence without records", recs(0, "c"), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{0: 2, 1: 0}}, metadata.ErrInvalidArgument},
		{"negative sequence", recs(1, "c"), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{1: -1}}, metadata.ErrInvalidArgument},
		{"negative producer id", recs(1, "c"), ingest.Idempotence{ProducerID: -4, Sequences: map[int32]int32{1: 0}}, metadata.ErrInvalidArgument},
		{"one good and one bad partition", append(recs(0, "c"), recs(1, "d")...), ingest.Idempotence{ProducerID: p.ID, Sequences: map[int32]int32{0: 2, 1: 7}}, metadata.ErrOutOfOrderSequence},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			puts := env.store.Count(tier.OpPut)
			n0, n1 := env.next(t, 0), env.next(t, 1)
			_, err := a.ProduceIdempotent(ctx, "t", tc.recs, tc.idem)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if env.store.Count(tier.OpPut) != puts || env.next(t, 0) != n0 || env.next(t, 1) != n1 {
				t.Fatal("a refused request changed the log")
			}
		})
	}
}
