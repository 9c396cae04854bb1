package fetch_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

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
			meta := &countingIndex{Client: connect(t, e.endpoints)}
			ca, err := meta.NewCache(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(ca.Close)
			f := fetch.NewFetcher(e.store, meta, ca, blockcache.NewMemory(64<<20), nil, nil)
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
