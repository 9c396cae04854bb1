package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

func idemAppend(topic string, p int32, n int64, batches ...metadata.ProducerBatch) metadata.Append {
	return metadata.Append{Topic: topic, Partition: p, Object: "obj", Off: 0, Len: 10 * n, Records: n, Batches: batches}
}

// TestIdempotentCommit drives the commit transaction through the cases of
// docs/idempotence.md: accepted, duplicate (answered with the original
// offsets), gap, fenced epoch, unknown producer, a block shared with a
// duplicate. Each refusal must leave the partition unchanged.
func TestIdempotentCommit(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "idem", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	a, err := c.InitProducer(ctx, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.InitProducer(ctx, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID <= 0 || b.ID == a.ID || a.Epoch != 0 {
		t.Fatalf("producers %+v %+v: want distinct positive ids at epoch 0", a, b)
	}
	next := func() int64 {
		t.Helper()
		st, err := c.PartitionStates(ctx, "idem")
		if err != nil {
			t.Fatal(err)
		}
		return st[0].Next
	}
	commit := func(id string, ap metadata.Append) metadata.AppendResult {
		t.Helper()
		res, err := c.Commit(ctx, id, []metadata.Append{ap})
		if err != nil {
			t.Fatalf("commit %s: %v", id, err)
		}
		return res[0]
	}
	// A plain record first, then producer a's batch of 3 at records 1..3.
	r := commit("c1", idemAppend("idem", 0, 4, metadata.ProducerBatch{ID: a.ID, Epoch: 0, FirstSeq: 0, Count: 3, Index: 1}))
	if r.Err != nil || r.Base != 0 || len(r.Batches) != 1 || r.Batches[0].Base != 1 || r.Batches[0].Duplicate {
		t.Fatalf("first commit: %+v", r)
	}
	// The guard answers a retried commit with the same results.
	if r2 := commit("c1", idemAppend("idem", 0, 4, metadata.ProducerBatch{ID: a.ID, Epoch: 0, FirstSeq: 0, Count: 3, Index: 1})); r2.Base != 0 || r2.Batches[0].Base != 1 {
		t.Fatalf("guarded retry: %+v", r2)
	}
	if n := next(); n != 4 {
		t.Fatalf("next = %d, want 4", n)
	}
	r = commit("c2", idemAppend("idem", 0, 2, metadata.ProducerBatch{ID: a.ID, Epoch: 0, FirstSeq: 3, Count: 2}))
	if r.Err != nil || r.Base != 4 || r.Batches[0].Base != 4 {
		t.Fatalf("second batch: %+v", r)
	}

	cases := []struct {
		name    string
		batches []metadata.ProducerBatch
		n       int64
		want    []error // per batch; nil with dup means a duplicate
		dupBase []int64
	}{
		{"duplicate of the first batch (through another node)", []metadata.ProducerBatch{{ID: a.ID, FirstSeq: 0, Count: 3}}, 3, []error{nil}, []int64{1}},
		{"duplicate of the last batch", []metadata.ProducerBatch{{ID: a.ID, FirstSeq: 3, Count: 2}}, 2, []error{nil}, []int64{4}},
		{"gap", []metadata.ProducerBatch{{ID: a.ID, FirstSeq: 9, Count: 1}}, 1, []error{metadata.ErrOutOfOrderSequence}, nil},
		{"retry with another record count", []metadata.ProducerBatch{{ID: a.ID, FirstSeq: 3, Count: 1}}, 1, []error{metadata.ErrOutOfOrderSequence}, nil},
		{"first batch of a producer not at 0", []metadata.ProducerBatch{{ID: b.ID, FirstSeq: 1, Count: 1}}, 1, []error{metadata.ErrOutOfOrderSequence}, nil},
		{"epoch never issued", []metadata.ProducerBatch{{ID: a.ID, Epoch: 7, FirstSeq: 5, Count: 1}}, 1, []error{metadata.ErrInvalidArgument}, nil},
		{"unknown producer", []metadata.ProducerBatch{{ID: 1 << 40, FirstSeq: 0, Count: 1}}, 1, []error{metadata.ErrUnknownProducer}, nil},
		{"a good batch sharing a block with a duplicate", []metadata.ProducerBatch{
			{ID: b.ID, FirstSeq: 0, Count: 1, Index: 0}, {ID: a.ID, FirstSeq: 3, Count: 2, Index: 1}}, 3,
			[]error{metadata.ErrBlockRefused, nil}, []int64{-1, 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := next()
			r := commit("case-"+tc.name, idemAppend("idem", 0, tc.n, tc.batches...))
			if !errors.Is(r.Err, metadata.ErrBlockRefused) || r.Base != -1 {
				t.Fatalf("block: %+v, want ErrBlockRefused", r)
			}
			for j, want := range tc.want {
				got := r.Batches[j]
				if want == nil {
					if !got.Duplicate || got.Base != tc.dupBase[j] {
						t.Fatalf("batch %d: %+v, want duplicate at %d", j, got, tc.dupBase[j])
					}
					continue
				}
				if !errors.Is(got.Err, want) {
					t.Fatalf("batch %d: %+v, want %v", j, got, want)
				}
			}
			if n := next(); n != before {
				t.Fatalf("next moved from %d to %d", before, n)
			}
		})
	}

	// b's batch alone now commits (its earlier attempt was refused).
	if r := commit("c3", idemAppend("idem", 0, 1, metadata.ProducerBatch{ID: b.ID, FirstSeq: 0, Count: 1})); r.Err != nil || r.Base != 6 {
		t.Fatalf("b's retry: %+v", r)
	}
	// A new epoch fences the old one and restarts sequences at 0.
	a1, err := c.InitProducer(ctx, a.ID, 0)
	if err != nil || a1.Epoch != 1 || a1.ID != a.ID {
		t.Fatalf("bump epoch: %+v %v", a1, err)
	}
	r = commit("c4", idemAppend("idem", 0, 1, metadata.ProducerBatch{ID: a.ID, Epoch: 0, FirstSeq: 5, Count: 1}))
	if !errors.Is(r.Err, metadata.ErrBlockRefused) || !errors.Is(r.Batches[0].Err, metadata.ErrProducerFenced) {
		t.Fatalf("old epoch: %+v, want fenced", r)
	}
	r = commit("c5", idemAppend("idem", 0, 1, metadata.ProducerBatch{ID: a.ID, Epoch: 1, FirstSeq: 0, Count: 1}))
	if r.Err != nil || r.Base != 7 {
		t.Fatalf("new epoch: %+v", r)
	}
	if _, err := c.InitProducer(ctx, 1<<40, 0); !errors.Is(err, metadata.ErrUnknownProducer) {
		t.Fatalf("init of an unknown id: %v", err)
	}
	// Bad batches are refused before anything is read.
	if _, err := c.Commit(ctx, "bad", []metadata.Append{idemAppend("idem", 1, 2, metadata.ProducerBatch{ID: a.ID, Epoch: 1, Count: 3})}); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("batch larger than its block: %v", err)
	}
}

// TestProducerStateExpires shows etcd stays bounded: a producer's id and
// states vanish producer_state_ttl after its last commit, and the id is
// then unknown.
func TestProducerStateExpires(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "exp", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	p, err := c.InitProducer(ctx, 0, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var aps []metadata.Append
	for part := int32(0); part < 3; part++ {
		aps = append(aps, idemAppend("exp", part, 1, metadata.ProducerBatch{ID: p.ID, Count: 1}))
	}
	if _, err := c.Commit(ctx, "e1", aps); err != nil {
		t.Fatal(err)
	}
	if n, err := c.ProducerStateKeys(ctx); err != nil || n != 4 {
		t.Fatalf("producer keys = %d (%v), want 4", n, err)
	}
	if !testenv.EventuallyEvery(30*time.Second, 100*time.Millisecond, func() bool {
		n, err := c.ProducerStateKeys(ctx)
		return err == nil && n == 0
	}) {
		t.Fatal("producer state never expired")
	}
	res, err := c.Commit(ctx, "e2", []metadata.Append{idemAppend("exp", 0, 1, metadata.ProducerBatch{ID: p.ID, FirstSeq: 1, Count: 1})})
	if err != nil || !errors.Is(res[0].Batches[0].Err, metadata.ErrUnknownProducer) {
		t.Fatalf("commit after expiry: %+v %v", res, err)
	}
}

// TestIdempotentCommitChunks checks that blocks with many producers are
// split into transactions etcd accepts.
func TestIdempotentCommitChunks(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	const parts = 40
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "wide", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for range metadata.MaxProducersPerBlock {
		p, err := c.InitProducer(ctx, 0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
	}
	var aps []metadata.Append
	for part := int32(0); part < parts; part++ {
		var bs []metadata.ProducerBatch
		for i, id := range ids {
			bs = append(bs, metadata.ProducerBatch{ID: id, Count: 1, Index: int64(i)})
		}
		aps = append(aps, idemAppend("wide", part, int64(len(ids)), bs...))
	}
	res, err := c.Commit(ctx, "wide", aps)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.Base != 0 {
			t.Fatalf("append %d: %+v", i, r)
		}
	}
}

// TestIdempotentCommitRace: two clients (two nodes) commit the same batch
// of a producer to one partition at once, round after round. The commit
// does not compare the state key (the partition key covers it), so this
// checks that exactly one copy commits and the other is answered as its
// duplicate, with the same offsets.
func TestIdempotentCommitRace(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	c2, err := metadata.Connect(ctx, metadata.Config{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "race", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	p, err := c.InitProducer(ctx, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const rounds, count = 20, 3
	for r := range int32(rounds) {
		b := metadata.ProducerBatch{ID: p.ID, FirstSeq: r * count, Count: count}
		results := make(chan metadata.AppendResult, 2)
		for i, cl := range []*metadata.Client{c, c2} {
			go func() {
				res, err := cl.Commit(ctx, fmt.Sprintf("race-%d-%d", r, i), []metadata.Append{idemAppend("race", 0, count, b)})
				if err != nil {
					results <- metadata.AppendResult{Err: err}
					return
				}
				results <- res[0]
			}()
		}
		x, y := <-results, <-results
		if x.Err != nil && y.Err != nil {
			t.Fatalf("round %d: both refused: %v / %v", r, x.Err, y.Err)
		}
		if x.Err != nil {
			x, y = y, x
		}
		// x committed; y is its duplicate.
		want := int64(r * count)
		if x.Base != want || x.Batches[0].Base != want || x.Batches[0].Duplicate {
			t.Fatalf("round %d: committed copy %+v, want base %d", r, x, want)
		}
		if !errors.Is(y.Err, metadata.ErrBlockRefused) || !y.Batches[0].Duplicate || y.Batches[0].Base != want {
			t.Fatalf("round %d: second copy %+v (%v), want a duplicate at %d", r, y, y.Err, want)
		}
	}
	st, err := c.PartitionStates(ctx, "race")
	if err != nil || st[0].Next != rounds*count {
		t.Fatalf("partition: %+v %v, want next %d", st, err, rounds*count)
	}
}

// TestAssumeHeldBatchAlreadyCommitted: a view read after a held batch's
// commit landed already counts it; assuming it again changes nothing, so
// the batches before it stay answerable as duplicates. A held batch of an
// older epoch does not take the view back to that epoch either.
func TestAssumeHeldBatchAlreadyCommitted(t *testing.T) {
	batch := func(epoch, seq int32) metadata.ProducerBatch {
		return metadata.ProducerBatch{ID: 1, Epoch: epoch, FirstSeq: seq, Count: 1}
	}
	var st *metadata.ProducerState
	for seq := range int32(5) {
		st = metadata.AdvanceState(st, batch(0, seq), int64(10+seq))
	}
	v := metadata.RememberedView(1, "t", 0, map[int32]*metadata.ProducerState{0: st})
	for seq := int32(1); seq < 5; seq++ {
		v.Assume(0, batch(0, seq)) // held, and committed since
	}
	if dup, err := v.Check(0, batch(0, 0)); err != nil || dup != 10 {
		t.Fatalf("retry of batch 0: dup %d, err %v; want its offset 10", dup, err)
	}
	v.Assume(0, batch(0, 5)) // held, not committed yet
	if dup, err := v.Check(0, batch(0, 6)); err != nil || dup >= 0 {
		t.Fatalf("next batch after the held one: dup %d, err %v; want accepted", dup, err)
	}

	v = metadata.RememberedView(1, "t", 1, map[int32]*metadata.ProducerState{0: metadata.AdvanceState(nil, batch(1, 0), 20)})
	v.Assume(0, batch(0, 7)) // held under the fenced epoch 0
	if dup, err := v.Check(0, batch(1, 1)); err != nil || dup >= 0 {
		t.Fatalf("epoch 1's next batch: dup %d, err %v; want accepted", dup, err)
	}
}

// AdvanceState keeps the last five batches of the epoch, newest last, and
// never changes the state it advances (states are shared).
func TestAdvanceStateKeepsTheLastBatches(t *testing.T) {
	b := func(epoch, seq int32) metadata.ProducerBatch {
		return metadata.ProducerBatch{ID: 1, Epoch: epoch, FirstSeq: seq, Count: 2}
	}
	var states []*metadata.ProducerState
	var st *metadata.ProducerState
	for i := range int32(8) {
		st = metadata.AdvanceState(st, b(0, 2*i), int64(100+2*i))
		states = append(states, st)
	}
	for i, st := range states {
		first := max(0, i-4)
		if st.Epoch != 0 || st.Next != int32(2*i+2) || len(st.Recent) != i-first+1 || cap(st.Recent) != len(st.Recent) {
			t.Fatalf("state %d: %+v (cap %d)", i, st, cap(st.Recent))
		}
		for j, r := range st.Recent {
			seq := int32(2 * (first + j))
			if r != (metadata.RecentBatch{Seq: seq, Base: int64(100 + seq), Count: 2}) {
				t.Fatalf("state %d, recent %d: %+v, want sequence %d", i, j, r, seq)
			}
		}
	}
	if st := metadata.AdvanceState(states[7], b(1, 0), 500); st.Epoch != 1 || st.Next != 2 || len(st.Recent) != 1 || st.Recent[0].Base != 500 {
		t.Fatalf("a new epoch's first batch: %+v", st)
	}
}

func BenchmarkAdvanceState(b *testing.B) {
	batch := metadata.ProducerBatch{ID: 1, Epoch: 0, FirstSeq: 0, Count: 1}
	var st *metadata.ProducerState
	b.ReportAllocs()
	for b.Loop() {
		st = metadata.AdvanceState(st, batch, 0)
		batch.FirstSeq++
	}
}
