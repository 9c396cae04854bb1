package ingest_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// countingCommitter wraps a Committer and records each Commit's appends.
type countingCommitter struct {
	ingest.Committer
	mu      sync.Mutex
	commits [][]metadata.Append
}

func (c *countingCommitter) Commit(ctx context.Context, id string, appends []metadata.Append) ([]metadata.AppendResult, error) {
	c.mu.Lock()
	c.commits = append(c.commits, append([]metadata.Append(nil), appends...))
	c.mu.Unlock()
	return c.Committer.Commit(ctx, id, appends)
}

// metaTopicFS connects to a new etcd and creates topic "t" of partitions
// there; it returns the client, a filesystem store and a topic cache.
func metaTopicFS(t *testing.T, partitions int32) (*metadata.Client, tier.Store, *metadata.Cache) {
	t.Helper()
	ctx := context.Background()
	meta, fs := metaAndStore(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	cache, err := meta.NewCache(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	return meta, fs, cache
}

// One flush is one Commit carrying every partition's block, seen through
// a wrapped Committer.
func TestOneCommitPerFlush(t *testing.T) {
	ctx := context.Background()
	meta, fs, cache := metaTopicFS(t, 2)
	cc := &countingCommitter{Committer: meta}
	in, err := ingest.New(ingest.Config{NodeID: "a", Linger: time.Hour}, fs, cc, cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })

	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, p := range []int32{0, 1, 1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := in.Produce(ctx, "t", []ingest.Record{{Partition: p, Record: segment.Record{Value: []byte("v")}}})
			errs <- err
		}()
	}
	if !testenv.Eventually(10*time.Second, func() bool { _, n := in.Pending(); return n == 3 }) {
		t.Fatal("records not pending")
	}
	if err := in.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if len(cc.commits) != 1 || len(cc.commits[0]) != 2 {
		t.Fatalf("commits %+v, want one with an append per partition", cc.commits)
	}
	for _, a := range cc.commits[0] {
		if want := int64(1 + a.Partition); a.Records != want {
			t.Fatalf("partition %d: %d records, want %d", a.Partition, a.Records, want)
		}
	}
}

// Partitions added an instant ago are accepted even when this node's topic
// cache has not seen the change yet (here: a cache whose watch is stopped).
func TestProduceToPartitionTheCacheHasNotSeen(t *testing.T) {
	ctx := context.Background()
	meta, fs, cache := metaTopicFS(t, 1)
	cache.Close() // frozen: still says 1 partition
	in, err := ingest.New(ingest.Config{NodeID: "a", Linger: time.Millisecond}, fs, meta, cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	if _, err := meta.UpdateTopic(ctx, "t", func(tp *metadata.Topic) error { tp.Partitions = 3; return nil }); err != nil {
		t.Fatal(err)
	}
	res, err := in.Produce(ctx, "t", []ingest.Record{{Partition: 2, Record: segment.Record{Value: []byte("v")}}})
	if err != nil || len(res) != 1 || res[0].Partition != 2 {
		t.Fatalf("produce to the new partition: %v, %v", res, err)
	}
	// Still out of range in etcd too: refused.
	if _, err := in.Produce(ctx, "t", []ingest.Record{{Partition: 3, Record: segment.Record{Value: []byte("v")}}}); !errors.Is(err, metadata.ErrPartitionOutOfRange) {
		t.Fatalf("produce to partition 3 of 3: %v", err)
	}
}
