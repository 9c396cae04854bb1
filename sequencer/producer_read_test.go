package sequencer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/metadata"
)

// TestReadProducerFromLeaderMemory: once an idempotent producer's batches
// on 1,000 partitions are committed, the ReadProducer an ingest node makes
// on first touching each partition is answered from the identity the
// leader holds: a handful of etcd reads in all, not one per partition.
func TestReadProducerFromLeaderMemory(t *testing.T) {
	const partitions = 1000
	ctx := context.Background()
	s, c, prod := leaderWithProducer(t, "wide", partitions, true)
	appends := make([]metadata.Append, partitions)
	for p := range int32(partitions) {
		appends[p] = blk("wide", p, 2, pb(prod.ID, prod.Epoch, 0, 2, 0))
	}
	res, err := c.Commit(ctx, "c1", appends)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.Base != 0 {
			t.Fatalf("partition %d: base %d, %v", i, r.Base, r.Err)
		}
	}
	before := s.Stats().ProducerReads
	for p := range int32(partitions) {
		v, err := c.ReadProducer(ctx, prod.ID, prod.Epoch, false, "wide", []int32{p})
		if err != nil {
			t.Fatal(err)
		}
		if epoch, known := v.Epoch(); !known || epoch != prod.Epoch {
			t.Fatalf("partition %d: epoch %d known %v, want %d known", p, epoch, known, prod.Epoch)
		}
		if st := v.State(p); st == nil || st.Epoch != prod.Epoch || st.Next != 2 {
			t.Fatalf("partition %d: state %+v, want next sequence 2", p, st)
		}
		if dup, err := v.Check(p, pb(prod.ID, prod.Epoch, 2, 1, 0)); dup >= 0 || err != nil {
			t.Fatalf("partition %d: next batch checks as %d, %v; want accepted", p, dup, err)
		}
		if dup, err := v.Check(p, pb(prod.ID, prod.Epoch, 0, 2, 0)); dup != 0 || err != nil {
			t.Fatalf("partition %d: committed batch checks as %d, %v; want its duplicate at 0", p, dup, err)
		}
	}
	reads := s.Stats().ProducerReads - before
	t.Logf("%d ReadProducer calls on %d partitions: %d etcd producer reads", partitions, partitions, reads)
	if reads > 2 {
		t.Fatalf("%d etcd producer reads for %d partitions' ReadProducer, want at most 2", reads, partitions)
	}
}

// TestReadProducerNewEpoch: the leader holds a producer's identity at
// epoch 0 when InitProducer issues epoch 1. ReadProducer for a batch of
// epoch 1 rereads it (not refusing the epoch as never issued); a commit at
// epoch 1 then succeeds and one at epoch 0 is fenced, and ReadProducer for
// epoch 0, answered from memory, fences it too. A producer the leader
// holds as unknown (a batch arrived before its id was issued) is reread,
// never answered unknown from memory.
func TestReadProducerNewEpoch(t *testing.T) {
	for _, rpc := range []bool{false, true} {
		t.Run(fmt.Sprintf("rpc=%v", rpc), func(t *testing.T) {
			ctx := context.Background()
			s, c, prod := leaderWithProducer(t, "idem", 2, rpc)
			commit := func(id string, appends ...metadata.Append) []string {
				t.Helper()
				res, err := c.Commit(ctx, id, appends)
				return outcome(res, err)
			}
			reads := func() int64 { return s.Stats().ProducerReads }
			read := func(id int64, epoch int32) *metadata.ProducerView {
				t.Helper()
				v, err := c.ReadProducer(ctx, id, epoch, false, "idem", []int32{0, 1})
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			id := prod.ID
			if out := commit("c1", blk("idem", 0, 2, pb(id, 0, 0, 2, 0))); out[1] != "append 0: base 0: ok" {
				t.Fatalf("first commit: %q", out)
			}
			r0 := reads()
			if e, known := read(id, 0).Epoch(); !known || e != 0 || reads() != r0 {
				t.Fatalf("epoch 0 read: epoch %d known %v, %d etcd reads; want 0, known, from memory", e, known, reads()-r0)
			}

			if p, err := c.InitProducer(ctx, id, time.Hour); err != nil || p.Epoch != 1 {
				t.Fatalf("init again: %+v, %v; want epoch 1", p, err)
			}
			v := read(id, 1)
			if e, known := v.Epoch(); !known || e != 1 || reads() != r0+1 {
				t.Fatalf("epoch 1 read: epoch %d known %v, %d etcd reads; want 1, known, one read", e, known, reads()-r0)
			}
			if dup, err := v.Check(0, pb(id, 1, 0, 1, 0)); dup >= 0 || err != nil {
				t.Fatalf("epoch 1's first batch checks as %d, %v; want accepted", dup, err)
			}
			if out := commit("c2", blk("idem", 0, 1, pb(id, 1, 0, 1, 0))); out[1] != "append 0: base 2: ok" {
				t.Fatalf("epoch 1 commit: %q", out)
			}
			if out := commit("c3", blk("idem", 0, 1, pb(id, 0, 2, 1, 0))); len(out) < 3 || !refusedWith(out[2], metadata.ErrProducerFenced) {
				t.Fatalf("epoch 0 commit after epoch 1: %q, want fenced", out)
			}
			r1 := reads()
			v = read(id, 0)
			if e, known := v.Epoch(); !known || e != 1 || reads() != r1 {
				t.Fatalf("epoch 0 read after epoch 1 committed: epoch %d known %v, %d etcd reads; want 1, known, from memory", e, known, reads()-r1)
			}
			if _, err := v.Check(0, pb(id, 0, 2, 1, 0)); !errors.Is(err, metadata.ErrProducerFenced) {
				t.Fatalf("epoch 0 batch checks as %v, want fenced", err)
			}

			// A batch of the next id, not issued yet: the leader reads it
			// unknown. Once issued, ReadProducer rereads it.
			next := id + 1
			if out := commit("c4", blk("idem", 1, 1, pb(next, 0, 0, 1, 0))); len(out) < 3 || !refusedWith(out[2], metadata.ErrUnknownProducer) {
				t.Fatalf("batch of an id not issued: %q, want unknown producer", out)
			}
			if p, err := c.InitProducer(ctx, 0, time.Hour); err != nil || p.ID != next {
				t.Fatalf("init: %+v, %v; want id %d", p, err, next)
			}
			r2 := reads()
			if e, known := read(next, 0).Epoch(); !known || e != 0 || reads() != r2+1 {
				t.Fatalf("read of the newly issued id: epoch %d known %v, %d etcd reads; want 0, known, one read", e, known, reads()-r2)
			}
			if out := commit("c5", blk("idem", 1, 1, pb(next, 0, 0, 1, 0))); out[1] != "append 0: base 0: ok" {
				t.Fatalf("newly issued id's commit: %q", out)
			}
		})
	}
}

// refusedWith reports whether an outcome line records a refusal that is
// sentinel.
func refusedWith(line string, sentinel error) bool {
	return strings.Contains(line, "[is "+sentinel.Error()+"]")
}

// TestReadProducerBeforeTheFirstBatch: a new producer's first requests
// touch partition after partition before any batch of it is written, so
// the leader does not hold it yet; the identity ReadProducer read from etcd
// answers the next calls (as held: accept only) for a second, not one etcd
// read per partition. A call for a newer epoch, or a fresh one, reads
// etcd again; an unknown producer is never answered from memory.
func TestReadProducerBeforeTheFirstBatch(t *testing.T) {
	ctx := context.Background()
	s, c, prod := leaderWithProducer(t, "wide", 1000, true)
	reads := func() int64 { return s.Stats().ProducerReads }
	read := func(epoch int32, fresh bool, p int32) *metadata.ProducerView {
		t.Helper()
		v, err := c.ReadProducer(ctx, prod.ID, epoch, fresh, "wide", []int32{p})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	r0 := reads()
	start := time.Now()
	for p := range int32(100) {
		v := read(prod.Epoch, false, p)
		if e, known := v.Epoch(); !known || e != prod.Epoch || v.State(p) != nil {
			t.Fatalf("partition %d: epoch %d known %v state %+v; want epoch %d, known, no state", p, e, known, v.State(p), prod.Epoch)
		}
		if dup, err := v.Check(p, pb(prod.ID, prod.Epoch, 0, 1, 0)); dup >= 0 || err != nil {
			t.Fatalf("partition %d: first batch checks as %d, %v; want accepted", p, dup, err)
		}
	}
	if n := reads() - r0; n != 1 && time.Since(start) < readAge {
		t.Fatalf("100 ReadProducer calls within %v: %d etcd reads, want 1", time.Since(start), n)
	}
	r1 := reads()
	read(prod.Epoch, true, 0)
	if reads() != r1+1 {
		t.Fatalf("a fresh read was answered from memory")
	}
	if p, err := c.InitProducer(ctx, prod.ID, time.Hour); err != nil || p.Epoch != prod.Epoch+1 {
		t.Fatalf("init again: %+v, %v", p, err)
	}
	if e, known := read(prod.Epoch+1, false, 1).Epoch(); !known || e != prod.Epoch+1 || reads() != r1+2 {
		t.Fatalf("newer epoch: epoch %d known %v after %d reads; want %d, known, read again", e, known, reads()-r1, prod.Epoch+1)
	}
	// Never issued: unknown, and read every time.
	r2 := reads()
	for range 3 {
		v, err := c.ReadProducer(ctx, prod.ID+1000, 0, false, "wide", []int32{0})
		if err != nil {
			t.Fatal(err)
		}
		if _, known := v.Epoch(); known {
			t.Fatal("a producer never issued is known")
		}
	}
	if reads() != r2+3 {
		t.Fatalf("an unknown producer was answered from memory: %d reads for 3 calls", reads()-r2)
	}
}

// leaderWithProducer starts a leader over a topic of partitions and a
// client of it (leaderOver), and initializes a producer (state TTL one
// hour).
func leaderWithProducer(t *testing.T, topic string, partitions int32, rpc bool) (*Sequencer, *Client, metadata.Producer) {
	t.Helper()
	_, s, c := leaderOver(t, topic, partitions, rpc)
	prod, err := c.InitProducer(context.Background(), 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s, c, prod
}

// leaderOver creates a topic of partitions, starts sequencer "a" and waits
// until it leads, and returns its cluster and a client of it (over the
// SequencerService when rpc).
func leaderOver(t *testing.T, topic string, partitions int32, rpc bool) (*cluster, *Sequencer, *Client) {
	t.Helper()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(context.Background(), metadata.Topic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	cl.rpc = rpc
	s := cl.start(Config{ID: "a"})
	waitLeading(t, s)
	return cl, s, cl.client()
}
