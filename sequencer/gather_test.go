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
	tick(0) // the sequencer learns the four sources
	before := s.Stats()
	rev0 := revision(t, meta)
	for k := 1; k <= ticks; k++ {
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
// wait for, so even an hour-long Gather adds nothing; and commits whose id
// names no ingest node (not a flush key) are never waited for either.
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
	ids = append(ids, "objects/also-not-one.vseg")
	for _, id := range ids {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := client.Commit(cctx, id, flush("t", id, allParts(4), func(int32) int64 { return 1 }))
		cancel()
		if err != nil {
			t.Fatalf("commit %s: %v", id, err)
		}
	}
}

// TestAwaitedForgetsSilentSources: a batch waits for a source that
// committed in an earlier tick (before since) within sourceActive and is
// not in it yet; not for one that committed after since (in the previous
// batch of this tick, or flushing faster than Gather); a source silent for
// longer than sourceActive (an idle or dead ingest node) is forgotten; and
// commits naming no node ("") are never awaited.
func TestAwaitedForgetsSilentSources(t *testing.T) {
	now := time.Now()
	since := now.Add(-10 * time.Millisecond)
	sources := map[string]time.Time{
		"a": now.Add(-100 * time.Millisecond),
		"b": now.Add(-sourceActive / 2),
		"c": now.Add(-2 * sourceActive),
		"d": now.Add(-time.Millisecond),
		"":  now.Add(-100 * time.Millisecond),
		"e": now.Add(-100 * time.Millisecond),
	}
	if !awaited(sources, map[string]bool{"a": true, "e": true}, now, since) {
		t.Fatal("b committed in an earlier tick and is not in the batch: want awaited")
	}
	if _, ok := sources["c"]; ok {
		t.Fatal("c, silent for twice sourceActive, is still a source")
	}
	if awaited(sources, map[string]bool{"a": true, "b": true, "e": true}, now, since) {
		t.Fatal("every source of an earlier tick is in the batch (d committed after since, \"\" names none): want no wait")
	}
}
