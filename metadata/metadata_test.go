package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

func connect(t *testing.T) *metadata.Client {
	t.Helper()
	c, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTopicValidation(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "ok", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		t    metadata.Topic
		want error
	}{
		{"empty name", metadata.Topic{Name: "", Partitions: 1}, metadata.ErrInvalidArgument},
		{"dot", metadata.Topic{Name: ".", Partitions: 1}, metadata.ErrInvalidArgument},
		{"dotdot", metadata.Topic{Name: "..", Partitions: 1}, metadata.ErrInvalidArgument},
		{"slash", metadata.Topic{Name: "a/b", Partitions: 1}, metadata.ErrInvalidArgument},
		{"space", metadata.Topic{Name: "a b", Partitions: 1}, metadata.ErrInvalidArgument},
		{"unicode", metadata.Topic{Name: "é", Partitions: 1}, metadata.ErrInvalidArgument},
		{"too long", metadata.Topic{Name: strings.Repeat("a", 250), Partitions: 1}, metadata.ErrInvalidArgument},
		{"zero partitions", metadata.Topic{Name: "z", Partitions: 0}, metadata.ErrInvalidArgument},
		{"negative partitions", metadata.Topic{Name: "z", Partitions: -1}, metadata.ErrInvalidArgument},
		{"too many partitions", metadata.Topic{Name: "z", Partitions: metadata.MaxPartitions + 1}, metadata.ErrInvalidArgument},
		{"bad cleanup", metadata.Topic{Name: "z", Partitions: 1, CleanupPolicy: "shred"}, metadata.ErrInvalidArgument},
		{"bad retention", metadata.Topic{Name: "z", Partitions: 1, RetentionMs: -5}, metadata.ErrInvalidArgument},
		{"bad max record", metadata.Topic{Name: "z", Partitions: 1, MaxRecordBytes: -1}, metadata.ErrInvalidArgument},
		{"exists", metadata.Topic{Name: "ok", Partitions: 5}, metadata.ErrTopicExists},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.CreateTopic(ctx, tc.t)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			ts, err := c.ListTopics(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(ts) != 1 || ts[0].Name != "ok" || ts[0].Partitions != 3 {
				t.Fatalf("topics changed: %+v", ts)
			}
		})
	}
	// A name of exactly 249 characters is fine.
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: strings.Repeat("x", 249), Partitions: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestTopicLifecycle(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	tp, err := c.CreateTopic(ctx, metadata.Topic{Name: "events", Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if tp.ID == "" || tp.RetentionMs != metadata.DefaultRetentionMs || tp.CleanupPolicy != "delete" || tp.MaxRecordBytes != metadata.DefaultMaxRecord {
		t.Fatalf("defaults not filled: %+v", tp)
	}
	got, err := c.GetTopic(ctx, "events")
	if err != nil || got != tp {
		t.Fatalf("get: %+v %v", got, err)
	}
	if _, err := c.Commit(ctx, "c1", []metadata.Append{{Topic: "events", Partition: 0, Object: "o1", Len: 10, Records: 5}}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTopic(ctx, "events"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetTopic(ctx, "events"); !errors.Is(err, metadata.ErrTopicNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := c.DeleteTopic(ctx, "events"); !errors.Is(err, metadata.ErrTopicNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// Re-created topics start from offset 0 with a new id.
	tp2, err := c.CreateTopic(ctx, metadata.Topic{Name: "events", Partitions: 4})
	if err != nil || tp2.ID == tp.ID {
		t.Fatalf("recreate: %+v %v", tp2, err)
	}
	res, err := c.Commit(ctx, "c2", []metadata.Append{{Topic: "events", Partition: 0, Object: "o2", Len: 10, Records: 5}})
	if err != nil || res[0].Base != 0 {
		t.Fatalf("commit after recreate: %+v %v", res, err)
	}
}

func TestCommitDenseUnderConcurrency(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	// Separate clients act as separate ingest nodes.
	const writers, commits = 6, 25
	type got struct {
		p          int32
		base, n    int64
		commitName string
	}
	var mu sync.Mutex
	var all []got
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range commits {
				id := fmt.Sprintf("w%d-%d", w, i)
				var apps []metadata.Append
				for p := int32(0); p < 3; p++ {
					apps = append(apps, metadata.Append{Topic: "t", Partition: p, Object: id, Off: int64(p) * 100, Len: 100, Records: int64(1 + (w+i+int(p))%4)})
				}
				res, err := c.Commit(ctx, id, apps)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for j, r := range res {
					if r.Err != nil {
						t.Error(r.Err)
					}
					all = append(all, got{apps[j].Partition, r.Base, apps[j].Records, id})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Six writers on the same three partitions conflict; each lost
	// transaction is counted (varve.ingest.commit.retries).
	if c.CommitRetries() == 0 {
		t.Fatal("no commit conflict was counted")
	}
	t.Logf("%d commits, %d conflicting attempts retried", writers*commits, c.CommitRetries())
	states, err := c.PartitionStates(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	for p := int32(0); p < 3; p++ {
		covered := map[int64]bool{}
		var total int64
		for _, g := range all {
			if g.p != p {
				continue
			}
			total += g.n
			for o := g.base; o < g.base+g.n; o++ {
				if covered[o] {
					t.Fatalf("partition %d offset %d assigned twice", p, o)
				}
				covered[o] = true
			}
		}
		for o := int64(0); o < total; o++ {
			if !covered[o] {
				t.Fatalf("partition %d offset %d never assigned (gap)", p, o)
			}
		}
		if states[p].Next != total || states[p].Segments != writers*commits {
			t.Fatalf("partition %d state %+v, want next %d", p, states[p], total)
		}
	}
}

func TestCommitIdempotentRetry(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	apps := []metadata.Append{
		{Topic: "t", Partition: 0, Object: "obj", Len: 10, Records: 3},
		{Topic: "t", Partition: 1, Object: "obj", Off: 10, Len: 10, Records: 4},
		{Topic: "t", Partition: 7, Object: "obj", Off: 20, Len: 10, Records: 1},
		{Topic: "gone", Partition: 0, Object: "obj", Off: 30, Len: 10, Records: 1},
	}
	first, err := c.Commit(ctx, "same-id", apps)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(first[2].Err, metadata.ErrPartitionOutOfRange) || !errors.Is(first[3].Err, metadata.ErrTopicNotFound) {
		t.Fatalf("refusals: %v / %v", first[2].Err, first[3].Err)
	}
	// Another writer commits in between; the retry must not move.
	if _, err := c.Commit(ctx, "other", apps[:1]); err != nil {
		t.Fatal(err)
	}
	again, err := c.Commit(ctx, "same-id", apps)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if first[i].Base != again[i].Base {
			t.Fatalf("retry moved append %d: %d -> %d", i, first[i].Base, again[i].Base)
		}
	}
	if !errors.Is(again[2].Err, metadata.ErrPartitionOutOfRange) || !errors.Is(again[3].Err, metadata.ErrTopicNotFound) {
		t.Fatalf("retry refusals: %v / %v", again[2].Err, again[3].Err)
	}
	st, _ := c.PartitionStates(ctx, "t")
	if st[0].Next != 6 || st[1].Next != 4 {
		t.Fatalf("states after retry: %+v", st)
	}
	// Bad commits are refused whole.
	if _, err := c.Commit(ctx, "dup", []metadata.Append{apps[0], apps[0]}); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("duplicate partition: %v", err)
	}
	if _, err := c.Commit(ctx, "empty", []metadata.Append{{Topic: "t", Partition: 0, Object: "o"}}); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("empty block: %v", err)
	}
}

func TestCommitManyPartitionsAndCache(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	const parts = 1000
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "wide", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	cache, err := c.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	view := cache.Partition("wide", 999)
	var apps []metadata.Append
	for p := int32(0); p < parts; p++ {
		apps = append(apps, metadata.Append{Topic: "wide", Partition: p, Object: "big", Off: int64(p) * 10, Len: 10, Records: 2, MinTS: 100, MaxTS: 200})
	}
	res, err := c.Commit(ctx, "big", apps)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.Base != 0 {
			t.Fatalf("append %d: %+v", i, r)
		}
	}
	select {
	case <-view.Changed:
	case <-time.After(10 * time.Second):
		t.Fatal("cache waiter not woken by commit")
	}
	// Every partition is visible through the cache and a direct lookup.
	st, _ := c.Stats(ctx)
	if err := cache.WaitRevision(ctx, st.Revision); err != nil {
		t.Fatal(err)
	}
	for p := int32(0); p < parts; p++ {
		e, ok := cache.Lookup("wide", p, 1)
		if !ok || e.Object != "big" || e.Off != int64(p)*10 || e.Base != 0 || e.Records != 2 {
			t.Fatalf("cache lookup %d: %+v %v", p, e, ok)
		}
		if got := cache.Partition("wide", p).State.Next; got != 2 {
			t.Fatalf("cache state %d: next %d", p, got)
		}
	}
	if _, ok := cache.Lookup("wide", 0, 2); ok {
		t.Fatal("lookup past the end found an entry")
	}
	e, pst, found, _, err := c.LookupIndex(ctx, "wide", 500, 1)
	if err != nil || !found || e.Off != 5000 || pst.Next != 2 {
		t.Fatalf("direct lookup: %+v %+v %v %v", e, pst, found, err)
	}
	if _, _, found, _, _ := c.LookupIndex(ctx, "wide", 500, 2); found {
		t.Fatal("direct lookup past the end found an entry")
	}
	// A second commit appends after the first; deleting the topic empties the cache.
	res, err = c.Commit(ctx, "big2", apps[:1])
	if err != nil || res[0].Base != 2 {
		t.Fatalf("second commit: %+v %v", res, err)
	}
	if err := c.DeleteTopic(ctx, "wide"); err != nil {
		t.Fatal(err)
	}
	st, _ = c.Stats(ctx)
	if err := cache.WaitRevision(ctx, st.Revision); err != nil {
		t.Fatal(err)
	}
	if _, ok := cache.Topic("wide"); ok {
		t.Fatal("deleted topic still cached")
	}
	if _, ok := cache.Lookup("wide", 0, 0); ok {
		t.Fatal("deleted topic's index still cached")
	}
	// Only the commit guards remain (17 chunks of 60 partitions, then 1),
	// and they expire with their lease.
	if st.Keys != 18 {
		t.Fatalf("%d keys left after delete, want the 18 guards", st.Keys)
	}
}

func TestIsUnavailable(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("get topic: %w", rpctypes.ErrNoLeader), true},
		{fmt.Errorf("get: %w", status.Error(codes.Unavailable, "connection refused")), true},
		{fmt.Errorf("get: %w", status.Error(codes.DeadlineExceeded, "slow")), true},
		{fmt.Errorf("x: %w", metadata.ErrTopicNotFound), false},
		{errors.New("plain"), false},
		{fmt.Errorf("get: %w", status.Error(codes.InvalidArgument, "bad")), false},
	}
	for _, c := range cases {
		if got := metadata.IsUnavailable(c.err); got != c.want {
			t.Errorf("IsUnavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
