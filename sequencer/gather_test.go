package sequencer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
)

// TestGatherOneBatchPerTick: four ingest nodes flush at the same ticks, as
// their wall-clock-aligned linger makes them, each commit arriving a few
// milliseconds apart (a PUT's jitter). Once the sequencer has seen all four,
// every tick's four commits are one batch, one etcd transaction: etcd writes
// follow the ticks, not the number of ingest nodes. Offsets stay dense.
func TestGatherOneBatchPerTick(t *testing.T) {
	const nodes, ticks, partitions = 4, 10, 100
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	// Generous, so that a loaded test machine's scheduling does not split
	// a tick; the jitter below is at most 3 ms, and ticks are farther
	// apart than Gather, as a node's linger is.
	const gather, every = 500 * time.Millisecond, 700 * time.Millisecond
	s := cl.start(Config{ID: "a", Gather: gather, CheckpointEvery: 1 << 30})
	waitLeading(t, s)
	client := cl.client()
	led := newLedger()
	start := time.Now()
	tick := func(k int) {
		time.Sleep(time.Until(start.Add(time.Duration(k) * every))) // the ingest nodes' clock, not a wait for a condition
		var wg sync.WaitGroup
		for n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // the PUTs' jitter, not a wait for a condition
				id := tier.FlushKey("", fmt.Sprintf("node-%d", n), uint64(k), time.Now())
				appends := flush("t", id, allParts(partitions), func(int32) int64 { return 3 })
				res, err := client.Commit(ctx, id, appends)
				if err != nil {
					t.Errorf("tick %d node %d: %v", k, n, err)
					return
				}
				led.add(t, id, appends, res)
			}()
		}
		wg.Wait()
	}
	tick(0) // the sequencer learns the four sources,
	tick(1) // and their rhythm
	before := s.Stats()
	rev0 := revision(t, meta)
	for k := 2; k < 2+ticks; k++ {
		tick(k)
	}
	if t.Failed() {
		t.FailNow()
	}
	led.check(t)
	st := s.Stats()
	batches, commits := st.Batches-before.Batches, st.Commits-before.Commits
	t.Logf("%d ticks of %d nodes: %d commits in %d batches, etcd revision +%d", ticks, nodes, commits, batches, revision(t, meta)-rev0)
	if commits != nodes*ticks || batches != ticks || st.BatchTxns-before.BatchTxns != ticks {
		t.Fatalf("%d commits in %d batches (%d transactions): want %d commits in %d batches, one per tick", commits, batches, st.BatchTxns-before.BatchTxns, nodes*ticks, ticks)
	}
}

// TestGatherLoneSourceNeverWaits: with one ingest node there is nobody to
// wait for, so even an hour-long Gather adds nothing, whatever its rhythm;
// nor does a commit whose id names no ingest node (not a flush key) make
// anybody wait for it.
func TestGatherLoneSourceNeverWaits(t *testing.T) {
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	s := cl.start(Config{ID: "a", Gather: time.Hour})
	waitLeading(t, s)
	client := cl.client()
	ids := []string{"objects/not-a-flush-key.vseg"}
	for k := range 5 {
		ids = append(ids, tier.FlushKey("", "node-0", uint64(k), time.Now()))
	}
	for _, id := range ids {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := client.Commit(cctx, id, flush("t", id, allParts(4), func(int32) int64 { return 1 }))
		cancel()
		if err != nil {
			t.Fatalf("commit %s: %v", id, err)
		}
	}
}

// TestAwaited: a batch waits for an ingest node whose next commit is due
// (half to one and a half periods after its last, at the batch's first
// arrival); not for one whose commit of this tick went into the previous
// batch (a late straggler's batch must not wait out the gather for the
// nodes that were on time), one that skipped a tick, or one whose rhythm
// is not known yet; silent sources are forgotten, and commits naming no
// node ("") are never awaited.
func TestAwaited(t *testing.T) {
	const period = 100 * time.Millisecond
	tick := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return tick.Add(d) }
	// A and B committed 5 ms into the tick; C's PUT was slow.
	sources := func() map[string]*source {
		return map[string]*source{
			"a": {last: at(5 * time.Millisecond), period: period},
			"b": {last: at(6 * time.Millisecond), period: period},
			"c": {last: at(-70 * time.Millisecond), period: period},
		}
	}
	for _, tc := range []struct {
		name     string
		in       []string
		earliest time.Duration
		want     bool
	}{
		{"the straggler's batch, 30 ms into the tick, does not wait for a and b", []string{"c"}, 30 * time.Millisecond, false},
		{"a's batch of the next tick waits for b and c", []string{"a"}, 105 * time.Millisecond, true},
		{"every node of the tick is in", []string{"a", "b", "c"}, 105 * time.Millisecond, false},
		{"two ticks later, a and b skipped one: not awaited", []string{"c"}, 240 * time.Millisecond, false},
	} {
		in := map[string]bool{}
		for _, n := range tc.in {
			in[n] = true
		}
		if got := awaited(sources(), in, at(tc.earliest), at(tc.earliest)); got != tc.want {
			t.Errorf("%s: awaited = %v, want %v", tc.name, got, tc.want)
		}
	}

	srcs := map[string]*source{
		"new":    (*source)(nil).commit(tick), // one commit: no rhythm yet
		"silent": {last: tick.Add(-2 * sourceForget), period: period},
		"":       {last: tick.Add(-period), period: period},
	}
	if awaited(srcs, map[string]bool{}, tick, tick) {
		t.Error("a source of unknown rhythm, a silent one or one naming no node: want no wait")
	}
	if _, ok := srcs["silent"]; ok {
		t.Error("a source silent for twice sourceForget is still remembered")
	}
	if s := srcs["new"].commit(tick.Add(period)); s.period != period || !s.last.Equal(tick.Add(period)) {
		t.Errorf("after a second commit: %+v, want period %v", s, period)
	}
}
