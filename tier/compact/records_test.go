package compact

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/sequencer/seqtest"
)

// sequenced switches e's ingest node to commit through a sequencer running
// in process, as a cluster moving off the direct path does.
func (e *env) sequenced(t *testing.T) {
	t.Helper()
	_, client := seqtest.Start(t, e.meta, sequencer.Config{ID: "seq-1"})
	ctx := context.Background()
	e.in.Close(ctx)
	in, err := ingest.New(ingest.Config{NodeID: "in-seq", Linger: time.Millisecond, FlushBytes: 1 << 20}, e.rec, client, e.cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	e.in = in
}

// TestCompactionReplacesRecordEntries: partitions whose history is first
// committed directly, then through the sequencer, and partitions written
// only through it. Compaction compacts the record entries like level-0
// keys: afterwards every partition is served from index keys only (the
// keys shadow the records, which still exist), every record reads back
// identical, and a swap whose record was deleted meanwhile is refused.
func TestCompactionReplacesRecordEntries(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "mixed", Partitions: 3})
	e.topic(t, metadata.Topic{Name: "keyed", Partitions: 2, CleanupPolicy: metadata.CleanupCompact})
	mixed, keyed, only := make([]int64, 3), make([]int64, 2), make([]int64, 2)
	fill(t, e, "mixed", 3, 12, 30, mixed)
	fill(t, e, "keyed", 2, 12, 20, keyed)

	e.sequenced(t)
	e.topic(t, metadata.Topic{Name: "only", Partitions: 2})
	fill(t, e, "mixed", 3, 12, 30, mixed)
	fill(t, e, "keyed", 2, 12, 20, keyed)
	fill(t, e, "only", 2, 12, 20, only)

	topics := map[string]int32{"mixed": 3, "keyed": 2, "only": 2}
	before := map[string][]fetch.Record{}
	f := e.fetcher()
	for name, n := range topics {
		for p := range n {
			before[fmt.Sprint(name, p)] = fetchAll(t, f, name, p, 0)
		}
	}
	c := newCompactor(t, e, "c1", Config{MinEntries: 4, TargetBytes: 1 << 20, BlockBytes: 16 << 10, MergeObjects: 3})
	st := runUntilIdle(t, e, c)
	if st.Conflicts != 0 || st.EntriesIn < 2*(3*12+2*12)+2*12 {
		t.Fatalf("stats %+v: want the direct and the record entries compacted", st)
	}
	f = e.fetcher()
	for name, n := range topics {
		for p := range n {
			want, got := before[fmt.Sprint(name, p)], fetchAll(t, f, name, p, 0)
			if name == "keyed" {
				// Key compaction drops superseded records: the newest of
				// each key reads back, in order.
				want, got = latestByKey(want), latestByKey(got)
			}
			sameRecords(t, fmt.Sprintf("%s/%d after compaction", name, p), want, got)
			for _, en := range e.entries(t, name, p) {
				if en.Record != 0 || en.Level == 0 {
					t.Fatalf("%s/%d: entry %+v not compacted", name, p, en)
				}
			}
		}
	}

	// A swap of record entries whose record is gone is refused.
	e2 := newEnv(t)
	e2.sequenced(t)
	e2.topic(t, metadata.Topic{Name: "gone", Partitions: 1})
	fill(t, e2, "gone", 1, 2, 2, make([]int64, 1))
	recs := e2.entries(t, "gone", 0)
	if len(recs) != 2 || recs[0].Record == 0 {
		t.Fatalf("entries %+v, want two record entries", recs)
	}
	if err := e2.meta.DeleteTopic(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	err := compaction.New(e2.meta).SwapIndex(ctx, compaction.Swap{Topic: "gone", Partition: 0, Old: recs,
		New: []metadata.IndexEntry{{Base: 0, Object: "l1/x", Len: 10, Records: recs[0].Records + recs[1].Records}}})
	if !errors.Is(err, compaction.ErrSwapConflict) {
		t.Fatalf("a swap of a deleted topic's record entries: %v, want ErrSwapConflict", err)
	}

	// Two compactors without claims plan overlapping runs of the same
	// record entries: the records stay (the pruner has not run), so only
	// the keys the first swap put tell the second that its run is covered.
	e3 := newEnv(t)
	e3.sequenced(t)
	e3.topic(t, metadata.Topic{Name: "race", Partitions: 1})
	fill(t, e3, "race", 1, 4, 2, make([]int64, 1))
	recs = e3.entries(t, "race", 0)
	if len(recs) != 4 || recs[0].Record == 0 {
		t.Fatalf("entries %+v, want four record entries", recs)
	}
	over := func(old []metadata.IndexEntry, obj string) compaction.Swap {
		n := int64(0)
		for _, e := range old {
			n += e.Records
		}
		return compaction.Swap{Topic: "race", Partition: 0, Old: old,
			New: []metadata.IndexEntry{{Base: old[0].Base, Object: obj, Len: 10, Records: n, Level: 1}}}
	}
	cl := compaction.New(e3.meta)
	if err := cl.SwapIndex(ctx, over(recs[0:2], "l1/a")); err != nil {
		t.Fatal(err)
	}
	for _, s := range []compaction.Swap{over(recs[1:4], "l1/b"), over(recs[0:3], "l1/c")} {
		if err := cl.SwapIndex(ctx, s); !errors.Is(err, compaction.ErrSwapConflict) {
			t.Fatalf("a swap of [%d,%d) after one of [%d,%d): %v, want ErrSwapConflict", s.Old[0].Base, s.Old[len(s.Old)-1].End(), recs[0].Base, recs[1].End(), err)
		}
		if err := cl.SwapMany(ctx, []compaction.Swap{s}); !errors.Is(err, compaction.ErrSwapConflict) {
			t.Fatalf("a grouped swap of [%d,%d): %v, want ErrSwapConflict", s.Old[0].Base, s.Old[len(s.Old)-1].End(), err)
		}
	}
	if err := cl.SwapIndex(ctx, over(recs[2:4], "l1/d")); err != nil {
		t.Fatalf("the rest of the run: %v", err)
	}
	got := e3.entries(t, "race", 0)
	if len(got) != 2 || got[0].Object != "l1/a" || got[1].Object != "l1/d" || got[1].Base != recs[2].Base || got[1].End() != recs[3].End() {
		t.Fatalf("index after the swaps: %+v", got)
	}
}

// TestColdPartitionCompacted: a partition written through the sequencer
// with fewer level-0 entries than MinEntries is left alone while its
// records are young, and compacted once its oldest record entry is older
// than RecordMaxAge, so an idle partition does not keep records alive.
func TestColdPartitionCompacted(t *testing.T) {
	e := newEnv(t)
	e.sequenced(t)
	e.topic(t, metadata.Topic{Name: "cold", Partitions: 2})
	seq := make([]int64, 2)
	fill(t, e, "cold", 2, 2, 10, seq)
	f := e.fetcher()
	before := [][]fetch.Record{fetchAll(t, f, "cold", 0, 0), fetchAll(t, f, "cold", 1, 0)}
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	c := newCompactor(t, e, "c1", Config{MinEntries: 16, RecordMaxAge: time.Minute, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if st := runUntilIdle(t, e, c); st.Jobs != 0 {
		t.Fatalf("young records compacted: %+v", st)
	}
	now.Add(int64(2 * time.Minute))
	if st := runUntilIdle(t, e, c); st.Jobs != 2 || st.EntriesIn != 4 {
		t.Fatalf("cold records: %+v, want both partitions' 2 entries compacted", st)
	}
	f = e.fetcher()
	for p := range int32(2) {
		sameRecords(t, fmt.Sprintf("cold/%d", p), before[p], fetchAll(t, f, "cold", p, 0))
		for _, en := range e.entries(t, "cold", p) {
			if en.Record != 0 {
				t.Fatalf("cold/%d: entry %+v still from a record", p, en)
			}
		}
	}
}

// latestByKey keeps the newest record of each key, in offset order.
func latestByKey(recs []fetch.Record) []fetch.Record {
	last := map[string]int64{}
	for _, r := range recs {
		last[string(r.Key)] = r.Offset
	}
	var out []fetch.Record
	for _, r := range recs {
		if last[string(r.Key)] == r.Offset {
			out = append(out, r)
		}
	}
	return out
}

// from returns the records at offset off and after.
func from(recs []fetch.Record, off int64) []fetch.Record {
	for i, r := range recs {
		if r.Offset >= off {
			return recs[i:]
		}
	}
	return nil
}
