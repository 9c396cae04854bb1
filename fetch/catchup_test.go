package fetch_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/metadata"
)

// countingIndex counts the index lookups the read path makes in etcd.
type countingIndex struct {
	*metadata.Client
	lookups atomic.Int64
}

func (c *countingIndex) LookupIndex(ctx context.Context, topic string, p int32, offset int64) (metadata.IndexEntry, metadata.PartitionState, bool, int64, error) {
	c.lookups.Add(1)
	return c.Client.LookupIndex(ctx, topic, p, offset)
}

// countingFetcher is a fetcher over e whose index lookups in etcd are
// counted, and its watched cache.
func countingFetcher(t *testing.T, e *env) (*fetch.Fetcher, *countingIndex, *metadata.Cache) {
	t.Helper()
	meta := &countingIndex{Client: connect(t, e.endpoints)}
	ca, err := meta.NewCache(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Close)
	return fetch.NewFetcher(e.store, meta, ca, blockcache.NewMemory(64<<20), nil, nil), meta, ca
}

// TestTailFetchesCatchUpInsteadOfReadingTheIndex: fetches at the end of a
// partition (maxWait 0, as a consumer polls) do not read the index or the
// sequencer's records in etcd: the watched cache catches up with etcd's
// revision (shared rounds) and answers. A record acknowledged an instant
// before a fetch on another node is still read by it, on both commit paths.
func TestTailFetchesCatchUpInsteadOfReadingTheIndex(t *testing.T) {
	for _, path := range []string{"direct", "sequencer"} {
		t.Run(path, func(t *testing.T) {
			ctx := context.Background()
			const parts = 50
			e := newEnv(t)
			e.createTopic(t, "tail", parts)
			f, meta, _ := countingFetcher(t, e)
			var committer = e.ingester(t, e.writer)
			if path == "sequencer" {
				committer = e.ingester(t, e.sequencer(t))
			}
			want := log{}
			for round := range 5 {
				produce(t, committer, "tail", parts, 1, path, want)
				// Right after the acks, every partition's new record is
				// read at once, by 50 concurrent fetches.
				var wg sync.WaitGroup
				for p := range int32(parts) {
					wg.Go(func() {
						off := int64(round)
						res, err := f.Fetch(ctx, "tail", p, off, 1<<20, 0)
						if err != nil || len(res.Records) != 1 || string(res.Records[0].Value) != want[p][off] {
							t.Errorf("fetch %d/%d right after its ack: %+v, %v", p, off, res, err)
						}
					})
				}
				wg.Wait()
				// At the tail: nothing new, answered empty.
				for p := range int32(parts) {
					wg.Go(func() {
						res, err := f.Fetch(ctx, "tail", p, int64(round+1), 1<<20, 0)
						if err != nil || len(res.Records) != 0 || res.HighWatermark != int64(round+1) {
							t.Errorf("tail fetch %d/%d: %+v, %v", p, round+1, res, err)
						}
					})
				}
				wg.Wait()
			}
			if n := meta.lookups.Load(); n != 0 {
				t.Fatalf("%d index lookups in etcd for %d fetches, want 0 (the cache catches up)", n, 2*5*parts)
			}
			// Past the end is still out of range.
			if _, err := f.Fetch(ctx, "tail", 0, 99, 1<<20, 0); err == nil {
				t.Fatal("a fetch past the high watermark succeeded")
			}
		})
	}
}

// TestLongPollsCatchUpOnlyAtTheirDeadline: long polls at the tail (as
// consumers poll, many partitions per call, and one partition per call)
// are woken by the watch when records are acknowledged and read etcd for
// none of them; a long poll that nothing wakes catches up once, at its
// deadline, before answering empty.
func TestLongPollsCatchUpOnlyAtTheirDeadline(t *testing.T) {
	ctx := context.Background()
	const parts = 20
	e := newEnv(t)
	e.createTopic(t, "poll", parts)
	f, meta, ca := countingFetcher(t, e)
	committer := e.ingester(t, e.sequencer(t))
	want := log{}
	before := ca.CatchUpRounds()
	for round := range 3 {
		var wg sync.WaitGroup
		wg.Go(func() {
			// Every partition in one call, at the tail.
			ps := make([]fetch.PartitionFetch, parts)
			for p := range ps {
				ps[p] = fetch.PartitionFetch{Partition: int32(p), Offset: int64(round)}
			}
			res, err := f.FetchPartitions(ctx, "poll", ps, 1<<20, time.Minute, false)
			n := 0
			for _, r := range res {
				n += len(r.Records)
			}
			if err != nil || n == 0 {
				t.Errorf("round %d: long poll of every partition: %d records, %v", round, n, err)
			}
		})
		wg.Go(func() {
			res, err := f.Fetch(ctx, "poll", 0, int64(round), 1<<20, time.Minute)
			if err != nil || len(res.Records) != 1 || string(res.Records[0].Value) != "sequencer-0-0" {
				t.Errorf("round %d: long poll of partition 0: %+v, %v", round, res, err)
			}
		})
		// Both polls are waiting (or about to); the acknowledgement wakes them.
		time.Sleep(50 * time.Millisecond)
		produce(t, committer, "poll", parts, 1, "sequencer", want)
		wg.Wait()
	}
	if n := ca.CatchUpRounds() - before; n != 0 {
		t.Fatalf("%d catch-up rounds for long polls woken by records, want 0", n)
	}
	// Nothing comes: each poll catches up once, at its deadline.
	res, err := f.Fetch(ctx, "poll", 0, 3, 1<<20, 100*time.Millisecond)
	if err != nil || len(res.Records) != 0 || res.HighWatermark != 3 {
		t.Fatalf("empty long poll: %+v, %v", res, err)
	}
	if n := ca.CatchUpRounds() - before; n != 1 {
		t.Fatalf("%d catch-up rounds for a long poll that timed out, want 1", n)
	}
	if _, err := f.FetchPartitions(ctx, "poll", []fetch.PartitionFetch{{Partition: 1, Offset: 3}}, 1<<20, 100*time.Millisecond, false); err != nil {
		t.Fatal(err)
	}
	if n := ca.CatchUpRounds() - before; n != 2 {
		t.Fatalf("%d catch-up rounds for two long polls that timed out, want 2", n)
	}
	// Past the end is out of range at once, whatever the wait.
	start := time.Now()
	if _, err := f.Fetch(ctx, "poll", 0, 99, 1<<20, time.Minute); !errors.Is(err, fetch.ErrOffsetOutOfRange) {
		t.Fatalf("a long poll past the high watermark: %v, want out of range", err)
	}
	rs, err := f.FetchPartitions(ctx, "poll", []fetch.PartitionFetch{{Partition: 0, Offset: 99}}, 1<<20, time.Minute, false)
	if err != nil || !errors.Is(rs[0].Err, fetch.ErrOffsetOutOfRange) {
		t.Fatalf("a long poll of many partitions past the high watermark: %+v, %v; want out of range", rs, err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("out-of-range long polls took %v: they waited", d)
	}
	if n := meta.lookups.Load(); n != 0 {
		t.Fatalf("%d index lookups in etcd, want 0", n)
	}
}
