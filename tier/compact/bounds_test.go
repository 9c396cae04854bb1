package compact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
	"github.com/varve-io/varve/scan"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/gc"
	"github.com/varve-io/varve/tier/segment"
)

// gcGrace is the janitor's grace period in these tests; gcClock moves past
// it without waiting.
const gcGrace = time.Minute

// gcClock is real time plus an offset tests advance: the janitor compares
// it with the store's modification times.
type gcClock struct{ off atomic.Int64 }

func (c *gcClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *gcClock) advance(d time.Duration) { c.off.Add(int64(d)) }

func newJanitor(t *testing.T, e *env, clk *gcClock) *gc.Janitor {
	t.Helper()
	j, err := gc.New(gc.Config{NodeID: "janitor", Grace: gcGrace, Now: clk.now}, e.rec, e.meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// collect runs two orphan passes a grace period apart (the first must
// delete nothing: every orphan is young) and returns what the second
// deleted, sorted.
func collect(t *testing.T, j *gc.Janitor, clk *gcClock) []string {
	t.Helper()
	ctx := context.Background()
	if rep, err := j.CollectOrphans(ctx); err != nil || len(rep.Deleted) != 0 {
		t.Fatalf("first orphan pass deleted %v (%v) before any grace period", rep.Deleted, err)
	}
	clk.advance(gcGrace + time.Second)
	rep, err := j.CollectOrphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Deleted)
	return rep.Deleted
}

func bucketKeys(t *testing.T, s tier.Store) []string {
	t.Helper()
	var keys []string
	if err := s.List(context.Background(), "", func(o tier.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

func objectsOf(es []metadata.IndexEntry) []string {
	var objs []string
	for _, e := range es {
		objs = append(objs, e.Object)
	}
	slices.Sort(objs)
	return slices.Compact(objs)
}

// randomBatch is n records for partitions [0, parts) with incompressible
// values of about size bytes (stored size ≈ raw size), each value naming
// its partition and sequence number (its offset).
func randomBatch(rng *rand.Rand, parts, n, size int, seq []int64) []ingest.Record {
	recs := make([]ingest.Record, n)
	for i := range recs {
		p := int32(i % parts)
		v := fmt.Appendf(nil, "p%d-%d-", p, seq[p])
		for len(v) < size {
			v = append(v, byte('a'+rng.IntN(26)), byte(rng.Uint32()))
		}
		recs[i] = ingest.Record{Partition: p, Record: segment.Record{Key: fmt.Appendf(nil, "k%d", seq[p]), Value: v, Timestamp: 1_700_000_000_000 + seq[p]}}
		seq[p]++
	}
	return recs
}

// The bound compaction gives: K small flushes of one partition become at
// most ceil(bytes / target) + a small constant index keys (here one block
// per object, so keys = objects), and after orphan collection with a short
// grace the replaced level-0 objects are gone while every record still
// reads back, record for record.
func TestCompactionBoundsIndexAndGCKeepsEveryRecord(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "bd", Partitions: 1, RetentionMs: -1, RetentionBytes: -1})
	const (
		flushes    = 120
		perFlush   = 16
		recSize    = 200
		target     = 64 << 10
		minEntries = 8
	)
	rng := rand.New(rand.NewPCG(1, 2))
	seq := make([]int64, 1)
	for range flushes {
		e.produce(t, "bd", randomBatch(rng, 1, perFlush, recSize, seq))
	}
	if err := e.settle("bd"); err != nil {
		t.Fatal(err)
	}
	l0 := e.entries(t, "bd", 0)
	if len(l0) != flushes {
		t.Fatalf("%d index entries for %d flushes", len(l0), flushes)
	}
	var stored, maxEntry int64
	for _, en := range l0 {
		stored += en.Len
		maxEntry = max(maxEntry, en.Len)
	}
	l0Objects := objectsOf(l0)
	if got := bucketKeys(t, e.rec); !slices.Equal(got, l0Objects) {
		t.Fatalf("bucket holds %d objects, want the %d level-0 objects", len(got), len(l0Objects))
	}
	before := fetchAll(t, e.fetcher(), "bd", 0, 0)
	if int64(len(before)) != seq[0] {
		t.Fatalf("%d records before compaction, produced %d", len(before), seq[0])
	}

	// Blocks as large as an object: one index entry per object.
	c := newCompactor(t, e, "c", Config{MinEntries: minEntries, TargetBytes: target, BlockBytes: 2 * target})
	st := runUntilIdle(t, e, c)
	after := e.entries(t, "bd", 0)
	// A job holds entries up to the target, so every job but the last
	// holds more than target - maxEntry; a tail shorter than minEntries
	// entries and half the target stays at level 0 until more data comes.
	bound := int((stored+target-1)/target) + 2 + (minEntries - 1)
	t.Logf("%d flushes, %d stored bytes (largest entry %d): %d index keys → %d (bound %d); stats %+v",
		flushes, stored, maxEntry, len(l0), len(after), bound, st)
	if maxEntry > target/8 {
		t.Fatalf("a level-0 entry of %d bytes: the bound below assumes entries under target/8", maxEntry)
	}
	if len(after) > bound {
		t.Fatalf("%d index keys after compaction, want at most ceil(%d/%d)+%d = %d", len(after), stored, target, bound-int((stored+target-1)/target), bound)
	}
	var level0 int
	for _, en := range after {
		if en.Level == 0 {
			level0++
		}
	}
	if level0 >= minEntries {
		t.Fatalf("%d level-0 entries left after compaction, want fewer than %d", level0, minEntries)
	}
	_, pst, err := e.meta.IndexEntries(ctx, "bd", 0)
	if err != nil {
		t.Fatal(err)
	}
	if pst.Segments != int64(len(after)) || pst.Start != 0 || pst.Next != seq[0] {
		t.Fatalf("partition state %+v after compaction, want %d segments over [0, %d)", pst, len(after), seq[0])
	}

	// The objects the swaps replaced are orphans; after the grace period
	// they are deleted, and only the referenced objects remain.
	live := objectsOf(after)
	var replaced []string
	for _, o := range l0Objects {
		if _, ok := slices.BinarySearch(live, o); !ok {
			replaced = append(replaced, o)
		}
	}
	if len(replaced) < flushes-minEntries {
		t.Fatalf("only %d of %d level-0 objects were replaced", len(replaced), len(l0Objects))
	}
	e.rec.Reset()
	clk := &gcClock{}
	j := newJanitor(t, e, clk)
	if deleted := collect(t, j, clk); !slices.Equal(deleted, replaced) {
		t.Fatalf("orphan collection deleted %d objects %v, want the %d replaced level-0 objects", len(deleted), deleted, len(replaced))
	}
	if got := bucketKeys(t, e.rec); !slices.Equal(got, live) {
		t.Fatalf("bucket holds %v after collection, want the referenced objects %v", got, live)
	}
	if n := e.rec.Count(tier.OpDelete); n != len(replaced) {
		t.Fatalf("%d DELETEs for %d replaced objects", n, len(replaced))
	}
	// A fresh reader (empty block cache) reads every record from the
	// remaining objects only.
	sameRecords(t, "whole log after compaction and collection", before, fetchAll(t, e.fetcher(), "bd", 0, 0))
	if n := e.rec.Count(tier.OpGet); n == 0 {
		t.Fatal("the fetch after collection read no object")
	}
}

// scanAll runs a scan and returns its rows by partition, as fetch.Records.
func scanAll(t *testing.T, r *scan.Reader, req scan.Request) map[int32][]fetch.Record {
	t.Helper()
	sc, err := r.Scan(context.Background(), req)
	if err != nil {
		t.Fatalf("scan %+v: %v", req, err)
	}
	defer sc.Release()
	out := map[int32][]fetch.Record{}
	for sc.Next() {
		b := sc.RecordBatch()
		cols := map[string]int{}
		for i, fl := range b.Schema().Fields() {
			cols[fl.Name] = i
		}
		parts := b.Column(cols["partition"]).(*array.Int32)
		offs := b.Column(cols["offset"]).(*array.Int64)
		keys := b.Column(cols["key"]).(*array.Binary)
		vals := b.Column(cols["value"]).(*array.Binary)
		ts := b.Column(cols["timestamp"]).(*array.Timestamp)
		for i := range int(b.NumRows()) {
			rec := fetch.Record{Partition: parts.Value(i), Offset: offs.Value(i)}
			rec.Timestamp = int64(ts.Value(i))
			if !keys.IsNull(i) {
				rec.Key = bytes.Clone(keys.Value(i))
			}
			if !vals.IsNull(i) {
				rec.Value = bytes.Clone(vals.Value(i))
			}
			out[parts.Value(i)] = append(out[parts.Value(i)], rec)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scan %+v: %v", req, err)
	}
	return out
}

// Issue 6: after retention advanced the log start into the middle of
// compacted objects, compaction ran again and the orphans were collected,
// an Arrow scan of the whole range returns exactly what Fetch returns from
// the new log start, record for record. As docs/scan.md says, offsets
// before the log start are skipped: a scan asked to start below it starts
// at it, and one that ends at it returns no row and no error, while a
// fetch below it answers a precise OUT_OF_RANGE.
func TestScanEqualsFetchAcrossRetention(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const parts = 2
	e.topic(t, metadata.Topic{Name: "sr", Partitions: parts, RetentionMs: -1, RetentionBytes: 10 << 10})
	rng := rand.New(rand.NewPCG(5, 6))
	seq := make([]int64, parts)
	produce := func(flushes, n int) {
		for range flushes {
			e.produce(t, "sr", randomBatch(rng, parts, n, 100, seq))
		}
		if err := e.settle("sr"); err != nil {
			t.Fatal(err)
		}
	}
	// Level-0 flushes, compacted into level-1 objects of several blocks
	// each, then a level-0 head that becomes a small level-1 object.
	produce(40, 40)
	c := newCompactor(t, e, "c", Config{MinEntries: 4, TargetBytes: 16 << 10, BlockBytes: 2 << 10, MergeObjects: 2})
	if st := runUntilIdle(t, e, c); st.Jobs == 0 {
		t.Fatal("the first compaction did nothing")
	}
	produce(4, 20)

	// Retention by size drops a prefix of blocks: the log start lands
	// inside a level-1 object (its first blocks dropped, the rest live).
	clk := &gcClock{}
	j := newJanitor(t, e, clk)
	rep, err := j.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries == 0 {
		t.Fatalf("retention dropped nothing: %+v", rep)
	}
	straddled := map[int32]bool{}
	for p := range int32(parts) {
		es := e.entries(t, "sr", p)
		if len(es) > 0 && es[0].Level == 1 && slices.Contains(rep.Objects, es[0].Object) {
			straddled[p] = true
		}
	}
	if len(straddled) == 0 {
		t.Fatal("no partition's log start is inside a compacted object; the test does not cover what it should")
	}
	// Compaction again: the head goes to level 1, and small level-1
	// objects, the partly dropped one first, merge into level 2: the job
	// reads only the live blocks of the straddled object.
	st := runUntilIdle(t, e, c)
	t.Logf("retention dropped %d entries, %d records; compaction after it %+v", rep.Entries, rep.Records, st)
	for p := range straddled {
		if es := e.entries(t, "sr", p); es[0].Level != 2 {
			t.Fatalf("partition %d: first entry %+v after the second compaction, want the straddled object merged into level 2", p, es[0])
		}
	}
	if deleted := collect(t, j, clk); len(deleted) == 0 {
		t.Fatal("orphan collection deleted nothing after retention and compaction")
	}
	e.waitCache(t)

	states, err := e.meta.PartitionStates(ctx, "sr")
	if err != nil {
		t.Fatal(err)
	}
	f := e.fetcher()
	whole := scanAll(t, e.scans(f), scan.Request{Topic: "sr"})
	fromZero := scanAll(t, e.scans(f), scan.Request{Topic: "sr", FromOffset: 0})
	for p := range int32(parts) {
		ps := states[p]
		if ps.Start == 0 || ps.Next != seq[p] {
			t.Fatalf("partition %d: state %+v, want a log start past 0 and next %d", p, ps, seq[p])
		}
		want := fetchAll(t, f, "sr", p, ps.Start)
		if int64(len(want)) != ps.Next-ps.Start {
			t.Fatalf("partition %d: fetch from the log start %d read %d records, want %d", p, ps.Start, len(want), ps.Next-ps.Start)
		}
		for i, r := range want {
			if r.Offset != ps.Start+int64(i) || !strings.HasPrefix(string(r.Value), fmt.Sprintf("p%d-%d-", p, r.Offset)) {
				t.Fatalf("partition %d: fetched record %d has offset %d value %.12q", p, i, r.Offset, r.Value)
			}
		}
		sameRecords(t, fmt.Sprintf("partition %d: scan of the whole topic", p), want, whole[p])
		sameRecords(t, fmt.Sprintf("partition %d: scan from offset 0", p), want, fromZero[p])

		// Asked from below the log start, the scan starts at it.
		below := scanAll(t, e.scans(f), scan.Request{Topic: "sr", Partitions: []int32{p}, FromOffset: ps.Start - 3, ToOffset: ps.Start + 5})
		sameRecords(t, fmt.Sprintf("partition %d: scan [%d,%d)", p, ps.Start-3, ps.Start+5), want[:5], below[p])
		// Entirely below the log start: no row, no error.
		if gone := scanAll(t, e.scans(f), scan.Request{Topic: "sr", Partitions: []int32{p}, FromOffset: 0, ToOffset: ps.Start}); len(gone[p]) != 0 {
			t.Fatalf("partition %d: scan [0,%d) returned %d rows from before the log start", p, ps.Start, len(gone[p]))
		}
		// Fetch below the log start is a precise OUT_OF_RANGE.
		_, err := f.Fetch(ctx, "sr", p, ps.Start-1, 1<<20, 0)
		msg := fmt.Sprintf("offset %d is before the log start %d", ps.Start-1, ps.Start)
		if !errors.Is(err, fetch.ErrOffsetOutOfRange) || !strings.Contains(err.Error(), msg) {
			t.Fatalf("partition %d: fetch at %d: %v, want ErrOffsetOutOfRange saying %q", p, ps.Start-1, err, msg)
		}
	}
	// Every object left is referenced: retention's and compaction's orphans
	// are gone, and the scans above read only live objects.
	refs, _, err := maintenance.New(e.meta).ReferencedObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range bucketKeys(t, e.rec) {
		if _, ok := refs[k]; !ok {
			t.Fatalf("object %s left in the bucket but unreferenced", k)
		}
	}
}
