package sequencer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

var errCrash = errors.New("crash (test)")

// failover runs three committers over 50 partitions against leader a
// (checkpoint every 3 batches) with candidate b waiting; a crashes at
// batch crashAt by hook (which ends a's term), b recovers from the
// checkpoint and the records after it and takes over. Offsets must stay
// dense, every commit be in exactly one record, and each commit's answer
// be the one its record holds — including the commit a crashed on, which
// its committer retried against b.
func failover(t *testing.T, crashAt uint64, after, rpc bool) {
	const partitions, committers, flushes = 50, 3, 15
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	pid, err := meta.InitProducer(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	cl.rpc = rpc
	var crashed atomic.Bool
	hook := func(term *seqlog.Term, batch uint64) error {
		if batch < crashAt || !crashed.CompareAndSwap(false, true) {
			return nil
		}
		if after {
			cl.kill("a") // a stops campaigning; its term ends with this error
		} else {
			// Resign first and let b take over: the write that follows
			// must be refused by the term fence.
			_ = term.Resign(ctx)
			testenv.Eventually(30*time.Second, func() bool {
				b := cl.node("b")
				return b != nil && b.Leading()
			})
		}
		return errCrash
	}
	cfg := Config{ID: "a", CheckpointEvery: 3}
	if after {
		cfg.afterAppend = hook
	} else {
		cfg.beforeAppend = func(term *seqlog.Term, batch uint64) error {
			_ = hook(term, batch) // resigned: the stale write goes on to etcd
			return nil
		}
	}
	a := cl.start(cfg)
	waitLeading(t, a)
	b := cl.start(Config{ID: "b", CheckpointEvery: 3})
	client := cl.client()
	led, answers := commitAll(t, client, pid.ID, partitions, committers, flushes)
	if !crashed.Load() || !b.Leading() || b.Stats().Batches == 0 {
		t.Fatalf("crashed %v, b leading %v with %+v: the failover did not happen", crashed.Load(), b.Leading(), b.Stats())
	}
	// The commits in flight when a died were retried, and counted
	// (varve.ingest.commit.retries).
	if client.CommitRetries() == 0 {
		t.Fatal("the failover retried no commit, or the retries were not counted")
	}
	led.check(t)
	checkRecords(t, meta, answers, a.Stats(), int64(crashAt)-1+boolInt(after))
	t.Logf("a: %+v; b: %+v", a.Stats(), b.Stats())
}

// commitAll runs committers, each committing flushes over the first 10 or
// more of partitions (committer 0 as idempotent producer pid on
// partition 0), and returns the blocks and the answers.
func commitAll(t *testing.T, client *Client, pid int64, partitions, committers, flushes int) (*ledger, map[string][]metadata.AppendResult) {
	return commitAllSeeded(t, client, pid, partitions, committers, flushes, 2)
}

func commitAllSeeded(t *testing.T, client *Client, pid int64, partitions, committers, flushes int, seed uint64) (*ledger, map[string][]metadata.AppendResult) {
	ctx := context.Background()
	led := newLedger()
	var mu sync.Mutex
	answers := map[string][]metadata.AppendResult{}
	var wg sync.WaitGroup
	for w := range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), seed))
			seq := int32(0)
			for f := range flushes {
				parts := allParts(int32(partitions))[:10+rng.IntN(partitions-10)]
				id := fmt.Sprintf("objects/w%d-f%d.vseg", w, f)
				appends := flush("t", id, parts, func(int32) int64 { return 1 + rng.Int64N(3) })
				if w == 0 { // one idempotent producer, on partition 0
					appends[0].Batches = []metadata.ProducerBatch{{ID: pid, FirstSeq: seq, Count: int32(appends[0].Records)}}
					seq += int32(appends[0].Records)
				}
				res, err := client.Commit(ctx, id, appends)
				if err != nil {
					t.Errorf("commit %s: %v", id, err)
					return
				}
				led.add(t, id, appends, res)
				mu.Lock()
				answers[id] = res
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return led, answers
}

// checkRecords asserts that every answered commit is in exactly one
// record, answered as recorded, and that the first term wrote aRecs
// records (unless aRecs < 0) and a checkpoint.
func checkRecords(t *testing.T, meta *metadata.Client, answers map[string][]metadata.AppendResult, a Stats, aRecs int64) {
	ctx := context.Background()
	recorded := recordedCommits(t, meta)
	for id, res := range answers {
		if len(recorded[id]) != 1 {
			t.Fatalf("commit %s is in %d records", id, len(recorded[id]))
		}
		if got, want := outcome(res, nil), outcome(recorded[id][0].Results, nil); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("commit %s answered %q, recorded %q", id, got, want)
		}
	}
	// a's term wrote its batches before the crash (and, if it died after
	// writing, the one it crashed on) and a checkpoint, nothing after.
	recs, err := seqlog.New(meta).Records(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, r := range recs {
		if r.Term == recs[0].Term {
			n++
		}
	}
	if (aRecs >= 0 && n != aRecs) || a.Checkpoints == 0 {
		t.Fatalf("a's term wrote %d records, want %d (a: %+v)", n, aRecs, a)
	}
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// TestFailoverAfterWrite: the leader dies after its batch is written and
// before it answers; the retried commits are answered from the record.
func TestFailoverAfterWrite(t *testing.T) { failover(t, 5, true, false) }

// TestFailoverAfterWriteRPC: the same through the SequencerService over
// HTTP, the leader found by its URL in the election.
func TestFailoverAfterWriteRPC(t *testing.T) { failover(t, 5, true, true) }

// TestFailoverStaleWrite: the leader's term ends just before it writes
// and b takes over; a's write is refused by the term fence (a goes back
// to campaigning), and the retries commit once through b.
func TestFailoverStaleWrite(t *testing.T) { failover(t, 5, false, false) }

// TestRetryAcrossCheckpoint: after a failover, retries of commits the
// checkpoint covers (answered from the batch its commit list names) and
// of commits after it (from the records replayed) get their first answers
// and write nothing.
func TestRetryAcrossCheckpoint(t *testing.T) {
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	a := cl.start(Config{ID: "a", CheckpointEvery: 2})
	waitLeading(t, a)
	client := cl.client()
	first := map[string][]metadata.AppendResult{}
	ids := []string{"o1", "o2", "o3"}
	for _, id := range ids {
		res, err := client.Commit(ctx, id, []metadata.Append{blk("t", 0, 2), blk("t", 1, 1)})
		if err != nil {
			t.Fatal(err)
		}
		first[id] = res
	}
	if st := a.Stats(); st.Checkpoints != 1 || st.Batches != 3 {
		t.Fatalf("a: %+v, want 3 batches and a checkpoint after the second", st)
	}
	cl.kill("a")
	b := cl.start(Config{ID: "b"})
	waitLeading(t, b)
	rev := revision(t, meta)
	for _, id := range ids {
		res, err := client.Commit(ctx, id, []metadata.Append{blk("t", 0, 2), blk("t", 1, 1)})
		if err != nil || fmt.Sprint(outcome(res, nil)) != fmt.Sprint(outcome(first[id], nil)) {
			t.Fatalf("retry of %s: %+v, %v; first answer %+v", id, res, err, first[id])
		}
	}
	if r := revision(t, meta); r != rev {
		t.Fatalf("retries wrote to etcd (revision %d -> %d)", rev, r)
	}
	if res, err := client.Commit(ctx, "o4", []metadata.Append{blk("t", 0, 1)}); err != nil || res[0].Base != 6 {
		t.Fatalf("next commit: %+v, %v; want base 6", res, err)
	}
}
