package metadata_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/sequencer/seqtest"
)

// seqEnv is an embedded etcd with a sequencer running in process, a
// writer's metadata client committing through it and a reader's client of
// its own (another etcd connection, as a fetch node has).
type seqEnv struct {
	endpoints []string
	writer    *metadata.Client
	reader    *metadata.Client
	seq       *sequencer.Sequencer
	commits   *sequencer.Client
}

func newSeqEnv(t testing.TB, cfg sequencer.Config) *seqEnv {
	t.Helper()
	e := &seqEnv{endpoints: testenv.StartEtcd(t)}
	e.writer, e.reader = connectTo(t, e.endpoints), connectTo(t, e.endpoints)
	cfg.ID = "seq-1"
	e.seq, e.commits = seqtest.Start(t, e.writer, cfg)
	return e
}

func connectTo(t testing.TB, endpoints []string) *metadata.Client {
	t.Helper()
	c, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (e *seqEnv) cache(t testing.TB) *metadata.Cache {
	t.Helper()
	ca, err := e.reader.NewCache(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Close)
	return ca
}

// block is what a committed block must read back as.
type block struct {
	object        string
	base, records int64
	off           int64
}

// ledger is every committed block by partition, in offset order.
type ledger map[int32][]block

// sort orders each partition's blocks by base (concurrent commits
// complete in any order).
func (l ledger) sort() {
	for _, bs := range l {
		sort.Slice(bs, func(i, j int) bool { return bs[i].base < bs[j].base })
	}
}

func (l ledger) next(p int32) int64 {
	bs := l[p]
	if len(bs) == 0 {
		return 0
	}
	return bs[len(bs)-1].base + bs[len(bs)-1].records
}

// commit commits one flush through the sequencer: a block of records(p)
// records on each partition of parts, in object obj.
func (e *seqEnv) commit(t testing.TB, mu *sync.Mutex, l ledger, topic, obj string, parts []int32, records func(int32) int64) {
	t.Helper()
	appends := make([]metadata.Append, len(parts))
	for i, p := range parts {
		appends[i] = metadata.Append{Topic: topic, Partition: p, Object: obj, Off: int64(i) * 100, Len: 100,
			Records: records(p), MinTS: 1000, MaxTS: 2000, RawBytes: 300}
	}
	res, err := e.commits.Commit(context.Background(), obj, appends)
	if err != nil {
		t.Error(err)
		return
	}
	mu.Lock()
	defer mu.Unlock()
	for i, a := range appends {
		if res[i].Err != nil || res[i].Base < 0 {
			t.Errorf("commit %s %s/%d: base %d, %v", obj, topic, a.Partition, res[i].Base, res[i].Err)
			continue
		}
		l[a.Partition] = append(l[a.Partition], block{obj, res[i].Base, a.Records, a.Off})
	}
}

// checkEntries asserts that entries are exactly the ledger's blocks of p,
// each from a record (Record and ModRev set).
func checkEntries(t *testing.T, what string, l ledger, p int32, entries []metadata.IndexEntry) {
	t.Helper()
	want := l[p]
	if len(entries) != len(want) {
		t.Fatalf("%s: partition %d has %d entries, want %d", what, p, len(entries), len(want))
	}
	for i, w := range want {
		g := entries[i]
		if g.Object != w.object || g.Base != w.base || g.Records != w.records || g.Off != w.off || g.Len != 100 ||
			g.MinTS != 1000 || g.MaxTS != 2000 || g.RawBytes != 300 || g.Level != 0 || g.Record == 0 || g.ModRev <= 0 {
			t.Fatalf("%s: partition %d entry %d is %+v, want %+v from a record", what, p, i, g, w)
		}
	}
}

func allPartitions(n int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i)
	}
	return out
}

func revisionOf(t testing.TB, c *metadata.Client) int64 {
	t.Helper()
	st, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Revision
}

// TestSequencedBlocksReadEverywhere commits flushes over 1,000 partitions
// through an in-process sequencer (several batches, some concurrent, a
// checkpoint, then flushes on a few partitions only) and checks that a
// watched cache on another etcd client — one loaded before the commits
// and one loaded after — holds every block and high watermark, that a
// waiter on a partition is woken, and that the linearizable reads
// (IndexEntries, PartitionStates, LookupIndex) agree, including for
// partitions idle since the checkpoint.
func TestSequencedBlocksReadEverywhere(t *testing.T) {
	ctx := context.Background()
	const parts = 1000
	e := newSeqEnv(t, sequencer.Config{CheckpointEvery: 3})
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "big", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	early := e.cache(t)
	view := early.Partition("big", 7)
	if view.State.Next != 0 {
		t.Fatalf("partition 7 starts at %d", view.State.Next)
	}

	var mu sync.Mutex
	l := ledger{}
	all := allPartitions(parts)
	records := func(i int) func(int32) int64 { return func(p int32) int64 { return int64(p%3) + int64(i%2) + 1 } }
	for i := range 3 {
		e.commit(t, &mu, l, "big", fmt.Sprintf("objects/seq-%d.vseg", i), all, records(i))
	}
	select {
	case <-view.Changed:
	case <-time.After(30 * time.Second):
		t.Fatal("a waiter on partition 7 was not woken by a sequenced commit")
	}
	var wg sync.WaitGroup
	for i := 3; i < 7; i++ {
		wg.Go(func() { e.commit(t, &mu, l, "big", fmt.Sprintf("objects/seq-%d.vseg", i), all, records(i)) })
	}
	wg.Wait()
	if !testenv.Eventually(30*time.Second, func() bool { return e.seq.Stats().Checkpoints > 0 }) {
		t.Fatal("the sequencer wrote no checkpoint")
	}
	// After the checkpoint, only the first ten partitions get blocks: the
	// others' high watermarks come from the checkpoint.
	for i := 7; i < 9; i++ {
		e.commit(t, &mu, l, "big", fmt.Sprintf("objects/seq-%d.vseg", i), all[:10], records(i))
	}
	if t.Failed() {
		t.FailNow()
	}
	l.sort()
	if st := e.seq.Stats(); st.Batches < 3 {
		t.Fatalf("%d batches, want several", st.Batches)
	}
	rev := revisionOf(t, e.writer)
	late := e.cache(t)
	for name, ca := range map[string]*metadata.Cache{"cache loaded before": early, "cache loaded after": late} {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := ca.WaitRevision(wctx, rev); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cancel()
		for _, p := range all {
			if got := ca.Partition("big", p).State.Next; got != l.next(p) {
				t.Fatalf("%s: partition %d high watermark %d, want %d", name, p, got, l.next(p))
			}
			checkEntries(t, name, l, p, ca.Entries("big", p, 0, 0))
			last := l[p][len(l[p])-1]
			if got, ok := ca.Lookup("big", p, last.base+last.records-1); !ok || got.Object != last.object {
				t.Fatalf("%s: lookup of partition %d's last offset: %+v, %v", name, p, got, ok)
			}
		}
	}

	states, err := e.reader.PartitionStates(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		if states[p].Next != l.next(p) {
			t.Fatalf("PartitionStates: partition %d high watermark %d, want %d", p, states[p].Next, l.next(p))
		}
	}
	for _, p := range []int32{0, 9, 10, 500, 999} {
		entries, st, err := e.reader.IndexEntries(ctx, "big", p)
		if err != nil {
			t.Fatal(err)
		}
		checkEntries(t, "IndexEntries", l, p, entries)
		if st.Next != l.next(p) {
			t.Fatalf("IndexEntries: partition %d high watermark %d, want %d", p, st.Next, l.next(p))
		}
		for _, b := range l[p] {
			for _, off := range []int64{b.base, b.base + b.records - 1} {
				got, st, found, _, err := e.reader.LookupIndex(ctx, "big", p, off)
				if err != nil || !found || got.Object != b.object || got.Base != b.base || got.Record == 0 || st.Next != l.next(p) {
					t.Fatalf("LookupIndex %d/%d: %+v, next %d, found %v, %v; want %+v, next %d", p, off, got, st.Next, found, err, b, l.next(p))
				}
			}
		}
		if _, st, found, _, err := e.reader.LookupIndex(ctx, "big", p, l.next(p)); err != nil || found || st.Next != l.next(p) {
			t.Fatalf("LookupIndex %d at the high watermark: found %v, next %d, %v", p, found, st.Next, err)
		}
	}
}

// TestRecordDeletedLeavesCache deletes a record key (as the record pruner
// does once index keys cover it): the watched cache drops that record's
// entries and keeps the high watermark.
func TestRecordDeletedLeavesCache(t *testing.T) {
	ctx := context.Background()
	e := newSeqEnv(t, sequencer.Config{})
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	ca := e.cache(t)
	var mu sync.Mutex
	l := ledger{}
	one := func(int32) int64 { return 2 }
	e.commit(t, &mu, l, "t", "objects/a.vseg", []int32{0, 1}, one)
	e.commit(t, &mu, l, "t", "objects/b.vseg", []int32{1}, one)
	// More records than one page of a ranged read (32), on partition 0:
	// the reads page forwards and backwards.
	for i := range 40 {
		e.commit(t, &mu, l, "t", fmt.Sprintf("objects/p0-%d.vseg", i), []int32{0}, one)
	}
	entries, st, err := e.reader.IndexEntries(ctx, "t", 0)
	if err != nil || st.Next != 82 {
		t.Fatalf("IndexEntries of partition 0: next %d, %v", st.Next, err)
	}
	checkEntries(t, "IndexEntries", l, 0, entries)
	if got, _, found, _, err := e.reader.LookupIndex(ctx, "t", 0, 1); err != nil || !found || got.Object != "objects/a.vseg" {
		t.Fatalf("LookupIndex of the oldest record's block: %+v, %v, %v", got, found, err)
	}
	rev := revisionOf(t, e.writer)
	if err := ca.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	last := ca.Entries("t", 1, 0, 0)
	if len(last) != 2 {
		t.Fatalf("partition 1 has %d entries, want 2", len(last))
	}
	view := ca.Partition("t", 1)
	raw, err := clientv3.New(clientv3.Config{Endpoints: e.endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	resp, err := raw.Delete(ctx, fmt.Sprintf("/varve/seq/records/%020d", last[1].Record))
	if err != nil || resp.Deleted != 1 {
		t.Fatalf("delete record %d: %v, %v", last[1].Record, resp, err)
	}
	if err := ca.WaitRevision(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	select {
	case <-view.Changed:
	default:
		t.Fatal("deleting a record did not wake the partition's waiters")
	}
	if got := ca.Entries("t", 1, 0, 0); len(got) != 1 || got[0].Object != "objects/a.vseg" {
		t.Fatalf("partition 1 after the delete: %+v", got)
	}
	// A record is deleted only once index keys cover it or it is below the
	// log start: the high watermark does not go back.
	if got := ca.Partition("t", 1).State.Next; got != 4 {
		t.Fatalf("partition 1 high watermark %d after the delete, want 4 (kept)", got)
	}
	if got := ca.Entries("t", 0, 0, 0); len(got) != 41 {
		t.Fatalf("partition 0 after the delete: %d entries, want 41", len(got))
	}
}

// TestRecreatedTopicHidesOldRecords commits through the sequencer, deletes
// the topic and creates it again: no reader shows the old topic's blocks
// (they are still in records, under the old topic id), and the new
// topic's offsets start at 0.
func TestRecreatedTopicHidesOldRecords(t *testing.T) {
	ctx := context.Background()
	e := newSeqEnv(t, sequencer.Config{})
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "re", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	ca := e.cache(t)
	var mu sync.Mutex
	old := ledger{}
	for i := range 3 {
		e.commit(t, &mu, old, "re", fmt.Sprintf("objects/old-%d.vseg", i), []int32{0, 1}, func(int32) int64 { return 5 })
	}
	if err := ca.WaitRevision(ctx, revisionOf(t, e.writer)); err != nil {
		t.Fatal(err)
	}
	if got := ca.Partition("re", 1).State.Next; got != 15 {
		t.Fatalf("old topic: high watermark %d, want 15", got)
	}
	if err := e.writer.DeleteTopic(ctx, "re"); err != nil {
		t.Fatal(err)
	}
	if err := ca.WaitRevision(ctx, revisionOf(t, e.writer)); err != nil {
		t.Fatal(err)
	}
	if got := ca.Entries("re", 1, 0, 0); len(got) != 0 || ca.Partition("re", 1).State.Next != 0 {
		t.Fatalf("deleted topic still shows %d entries, high watermark %d", len(got), ca.Partition("re", 1).State.Next)
	}
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "re", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	fresh := ledger{}
	e.commit(t, &mu, fresh, "re", "objects/new-0.vseg", []int32{1}, func(int32) int64 { return 3 })
	if t.Failed() {
		t.FailNow()
	}
	if fresh[1][0].base != 0 {
		t.Fatalf("the recreated topic's first block got base %d, want 0", fresh[1][0].base)
	}
	rev := revisionOf(t, e.writer)
	late := e.cache(t)
	for name, c := range map[string]*metadata.Cache{"watching cache": ca, "cache loaded after": late} {
		if err := c.WaitRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
		checkEntries(t, name, fresh, 1, c.Entries("re", 1, 0, 0))
		checkEntries(t, name, fresh, 0, c.Entries("re", 0, 0, 0))
		if got := c.Partition("re", 1).State.Next; got != 3 {
			t.Fatalf("%s: recreated topic's high watermark %d, want 3", name, got)
		}
		if got := c.Partition("re", 0).State.Next; got != 0 {
			t.Fatalf("%s: recreated topic's idle partition at %d, want 0", name, got)
		}
	}
	states, err := e.reader.PartitionStates(ctx, "re")
	if err != nil || states[1].Next != 3 || states[0].Next != 0 {
		t.Fatalf("PartitionStates of the recreated topic: %+v, %v", states, err)
	}
	entries, st, err := e.reader.IndexEntries(ctx, "re", 1)
	if err != nil || st.Next != 3 {
		t.Fatalf("IndexEntries of the recreated topic: next %d, %v", st.Next, err)
	}
	checkEntries(t, "IndexEntries", fresh, 1, entries)
	got, st, found, _, err := e.reader.LookupIndex(ctx, "re", 1, 4)
	if err != nil || found || st.Next != 3 {
		t.Fatalf("LookupIndex of an old offset in the recreated topic: %+v found %v next %d, %v", got, found, st.Next, err)
	}
	got, _, found, _, err = e.reader.LookupIndex(ctx, "re", 1, 2)
	if err != nil || !found || got.Object != "objects/new-0.vseg" {
		t.Fatalf("LookupIndex in the recreated topic: %+v found %v, %v", got, found, err)
	}
}

// BenchmarkRecordReads measures the index reads over sequencer records:
// 1,000 partitions, 50 batches each holding a block on every partition
// (no checkpoint yet, so nothing bounds the scans but the data).
func BenchmarkRecordReads(b *testing.B) {
	ctx := context.Background()
	const parts, batches = 1000, 50
	e := newSeqEnv(b, sequencer.Config{})
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "big", Partitions: parts}); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	l := ledger{}
	for i := range batches {
		e.commit(b, &mu, l, "big", fmt.Sprintf("objects/%d.vseg", i), allPartitions(parts), func(int32) int64 { return 2 })
	}
	tail := l[500][batches-1].base
	b.Run("PartitionStates", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.reader.PartitionStates(ctx, "big"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("LookupIndexTail", func(b *testing.B) {
		for b.Loop() {
			if _, _, found, _, err := e.reader.LookupIndex(ctx, "big", 500, tail); err != nil || !found {
				b.Fatal(found, err)
			}
		}
	})
	b.Run("LookupIndexOldest", func(b *testing.B) {
		for b.Loop() {
			if _, _, found, _, err := e.reader.LookupIndex(ctx, "big", 500, 0); err != nil || !found {
				b.Fatal(found, err)
			}
		}
	})
	b.Run("IndexEntries", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := e.reader.IndexEntries(ctx, "big", 500); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("CacheLoad", func(b *testing.B) {
		for b.Loop() {
			ca, err := e.reader.NewCache(ctx, true)
			if err != nil {
				b.Fatal(err)
			}
			ca.Close()
		}
	})
}
