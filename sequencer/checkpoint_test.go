package sequencer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

// TestCheckpointsRideBatches: while commits keep coming, a due checkpoint
// is written in the next batch's transaction, so etcd's revision grows by
// exactly one per batch with checkpoints every second batch; once the
// commits stop, the checkpoint of the last batch is written alone (one
// more revision). A new leader recovering from it answers every commit's
// retry from its record and goes on from the same offsets.
func TestCheckpointsRideBatches(t *testing.T) {
	const commits = 30
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	a := cl.start(Config{ID: "a", CheckpointEvery: 2})
	waitLeading(t, a)
	client := cl.client()
	rev0 := revision(t, meta)
	first := map[string]string{}
	for i := range commits {
		id := fmt.Sprintf("o%d", i)
		res, err := client.Commit(ctx, id, []metadata.Append{blk("t", int32(i%3), 2)})
		if err != nil {
			t.Fatal(err)
		}
		first[id] = fmt.Sprint(outcome(res, nil))
	}
	st := a.Stats()
	if delta := revision(t, meta) - rev0; st.Batches != commits || delta != commits {
		t.Fatalf("%d commits: %d batches, etcd revision +%d, want one revision per batch", commits, st.Batches, delta)
	}
	if st.Checkpoints != commits/2-1 {
		t.Fatalf("%d checkpoints in %d batches, want %d (one every second batch, each in the next batch's transaction)", st.Checkpoints, st.Batches, commits/2-1)
	}
	if !testenv.Eventually(10*time.Second, func() bool { return a.Stats().Checkpoints == commits/2 }) {
		t.Fatalf("no checkpoint of the last batch once the commits stopped: %+v", a.Stats())
	}
	if delta := revision(t, meta) - rev0; delta != commits+1 {
		t.Fatalf("etcd revision +%d after the last checkpoint, want %d", delta, commits+1)
	}
	cp, recs, err := seqlog.New(meta).Recover(ctx)
	if err != nil || cp == nil || cp.Batch != uint64(st.Batches) || len(recs) != 0 {
		t.Fatalf("recovery: checkpoint %+v, %d records after it, %v; want the checkpoint of the last batch", cp, len(recs), err)
	}

	cl.kill("a")
	b := cl.start(Config{ID: "b"})
	waitLeading(t, b)
	for i := commits - 4; i < commits; i++ {
		id := fmt.Sprintf("o%d", i)
		res, err := client.Commit(ctx, id, []metadata.Append{blk("t", int32(i%3), 2)})
		if got := fmt.Sprint(outcome(res, err)); got != first[id] {
			t.Fatalf("retry of %s on the new leader: %s, first answer %s", id, got, first[id])
		}
	}
	res, err := client.Commit(ctx, "next", []metadata.Append{blk("t", 0, 1)})
	if err != nil || res[0].Base != 2*commits/3 {
		t.Fatalf("next commit: %+v, %v; want base %d", res, err, 2*commits/3)
	}
}

// TestProducerIdentitiesRereadTogether: four producers committing in turn
// come of age together: when one's identity is older than infoMaxAge,
// every other held for more than half of it is reread in the same etcd
// read, so the leader reads about once per infoMaxAge, not once per
// producer (four times as often).
func TestProducerIdentitiesRereadTogether(t *testing.T) {
	const producers, age, run = 4, 300 * time.Millisecond, 3 * time.Second
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: producers}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	a := cl.start(Config{ID: "a", infoMaxAge: age, pruneEvery: time.Hour})
	waitLeading(t, a)
	c := cl.client()
	var ids []int64
	for range producers {
		p, err := c.InitProducer(ctx, 0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
	}
	seqs := make([]int32, producers)
	start := time.Now()
	for i := 0; time.Since(start) < run; i++ {
		p := i % producers
		id := fmt.Sprintf("c%d", i)
		res, err := c.Commit(ctx, id, []metadata.Append{blk("t", int32(p), 1, pb(ids[p], 0, seqs[p], 1, 0))})
		if err != nil || res[0].Err != nil {
			t.Fatalf("commit %s: %+v, %v", id, res, err)
		}
		seqs[p]++
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	loads := a.Stats().ProducerLoads
	// Each producer's first commit reads it (fewer reads if they share a
	// batch); then a reread of all of them each time they come of age.
	limit := producers + int64(1+2*elapsed/age)
	t.Logf("%d producer reads in %v for %d producers at infoMaxAge %v (at most %d; one per producer per age would be %d)", loads, elapsed, producers, age, limit, producers*int64(elapsed/age))
	if loads > limit {
		t.Fatalf("%d producer identity reads in %v, want at most %d", loads, elapsed, limit)
	}
}
