package sequencer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/varve-io/varve/metadata"
)

// TestDenseOffsetsOneTxnPerBatch: four committers flush concurrently over
// a topic of 1,000 partitions, each flush a random subset of them. Every
// partition's offsets come out dense (no gap, no overlap), every commit is
// in exactly one batch record, and etcd's revision grows by exactly one
// per batch: each batch is one transaction, whatever the partitions.
func TestDenseOffsetsOneTxnPerBatch(t *testing.T) {
	const partitions, committers, flushes = 1000, 4, 25
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "big", Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	s := cl.start(Config{ID: "a", CheckpointEvery: 1 << 30})
	waitLeading(t, s)
	client := cl.client()
	rev0 := revision(t, meta)
	led := newLedger()
	var wg sync.WaitGroup
	for w := range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for f := range flushes {
				parts := allParts(partitions)
				rng.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
				parts = parts[:1+rng.IntN(partitions)]
				id := fmt.Sprintf("objects/w%d-f%d.vseg", w, f)
				appends := flush("big", id, parts, func(int32) int64 { return 1 + rng.Int64N(5) })
				res, err := client.Commit(ctx, id, appends)
				if err != nil {
					t.Errorf("commit %s: %v", id, err)
					return
				}
				led.add(t, id, appends, res)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	led.check(t)
	st := s.Stats()
	delta := revision(t, meta) - rev0
	t.Logf("%d commits in %d batches, %d batch txns, etcd revision +%d", st.Commits, st.Batches, st.BatchTxns, delta)
	if st.Commits != committers*flushes || st.Batches > st.Commits || st.BatchTxns != st.Batches || delta != st.Batches {
		t.Fatalf("stats %+v, revision delta %d: want %d commits, one transaction per batch", st, delta, committers*flushes)
	}
	recorded := recordedCommits(t, meta)
	for w := range committers {
		for f := range flushes {
			if id := fmt.Sprintf("objects/w%d-f%d.vseg", w, f); len(recorded[id]) != 1 {
				t.Fatalf("commit %s is in %d records", id, len(recorded[id]))
			}
		}
	}
}

// TestRetrySameObject: a commit repeated with the same id — answered or
// not — gets the first answer and adds nothing.
func TestRetrySameObject(t *testing.T) {
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	s := cl.start(Config{ID: "a"})
	waitLeading(t, s)
	client := cl.client()
	appends := flush("t", "o1", allParts(3), func(p int32) int64 { return int64(p) + 1 })
	first, err := client.Commit(ctx, "o1", appends)
	if err != nil {
		t.Fatal(err)
	}
	rev := revision(t, meta)
	again, err := client.Commit(ctx, "o1", appends)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if first[i].Base != again[i].Base || again[i].Err != nil {
			t.Fatalf("retry answered %+v, first %+v", again[i], first[i])
		}
	}
	if r := revision(t, meta); r != rev {
		t.Fatalf("retry wrote to etcd (revision %d -> %d)", rev, r)
	}
	next, err := client.Commit(ctx, "o2", appends)
	if err != nil || next[2].Base != 3 {
		t.Fatalf("next commit: %+v, %v; want partition 2 at 3", next, err)
	}
}

// TestManyTopics: flushes spanning more topics than one transaction can
// compare one by one (150) still commit densely, batched with flushes of
// few topics.
func TestManyTopics(t *testing.T) {
	ctx := context.Background()
	meta := connectEtcd(t)
	var names []string
	for i := range 150 {
		names = append(names, fmt.Sprintf("t%03d", i))
		if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: names[i], Partitions: 2}); err != nil {
			t.Fatal(err)
		}
	}
	cl := newCluster(t, meta)
	waitLeading(t, cl.start(Config{ID: "a"}))
	client := cl.client()
	led := newLedger()
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range 8 {
				id := fmt.Sprintf("o-%d-%d", w, f)
				var appends []metadata.Append
				for i, n := range names {
					if w == 0 || i%40 == w { // committer 0 spans every topic
						appends = append(appends, flush(n, id, []int32{int32(f % 2)}, func(int32) int64 { return 2 })...)
					}
				}
				res, err := client.Commit(ctx, id, appends)
				if err != nil {
					t.Errorf("commit %s: %v", id, err)
					return
				}
				led.add(t, id, appends, res)
			}
		}()
	}
	wg.Wait()
	if led.check(t) != 300 {
		t.Fatalf("blocks on %d partitions, want 300", len(led.parts))
	}
}
