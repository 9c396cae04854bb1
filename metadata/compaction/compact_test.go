package compaction_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/metadata/maintenance"
)

// env is a metadata client and compaction's state in its etcd.
type env struct {
	*metadata.Client
	*compactionClient
	*maintenance.Etcd
}

type compactionClient = compaction.Client

func connect(t *testing.T) env {
	t.Helper()
	m, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return env{m, compaction.New(m), maintenance.New(m)}
}

// commitN commits blocks from..from+n-1 of 10 records each to topic/0.
func commitN(t *testing.T, c env, topic string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		res, err := c.Commit(context.Background(), fmt.Sprintf("%s-obj-%d", topic, i), []metadata.Append{{
			Topic: topic, Partition: 0, Object: fmt.Sprintf("obj-%d", i), Off: 8, Len: 100, Records: 10, RawBytes: 400,
		}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("commit %d: %v %v", i, err, res)
		}
	}
}

func TestSwapIndex(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "s", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	commitN(t, c, "s", 0, 5)
	cache, err := c.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	old, st, err := c.IndexEntries(ctx, "s", 0)
	if err != nil || len(old) != 5 || st.Next != 50 || st.Bytes != 500 {
		t.Fatalf("IndexEntries = %d entries, %+v, %v", len(old), st, err)
	}

	newEntry := func(base, n, span int64) metadata.IndexEntry {
		return metadata.IndexEntry{Base: base, Object: "l1/x.vseg", Off: 8 + base, Len: 150, Records: n, Span: span, Level: 1, RawBytes: 1000}
	}
	// Bad swaps change nothing.
	for _, tc := range []struct {
		name string
		s    compaction.Swap
	}{
		{"no old", compaction.Swap{Topic: "s", New: []metadata.IndexEntry{newEntry(0, 10, 0)}}},
		{"not contiguous", compaction.Swap{Topic: "s", Old: []metadata.IndexEntry{old[0], old[2]}, New: []metadata.IndexEntry{newEntry(0, 20, 0)}}},
		{"gap in new", compaction.Swap{Topic: "s", Old: old[:2], New: []metadata.IndexEntry{newEntry(0, 5, 0), newEntry(6, 14, 0)}}},
		{"short new", compaction.Swap{Topic: "s", Old: old[:2], New: []metadata.IndexEntry{newEntry(0, 15, 0)}}},
		{"no new", compaction.Swap{Topic: "s", Old: old[:2]}},
		{"no modrev", compaction.Swap{Topic: "s", Old: []metadata.IndexEntry{{Base: 0, Records: 10}}, New: []metadata.IndexEntry{newEntry(0, 10, 0)}}},
	} {
		if err := c.SwapIndex(ctx, tc.s); !errors.Is(err, metadata.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", tc.name, err)
		}
	}

	// Entries 1..3 (offsets 10-39) become two entries; one of them sparse.
	swap := compaction.Swap{Topic: "s", Old: old[1:4], New: []metadata.IndexEntry{newEntry(10, 12, 0), newEntry(22, 3, 18)}}
	if err := c.SwapIndex(ctx, swap); err != nil {
		t.Fatal(err)
	}
	got, st, err := c.IndexEntries(ctx, "s", 0)
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for _, e := range got {
		bases = append(bases, fmt.Sprintf("%d-%d/%d", e.Base, e.End(), e.Level))
	}
	if fmt.Sprint(bases) != "[0-10/0 10-22/1 22-40/1 40-50/0]" || st.Next != 50 || st.Bytes != 500-300+300 || st.Segments != 4 {
		t.Fatalf("after swap: %v, %+v", bases, st)
	}
	// The cache applies the swap in one step.
	rev, _ := c.Revision(ctx)
	if err := cache.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	ce, _, _ := cache.Snapshot("s", 0)
	if len(ce) != 4 || ce[2].Base != 22 || ce[2].End() != 40 {
		t.Fatalf("cache after swap: %+v", ce)
	}
	if e, ok := cache.Lookup("s", 0, 39); !ok || e.Base != 22 {
		t.Fatalf("cache lookup 39: %+v %v", e, ok)
	}
	if e, _, found, _, err := c.LookupIndex(ctx, "s", 0, 39); err != nil || !found || e.Base != 22 {
		t.Fatalf("LookupIndex 39: %+v %v %v", e, found, err)
	}

	// The same swap again: its old entries are gone.
	if err := c.SwapIndex(ctx, swap); !errors.Is(err, compaction.ErrSwapConflict) {
		t.Fatalf("stale swap: %v, want ErrSwapConflict", err)
	}
	// A swap planned before a concurrent commit still applies: the commit
	// moved only the partition state.
	cur, _, _ := c.IndexEntries(ctx, "s", 0)
	commitN(t, c, "s", 5, 1)
	if err := c.SwapIndex(ctx, compaction.Swap{Topic: "s", Old: cur[3:4], New: []metadata.IndexEntry{newEntry(40, 10, 0)}}); err != nil {
		t.Fatalf("swap after a head commit: %v", err)
	}

	// Dropping a prefix moves the log start.
	cur, _, _ = c.IndexEntries(ctx, "s", 0)
	if err := c.SwapIndex(ctx, compaction.Swap{Topic: "s", Old: cur[1:2], DropPrefix: true}); !errors.Is(err, compaction.ErrSwapConflict) {
		t.Fatalf("drop of a run that does not start the index: %v", err)
	}
	if err := c.SwapIndex(ctx, compaction.Swap{Topic: "s", Old: cur[:2], DropPrefix: true}); err != nil {
		t.Fatal(err)
	}
	cur, st, _ = c.IndexEntries(ctx, "s", 0)
	if st.Start != 22 || cur[0].Base != 22 {
		t.Fatalf("after dropping the prefix: start %d, first entry %d", st.Start, cur[0].Base)
	}
}

func TestCompactionClaimsAndPause(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	a, err := c.NewClaimer(ctx, "a", 10e9)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.NewClaimer(ctx, "b", 10e9)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if ok, err := a.Claim(ctx, "t", 1); !ok || err != nil {
		t.Fatalf("a claims: %v %v", ok, err)
	}
	if ok, err := b.Claim(ctx, "t", 1); ok || err != nil {
		t.Fatalf("b claims a's partition: %v %v", ok, err)
	}
	if ok, _ := b.Claim(ctx, "t", 2); !ok {
		t.Fatal("b cannot claim a free partition")
	}
	_ = b.Release(ctx, "t", 1) // not b's: no effect
	if ok, _ := b.Claim(ctx, "t", 1); ok {
		t.Fatal("b released a's claim")
	}
	// a's lease revoked (a crash, as far as etcd knows): its claims go.
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Claim(ctx, "t", 1); !ok {
		t.Fatal("claim of a closed claimer still held")
	}

	states := make(chan bool, 10)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := c.WatchPaused(wctx, func(p bool) { states <- p }); err != nil {
		t.Fatal(err)
	}
	if <-states {
		t.Fatal("paused at start")
	}
	if err := c.SetPaused(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !<-states {
		t.Fatal("watch missed the pause")
	}
	if p, _ := c.Paused(ctx); !p {
		t.Fatal("not paused")
	}
	if err := c.SetPaused(ctx, false); err != nil {
		t.Fatal(err)
	}
	if <-states {
		t.Fatal("watch missed the resume")
	}
}

// The watched cache applies a swap in one step: a reader polling it during
// many swaps always sees entries that tile the log, never a gap or an
// overlap.
func TestCacheAppliesSwapsAtomically(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "a", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	commitN(t, c, "a", 0, 64)
	cache, err := c.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	done := make(chan struct{})
	bad := make(chan string, 1)
	polls := 0
	go func() {
		defer close(bad)
		for {
			select {
			case <-done:
				return
			default:
			}
			es, _, _ := cache.Snapshot("a", 0)
			polls++
			at := int64(0)
			for _, e := range es {
				if e.Base != at {
					bad <- fmt.Sprintf("entry at %d after an entry ending at %d: %v", e.Base, at, es)
					return
				}
				at = e.End()
			}
			if len(es) > 0 && at != 640 {
				bad <- fmt.Sprintf("entries end at %d: %v", at, es)
				return
			}
		}
	}()
	// Merge pairs of neighbours until one entry is left: 63 swaps.
	for n := 0; ; n++ {
		es, _, err := c.IndexEntries(ctx, "a", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 1 {
			break
		}
		i := n % (len(es) - 1)
		merged := metadata.IndexEntry{Base: es[i].Base, Object: fmt.Sprintf("l1/%d.vseg", n), Off: 8, Len: es[i].Len + es[i+1].Len, Records: es[i].Records + es[i+1].Records, Level: 1}
		if err := c.SwapIndex(ctx, compaction.Swap{Topic: "a", Old: es[i : i+2], New: []metadata.IndexEntry{merged}}); err != nil {
			t.Fatal(err)
		}
	}
	if !testenv.Eventually(10*time.Second, func() bool { es, _, _ := cache.Snapshot("a", 0); return len(es) == 1 }) {
		t.Fatal("the cache did not reach the last swap")
	}
	close(done)
	if msg, ok := <-bad; ok {
		t.Fatal(msg)
	}
	t.Logf("%d polls of the cache during 63 swaps", polls)
}
