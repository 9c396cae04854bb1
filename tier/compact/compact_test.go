package compact

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/scan"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// env is a real etcd and a real MinIO bucket with an ingester writing
// level-0 segments the way a node does.
type env struct {
	meta  *metadata.Client
	state *compaction.Client // swaps, claims and the pause switch
	rec   *tier.Recorder
	cache *metadata.Cache
	in    *ingest.Ingester
	// endpoints are the embedded etcd's.
	endpoints []string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	endpoints := testenv.StartEtcd(t)
	meta, err := metadata.Connect(ctx, metadata.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	minio := testenv.MinIO(t)
	s3, err := tier.NewS3(ctx, minio.S3Config(minio.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{meta: meta, rec: tier.NewRecorder(s3), endpoints: endpoints}
	e.cache, err = meta.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cache.Close)
	e.in, err = ingest.New(ingest.Config{NodeID: "in", Linger: time.Millisecond, FlushBytes: 1 << 20}, e.rec, meta, e.cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.in.Close(context.Background()) })
	return e
}

func (e *env) topic(t *testing.T, tp metadata.Topic) {
	t.Helper()
	if _, err := e.meta.CreateTopic(context.Background(), tp); err != nil {
		t.Fatal(err)
	}
}

// produce sends one batch (one flush: one level-0 object) and returns the
// offsets.
func (e *env) produce(t testing.TB, topic string, recs []ingest.Record) []ingest.Result {
	t.Helper()
	res, err := e.in.Produce(context.Background(), topic, recs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// fetcher is a fresh reader with an empty block cache: it reads whatever
// the index names now.
func (e *env) fetcher() *fetch.Fetcher {
	return fetch.NewFetcher(e.rec, e.meta, e.cache, blockcache.NewMemory(64<<20), nil, nil)
}

// scans is the reader of scans over f's blocks.
func (e *env) scans(f *fetch.Fetcher) *scan.Reader {
	return scan.New(e.meta, e.cache, f.Blocks(), nil)
}

// fetchAll reads a partition from its log start to its high watermark.
func fetchAll(t testing.TB, f *fetch.Fetcher, topic string, p int32, from int64) []fetch.Record {
	t.Helper()
	var out []fetch.Record
	off := from
	for {
		res, err := f.Fetch(context.Background(), topic, p, off, 64<<10, 0)
		if err != nil {
			t.Fatalf("fetch %s/%d at %d: %v", topic, p, off, err)
		}
		out = append(out, res.Records...)
		if res.Next <= off && len(res.Records) == 0 {
			return out
		}
		off = res.Next
		if off >= res.HighWatermark {
			return out
		}
	}
}

func sameRecords(t *testing.T, what string, want, got []fetch.Record) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Offset != g.Offset || w.Timestamp != g.Timestamp || string(w.Key) != string(g.Key) || string(w.Value) != string(g.Value) ||
			(w.Value == nil) != (g.Value == nil) || (w.Key == nil) != (g.Key == nil) || fmt.Sprint(w.Headers) != fmt.Sprint(g.Headers) {
			t.Fatalf("%s: record %d is %d %q=%q, want %d %q=%q", what, i, g.Offset, g.Key, g.Value, w.Offset, w.Key, w.Value)
		}
	}
}

// fill produces batches flushes of n records over parts partitions; each
// value says its partition and sequence number, which equals its offset.
func fill(t testing.TB, e *env, topic string, parts, batches, n int, seq []int64) {
	t.Helper()
	if err := fillErr(e, topic, parts, batches, n, seq); err != nil {
		t.Fatal(err)
	}
}

func fillErr(e *env, topic string, parts, batches, n int, seq []int64) error {
	for range batches {
		var recs []ingest.Record
		for i := range n {
			p := int32(i % parts)
			v := fmt.Appendf(nil, "p%d-%d-%s", p, seq[p], strings.Repeat("x", int(seq[p]%50)))
			var hs []segment.Header
			if seq[p]%3 == 0 {
				hs = []segment.Header{{Key: "h", Value: []byte(strconv.Itoa(int(seq[p])))}}
			}
			recs = append(recs, ingest.Record{Partition: p, Record: segment.Record{Key: fmt.Appendf(nil, "k%d", seq[p]%7), Value: v, Headers: hs, Timestamp: 1_700_000_000_000 + seq[p]}})
			seq[p]++
		}
		if _, err := e.in.Produce(context.Background(), topic, recs); err != nil {
			return err
		}
	}
	return e.settle(topic)
}

// settle waits until the watched index has every commit of topic made so
// far, so a fetch right after sees the whole log (the watch trails etcd by
// milliseconds).
func (e *env) settle(topic string) error {
	states, err := e.meta.PartitionStates(context.Background(), topic)
	if err != nil {
		return err
	}
	if !testenv.Eventually(10*time.Second, func() bool {
		for p, st := range states {
			if e.cache.Partition(topic, p).State.Next < st.Next {
				return false
			}
		}
		return true
	}) {
		return fmt.Errorf("the watched index of %s did not reach %v", topic, states)
	}
	return nil
}

func (e *env) entries(t testing.TB, topic string, p int32) []metadata.IndexEntry {
	t.Helper()
	es, _, err := e.meta.IndexEntries(context.Background(), topic, p)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func newCompactor(t *testing.T, e *env, id string, cfg Config) *Compactor {
	t.Helper()
	cfg.NodeID = id
	c, err := New(cfg, e.rec, e.meta, e.cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// waitCache waits until the cache holds the index etcd holds for every
// partition of every topic. (Its revision may stay behind etcd's: writes
// outside the watched range, like claims, do not advance it.)
func (e *env) waitCache(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	topics, err := e.meta.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	same := func() bool {
		for _, tp := range topics {
			for p := range tp.Partitions {
				want, _, err := e.meta.IndexEntries(ctx, tp.Name, p)
				if err != nil {
					t.Fatal(err)
				}
				got, _, _ := e.cache.Snapshot(tp.Name, p)
				if fmt.Sprint(got) != fmt.Sprint(want) {
					return false
				}
			}
		}
		return true
	}
	if !testenv.Eventually(10*time.Second, same) {
		t.Fatal("the index cache did not catch up with etcd in 10 s")
	}
}

// runUntilIdle runs passes until one does nothing.
func runUntilIdle(t *testing.T, e *env, c *Compactor) Stats {
	t.Helper()
	var total Stats
	for range 20 {
		e.waitCache(t)
		st, err := c.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Jobs == 0 {
			return total
		}
		total.add(st)
	}
	t.Fatal("compaction never became idle")
	return total
}

// L0 → L1 → L2 keeps every record, offset, key, value, header and
// timestamp; the index shrinks to a few entries per partition; each job is
// one PUT and reads each object range once.
func TestMergePreservesEveryRecord(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "m", Partitions: 3})
	seq := make([]int64, 3)
	fill(t, e, "m", 3, 60, 90, seq)

	before := map[int32][]fetch.Record{}
	f := e.fetcher()
	for p := range int32(3) {
		before[p] = fetchAll(t, f, "m", p, 0)
		if int64(len(before[p])) != seq[p] {
			t.Fatalf("partition %d: %d records before compaction, produced %d", p, len(before[p]), seq[p])
		}
		if n := len(e.entries(t, "m", p)); n != 60 {
			t.Fatalf("partition %d: %d index entries before, want 60", p, n)
		}
	}
	// One object per partition (GroupBytes -1: no groups, group.go).
	c := newCompactor(t, e, "c1", Config{MinEntries: 8, TargetBytes: 1 << 20, BlockBytes: 16 << 10, MergeObjects: 3, GroupBytes: -1})
	e.rec.Reset()
	st := runUntilIdle(t, e, c)
	if st.Jobs != 3 || st.RecordsIn != st.RecordsOut || st.EntriesIn != 180 {
		t.Fatalf("stats %+v", st)
	}
	if puts := e.rec.Count(tier.OpPut); puts != st.Jobs {
		t.Fatalf("%d PUTs for %d jobs", puts, st.Jobs)
	}
	f = e.fetcher()
	for p := range int32(3) {
		sameRecords(t, fmt.Sprintf("partition %d after compaction", p), before[p], fetchAll(t, f, "m", p, 0))
		es := e.entries(t, "m", p)
		t.Logf("partition %d: %d index entries after L0→L1", p, len(es))
		if len(es) > 10 {
			t.Fatalf("partition %d: %d entries after compaction", p, len(es))
		}
		for _, en := range es {
			if en.Level != 1 || !strings.HasPrefix(en.Object, fmt.Sprintf("l1/m/%d/", p)) || en.RawBytes > 20<<10 {
				t.Fatalf("entry %+v", en)
			}
		}
		// A random-offset fetch lands on the same record.
		for range 20 {
			off := rand.Int64N(seq[p])
			res, err := f.Fetch(context.Background(), "m", p, off, 1, 0)
			if err != nil || len(res.Records) == 0 || res.Records[0].Offset != off || string(res.Records[0].Value) != string(before[p][off].Value) {
				t.Fatalf("fetch %d/%d after compaction: %+v %v", p, off, res.Records, err)
			}
		}
	}
	// More data, compacted as it comes: small level-1 objects pile up
	// until MergeObjects of them merge into level 2. The head stays
	// readable throughout.
	for round := range 3 {
		fill(t, e, "m", 3, 10, 30, seq)
		st := runUntilIdle(t, e, c)
		t.Logf("round %d: %+v", round, st)
	}
	for p := range int32(3) {
		got := fetchAll(t, e.fetcher(), "m", p, 0)
		if int64(len(got)) != seq[p] {
			t.Fatalf("partition %d: %d records, want %d", p, len(got), seq[p])
		}
		for i, r := range got {
			if r.Offset != int64(i) || !strings.HasPrefix(string(r.Value), fmt.Sprintf("p%d-%d-", p, i)) {
				t.Fatalf("partition %d record %d: offset %d value %q", p, i, r.Offset, r.Value)
			}
		}
		sameRecords(t, "old records after level 2", before[p], got[:len(before[p])])
		levels := map[int]int{}
		for _, en := range e.entries(t, "m", p) {
			levels[en.Level]++
		}
		if levels[0] != 0 || levels[1] >= 3 || levels[2] == 0 {
			t.Fatalf("partition %d: entries per level %v, want level 2 and fewer than 3 level-1 objects", p, levels)
		}
		t.Logf("partition %d: entries per level %v", p, levels)
	}
}

// Tailing and random-offset readers see no gap and no duplicate while a
// producer writes and compactors swap the index under them.
func TestReadersDuringCompaction(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "r", Partitions: 2})
	seq := make([]int64, 2)
	fill(t, e, "r", 2, 20, 40, seq)
	var mu sync.Mutex
	produced := func(p int32) int64 { mu.Lock(); defer mu.Unlock(); return seq[p] }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	var checked atomic.Int64
	check := func(p int32, from int64, recs []fetch.Record) error {
		for i, r := range recs {
			want := fmt.Sprintf("p%d-%d-", p, from+int64(i))
			if r.Offset != from+int64(i) || !strings.HasPrefix(string(r.Value), want) {
				return fmt.Errorf("partition %d from %d: record %d has offset %d value %q, want offset %d value %s…", p, from, i, r.Offset, r.Value, from+int64(i), want)
			}
		}
		checked.Add(int64(len(recs)))
		return nil
	}
	// Tailing readers, one per partition.
	for p := range int32(2) {
		wg.Go(func() {
			f := e.fetcher()
			off := int64(0)
			for ctx.Err() == nil {
				res, err := f.Fetch(ctx, "r", p, off, 4<<10, 50*time.Millisecond)
				if err != nil {
					if ctx.Err() == nil {
						errc <- err
					}
					return
				}
				if err := check(p, off, res.Records); err != nil {
					errc <- err
					return
				}
				off = res.Next
			}
		})
	}
	// Random-offset readers.
	for range 2 {
		wg.Go(func() {
			f := e.fetcher()
			for ctx.Err() == nil {
				p := rand.Int32N(2)
				off := rand.Int64N(produced(p))
				res, err := f.Fetch(ctx, "r", p, off, 2<<10, 0)
				if err != nil {
					if ctx.Err() == nil {
						errc <- err
					}
					return
				}
				if len(res.Records) == 0 {
					errc <- fmt.Errorf("fetch %d/%d below the high watermark returned nothing", p, off)
					return
				}
				if err := check(p, off, res.Records); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	// A producer keeps writing the head.
	wg.Go(func() {
		for i := 0; ctx.Err() == nil && i < 200; i++ {
			mu.Lock()
			local := append([]int64(nil), seq...)
			mu.Unlock()
			if err := fillErr(e, "r", 2, 1, 10, local); err != nil {
				errc <- err
				return
			}
			mu.Lock()
			copy(seq, local)
			mu.Unlock()
		}
	})
	// Two compactors swap repeatedly.
	c1 := newCompactor(t, e, "c1", Config{MinEntries: 4, TargetBytes: 16 << 10, BlockBytes: 2 << 10, MergeObjects: 2})
	c2 := newCompactor(t, e, "c2", Config{MinEntries: 4, TargetBytes: 16 << 10, BlockBytes: 2 << 10, MergeObjects: 2})
	var jobs atomic.Int64
	for _, c := range []*Compactor{c1, c2} {
		wg.Go(func() {
			for ctx.Err() == nil && jobs.Load() < 40 {
				st, err := c.RunOnce(ctx)
				if err != nil && ctx.Err() == nil {
					errc <- err
					return
				}
				jobs.Add(int64(st.Jobs))
			}
		})
	}
	ok := testenv.Eventually(60*time.Second, func() bool {
		select {
		case err := <-errc:
			t.Error(err)
			return true
		default:
		}
		return jobs.Load() >= 40 && checked.Load() > 5000
	})
	cancel()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if !ok {
		t.Fatalf("after 60 s: %d jobs, %d records checked", jobs.Load(), checked.Load())
	}
	// The whole log, after it all.
	e.waitCache(t)
	for p := range int32(2) {
		got := fetchAll(t, e.fetcher(), "r", p, 0)
		if err := check(p, 0, got); err != nil || int64(len(got)) != seq[p] {
			t.Fatalf("final log of %d: %d records (produced %d): %v", p, len(got), seq[p], err)
		}
	}
	t.Logf("%d swaps, %d records checked by readers", jobs.Load(), checked.Load())
}

// A compactor that dies between the PUT of its output and the swap leaves
// the log as it was; the output is an unreferenced object for the GC, and
// the next run compacts normally.
func TestCrashBetweenPutAndSwap(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "x", Partitions: 1})
	seq := make([]int64, 1)
	fill(t, e, "x", 1, 10, 20, seq)
	before := fetchAll(t, e.fetcher(), "x", 0, 0)
	c := newCompactor(t, e, "c1", Config{MinEntries: 4})
	crash := errors.New("crash")
	c.beforeSwap = func(compaction.Swap) error { return crash }
	if _, err := c.CompactPartition(context.Background(), "x", 0); !errors.Is(err, crash) {
		t.Fatalf("CompactPartition = %v, want the crash", err)
	}
	var orphans []string
	if err := e.rec.List(context.Background(), "l1/", func(o tier.ObjectInfo) error { orphans = append(orphans, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(orphans) != 1 || len(e.entries(t, "x", 0)) != 10 {
		t.Fatalf("after the crash: objects %v, %d entries", orphans, len(e.entries(t, "x", 0)))
	}
	sameRecords(t, "after the crash", before, fetchAll(t, e.fetcher(), "x", 0, 0))
	// The claim of the dead job is released (here: the process lives on);
	// the next run succeeds with a new object.
	c.beforeSwap = nil
	st, err := c.CompactPartition(context.Background(), "x", 0)
	if err != nil || st.Jobs != 1 {
		t.Fatalf("second run: %+v %v", st, err)
	}
	es := e.entries(t, "x", 0)
	if len(es) != 1 || es[0].Object == orphans[0] {
		t.Fatalf("after the second run: %+v", es)
	}
	sameRecords(t, "after compaction", before, fetchAll(t, e.fetcher(), "x", 0, 0))
}

// A claim held elsewhere makes a compactor skip the partition; a swap
// planned on entries another compactor replaced fails without harm.
func TestClaimsAndLostRaces(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "c", Partitions: 1})
	seq := make([]int64, 1)
	fill(t, e, "c", 1, 8, 20, seq)
	before := fetchAll(t, e.fetcher(), "c", 0, 0)
	a := newCompactor(t, e, "a", Config{MinEntries: 4})
	b := newCompactor(t, e, "b", Config{MinEntries: 4})
	// b holds the claim while a tries.
	inside := make(chan struct{})
	release := make(chan struct{})
	b.beforeSwap = func(compaction.Swap) error { close(inside); <-release; return nil }
	var bst Stats
	var berr error
	done := make(chan struct{})
	go func() { bst, berr = b.CompactPartition(context.Background(), "c", 0); close(done) }()
	<-inside
	if st, err := a.CompactPartition(context.Background(), "c", 0); err != nil || st.Jobs != 0 {
		t.Fatalf("a compacted a claimed partition: %+v %v", st, err)
	}
	close(release)
	<-done
	b.beforeSwap = nil
	if berr != nil || bst.Jobs != 1 {
		t.Fatalf("b: %+v %v", bst, berr)
	}
	// A swap planned before b's, with a read of its own or fenced on the
	// watched index's view it was planned from: a conflict, nothing
	// changes.
	es := e.entries(t, "c", 0)
	fill(t, e, "c", 1, 4, 20, seq)
	e.waitCache(t)
	old, seen, ok := e.cache.SnapshotSeen("c", 0)
	if !ok || seen.Rev == 0 || seen.TopicModRev == 0 {
		t.Fatalf("the watched index's view: %v %+v", ok, seen)
	}
	if _, err := b.CompactPartition(context.Background(), "c", 0); err != nil {
		t.Fatal(err)
	}
	a.beforeSwap = nil
	out, st, err := a.rewrite(context.Background(), "c", 0, old, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range []*metadata.Seen{nil, &seen} {
		if _, err := a.store1(context.Background(), "c", 0, job{old: old, level: 2, seen: sn}, out, st); !errors.Is(err, compaction.ErrSwapConflict) {
			t.Fatalf("stale swap (view %v): %v", sn != nil, err)
		}
	}
	got := fetchAll(t, e.fetcher(), "c", 0, 0)
	if int64(len(got)) != seq[0] || len(es) != 1 {
		t.Fatalf("after the lost race: %d records (want %d), %d entries after b", len(got), seq[0], len(es))
	}
	sameRecords(t, "prefix", before, got[:len(before)])
}

func TestPauseResume(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "p", Partitions: 1})
	seq := make([]int64, 1)
	fill(t, e, "p", 1, 6, 10, seq)
	c := newCompactor(t, e, "c", Config{MinEntries: 4})
	ctx := context.Background()
	if err := compaction.New(e.meta).SetPaused(ctx, true); err != nil {
		t.Fatal(err)
	}
	e.waitCache(t)
	if st, err := c.RunOnce(ctx); err != nil || st.Jobs != 0 || len(e.entries(t, "p", 0)) != 6 {
		t.Fatalf("paused pass: %+v %v", st, err)
	}
	if entries, _ := c.Backlog(); entries != 6 || !c.paused.Load() {
		t.Fatalf("backlog %d entries, paused %v", entries, c.paused.Load())
	}
	// Run picks up the resume through its watch.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runDone := make(chan struct{})
	c.cfg.Interval = time.Hour
	go func() { c.Run(rctx); close(runDone) }()
	if err := compaction.New(e.meta).SetPaused(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(20*time.Second, func() bool { return len(e.entries(t, "p", 0)) == 1 }) {
		t.Fatalf("not compacted after resume: %d entries", len(e.entries(t, "p", 0)))
	}
	// The backlog is stored when the pass ends, after its swap is in etcd:
	// wait for it rather than cancel the pass between the two (which
	// made this test fail about once in many runs).
	if !testenv.Eventually(20*time.Second, func() bool { entries, _ := c.Backlog(); return entries == 0 }) {
		entries, _ := c.Backlog()
		t.Fatalf("backlog after compaction: %d", entries)
	}
	cancel()
	<-runDone
}

// A job whose swap would come too long after its PUT (the GC may already
// collect the output) gives up and leaves the log as it was.
func TestLateSwapGivesUp(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "late", Partitions: 1})
	seq := make([]int64, 1)
	fill(t, e, "late", 1, 6, 10, seq)
	c := newCompactor(t, e, "c", Config{MinEntries: 4, MaxSwapDelay: 500 * time.Millisecond})
	if _, err := c.CompactPartition(context.Background(), "late", 0); err == nil || !strings.Contains(err.Error(), "max_swap_delay") {
		t.Fatalf("late swap: %v", err)
	}
	if n := len(e.entries(t, "late", 0)); n != 6 {
		t.Fatalf("%d entries after a late swap, want the 6 untouched", n)
	}
}
