package sequencer

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

// idemStep is one commit, or (init > 0) an epoch bump of producer init.
type idemStep struct {
	name    string
	id      string
	init    int64
	appends []metadata.Append
}

func blk(topic string, p int32, n int64, bs ...metadata.ProducerBatch) metadata.Append {
	return metadata.Append{Topic: topic, Partition: p, Object: "obj", Len: 10 * n, Records: n, Batches: bs}
}

func pb(id int64, epoch, seq, count int32, index int64) metadata.ProducerBatch {
	return metadata.ProducerBatch{ID: id, Epoch: epoch, FirstSeq: seq, Count: count, Index: index}
}

// idemSteps are the cases of docs/idempotence.md against producers 1 and
// 2 (the first ids a fresh cluster issues) on topic idem of 2 partitions.
var idemSteps = []idemStep{
	{name: "accepted", id: "c1", appends: []metadata.Append{blk("idem", 0, 4, pb(1, 0, 0, 3, 1))}},
	{name: "retry of the same object", id: "c1", appends: []metadata.Append{blk("idem", 0, 4, pb(1, 0, 0, 3, 1))}},
	{name: "duplicate", id: "c2", appends: []metadata.Append{blk("idem", 0, 3, pb(1, 0, 0, 3, 0))}},
	{name: "gap", id: "c3", appends: []metadata.Append{blk("idem", 0, 2, pb(1, 0, 5, 2, 0))}},
	{name: "next", id: "c4", appends: []metadata.Append{blk("idem", 0, 2, pb(1, 0, 3, 2, 0))}},
	{name: "block shared with a duplicate", id: "c5", appends: []metadata.Append{blk("idem", 0, 5, pb(2, 0, 0, 2, 0), pb(1, 0, 3, 2, 2))}},
	{name: "epoch bump", init: 1},
	{name: "fenced", id: "c6", appends: []metadata.Append{blk("idem", 1, 1, pb(1, 0, 0, 1, 0))}},
	{name: "new epoch must start at 0", id: "c7", appends: []metadata.Append{blk("idem", 1, 1, pb(1, 1, 5, 1, 0))}},
	{name: "new epoch and another producer", id: "c8", appends: []metadata.Append{blk("idem", 1, 2, pb(1, 1, 0, 2, 0)), blk("idem", 0, 1, pb(2, 0, 0, 1, 0))}},
	{name: "unknown producer", id: "c9", appends: []metadata.Append{blk("idem", 0, 1, pb(999, 0, 0, 1, 0))}},
	{name: "epoch never issued", id: "c10", appends: []metadata.Append{blk("idem", 0, 1, pb(1, 2, 0, 1, 0))}},
	{name: "missing topic, partition out of range, and a good block", id: "c11", appends: []metadata.Append{
		blk("nope", 0, 1), blk("idem", 5, 1), blk("idem", 1, 3, pb(1, 1, 2, 3, 0))}},
	{name: "duplicate with another count", id: "c12", appends: []metadata.Append{blk("idem", 1, 3, pb(1, 1, 0, 3, 0))}},
	{name: "plain records", id: "c13", appends: []metadata.Append{blk("idem", 0, 7), blk("idem", 1, 1)}},
}

var sentinels = []error{metadata.ErrTopicNotFound, metadata.ErrPartitionOutOfRange, metadata.ErrBlockRefused,
	metadata.ErrProducerFenced, metadata.ErrOutOfOrderSequence, metadata.ErrUnknownProducer, metadata.ErrInvalidArgument}

// outcome flattens results into comparable strings.
func outcome(res []metadata.AppendResult, err error) []string {
	errStr := func(e error) string {
		if e == nil {
			return "ok"
		}
		s := e.Error()
		for _, sn := range sentinels {
			if errors.Is(e, sn) {
				s += " [is " + sn.Error() + "]"
			}
		}
		return s
	}
	out := []string{"call: " + errStr(err)}
	for i, r := range res {
		out = append(out, fmt.Sprintf("append %d: base %d: %s", i, r.Base, errStr(r.Err)))
		for j, b := range r.Batches {
			out = append(out, fmt.Sprintf("  batch %d: base %d dup %v: %s", j, b.Base, b.Duplicate, errStr(b.Err)))
		}
	}
	return out
}

// runIdem runs idemSteps through c and returns each step's outcome and
// producer 1's view of both partitions at the end.
func runIdem(t *testing.T, meta *metadata.Client, c ingest.Committer) ([][]string, []string) {
	ctx := context.Background()
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "idem", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= 2; want++ {
		if p, err := c.InitProducer(ctx, 0, time.Hour); err != nil || p.ID != want {
			t.Fatalf("init producer: %+v, %v; want id %d", p, err, want)
		}
	}
	var outs [][]string
	for _, s := range idemSteps {
		if s.init > 0 {
			p, err := c.InitProducer(ctx, s.init, time.Hour)
			outs = append(outs, []string{fmt.Sprintf("init %d: epoch %d %v", s.init, p.Epoch, err)})
			continue
		}
		res, err := c.Commit(ctx, s.id, s.appends)
		outs = append(outs, outcome(res, err))
	}
	v, err := c.ReadProducer(ctx, 1, 1, false, "idem", []int32{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	epoch, known := v.Epoch()
	view := []string{fmt.Sprintf("epoch %d known %v", epoch, known)}
	for p := range int32(2) {
		view = append(view, fmt.Sprintf("p%d: %+v", p, v.State(p)))
		dup, err := v.Check(p, pb(1, 1, 0, 2, 0))
		view = append(view, fmt.Sprintf("p%d check seq 0: %d %v", p, dup, err))
	}
	return outs, view
}

// TestIdempotenceMatchesDirect runs the same commits through the direct
// commit path and through the sequencer (in process, and over the
// SequencerService), each over its own etcd, via the ingest.Committer
// interface: every result (offsets, duplicates,
// refusals, their messages and sentinels) and the producer's state after
// must be identical.
func TestIdempotenceMatchesDirect(t *testing.T) {
	direct := connectEtcd(t)
	wantOuts, wantView := runIdem(t, direct, direct)
	for i, s := range idemSteps {
		t.Logf("%s: %q", s.name, wantOuts[i])
	}

	for _, rpc := range []bool{false, true} {
		meta := connectEtcd(t)
		cl := newCluster(t, meta)
		cl.rpc = rpc
		waitLeading(t, cl.start(Config{ID: "a"}))
		gotOuts, gotView := runIdem(t, meta, cl.client())
		for i, s := range idemSteps {
			if !reflect.DeepEqual(gotOuts[i], wantOuts[i]) {
				t.Errorf("rpc %v, step %q:\nsequencer %q\ndirect    %q", rpc, s.name, gotOuts[i], wantOuts[i])
			}
		}
		if !reflect.DeepEqual(gotView, wantView) {
			t.Errorf("rpc %v, producer view:\nsequencer %q\ndirect    %q", rpc, gotView, wantView)
		}
	}
}

// TestExpiredProducersPruned: a producer idle past its producer_state_ttl
// (its etcd lease expired) leaves the leader's state and the next
// checkpoint, while a live one stays; when it comes back its batches get
// the same ErrUnknownProducer answer as on the direct path, and so does a
// new leader recovering from that checkpoint.
func TestExpiredProducersPruned(t *testing.T) {
	ctx := context.Background()
	direct := connectEtcd(t)
	meta := connectEtcd(t)
	for _, m := range []*metadata.Client{direct, meta} {
		if _, err := m.CreateTopic(ctx, metadata.Topic{Name: "idem", Partitions: 2}); err != nil {
			t.Fatal(err)
		}
	}
	cl := newCluster(t, meta)
	a := cl.start(Config{ID: "a", CheckpointEvery: 1, pruneEvery: time.Nanosecond})
	waitLeading(t, a)
	c := cl.client()
	// Producer 1 lives 2 s (etcd's minimum) after its last commit,
	// producer 2 an hour; the same on the direct path's etcd.
	var gone, live int64
	for _, cm := range []ingest.Committer{direct, c} {
		short, err := cm.InitProducer(ctx, 0, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		long, err := cm.InitProducer(ctx, 0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		gone, live = short.ID, long.ID
	}
	commit := func(cm ingest.Committer, id string, appends ...metadata.Append) []string {
		t.Helper()
		res, err := cm.Commit(ctx, id, appends)
		return outcome(res, err)
	}
	for _, cm := range []ingest.Committer{direct, c} {
		if out := commit(cm, "c1", blk("idem", 0, 2, pb(gone, 0, 0, 2, 0)), blk("idem", 1, 1, pb(live, 0, 0, 1, 0))); out[1] != "append 0: base 0: ok" || out[3] != "append 1: base 0: ok" {
			t.Fatalf("first commit: %q", out)
		}
	}
	// checkpointed waits for the checkpoint after batch and returns the
	// producers it holds.
	checkpointed := func(batch uint64) map[int64]bool {
		t.Helper()
		var cp *seqlog.Checkpoint
		if !testenv.Eventually(30*time.Second, func() bool {
			var err error
			if cp, _, err = a.log.Recover(ctx); err != nil {
				t.Fatal(err)
			}
			return cp != nil && cp.Batch >= batch
		}) {
			t.Fatalf("no checkpoint after batch %d", batch)
		}
		ids := map[int64]bool{}
		for _, ps := range cp.Producers {
			ids[ps.ID] = true
		}
		return ids
	}
	if ids := checkpointed(1); !ids[gone] || !ids[live] {
		t.Fatalf("checkpoint holds producers %v, want %d and %d", ids, gone, live)
	}
	// Producer 1's lease expires on both etcds.
	if !testenv.Eventually(30*time.Second, func() bool {
		for _, m := range []*metadata.Client{direct, meta} {
			if v, err := m.ReadProducer(ctx, gone, 0, false, "idem", []int32{0}); err != nil {
				t.Fatal(err)
			} else if _, known := v.Epoch(); known {
				return false
			}
		}
		return true
	}) {
		t.Fatal("producer 1's state never expired")
	}
	// A commit of producer 2 writes a batch and the next checkpoint.
	for _, cm := range []ingest.Committer{direct, c} {
		if out := commit(cm, "c2", blk("idem", 1, 1, pb(live, 0, 1, 1, 0))); out[1] != "append 0: base 1: ok" {
			t.Fatalf("second commit: %q", out)
		}
	}
	if ids := checkpointed(2); ids[gone] || !ids[live] {
		t.Fatalf("checkpoint after expiry holds producers %v, want only %d", ids, live)
	}
	a.mu.Lock()
	st := a.cur.st
	a.mu.Unlock()
	st.mu.RLock()
	_, held := st.producers[gone]
	st.mu.RUnlock()
	if held {
		t.Fatalf("the leader still holds expired producer %d", gone)
	}
	// Producer 1 comes back, with its next sequence: unknown, as on the
	// direct path; also after a failover to a leader recovering from the
	// pruned checkpoint.
	want := commit(direct, "c3", blk("idem", 0, 1, pb(gone, 0, 2, 1, 0)))
	if len(want) != 3 || !strings.Contains(want[2], "[is "+metadata.ErrUnknownProducer.Error()+"]") {
		t.Fatalf("direct path: %q, want an unknown producer", want)
	}
	if got := commit(c, "c3", blk("idem", 0, 1, pb(gone, 0, 2, 1, 0))); !reflect.DeepEqual(got, want) {
		t.Fatalf("sequencer: %q, want %q as on the direct path", got, want)
	}
	b := cl.start(Config{ID: "b", CheckpointEvery: 1})
	cl.kill("a")
	waitLeading(t, b)
	want = commit(direct, "c4", blk("idem", 0, 1, pb(gone, 0, 0, 1, 0)))
	if got := commit(c, "c4", blk("idem", 0, 1, pb(gone, 0, 0, 1, 0))); !reflect.DeepEqual(got, want) || !strings.Contains(want[2], "[is "+metadata.ErrUnknownProducer.Error()+"]") {
		t.Fatalf("after failover: %q, want %q as on the direct path", got, want)
	}
}
