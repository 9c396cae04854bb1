package compact

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/tier"
)

// sequenced switches e's ingest node to commit through a sequencer running
// in process, as a cluster moving off the direct path does.
func (e *env) sequenced(t *testing.T) {
	t.Helper()
	s, err := sequencer.New(e.meta, sequencer.Config{ID: "seq-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	if !testenv.Eventually(30*time.Second, s.Leading) {
		t.Fatal("the sequencer never led")
	}
	client := sequencer.NewClient(e.meta, func(context.Context, string) (sequencer.Service, error) { return s, nil })
	e.in.Close(ctx)
	in, err := ingest.New(ingest.Config{NodeID: "in-seq", Linger: time.Millisecond, FlushBytes: 1 << 20}, e.rec, client, e.cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	e.in = in
}

// TestCompactionLeavesRecordEntries: partitions whose history is first
// committed directly, then through the sequencer, and partitions written
// only through it. A compaction pass compacts the direct history (index
// keys) and never touches a block a sequencer record holds — no swap, no
// object written for them — and every record reads back identical. A swap
// naming a record entry is refused outright.
func TestCompactionLeavesRecordEntries(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "mixed", Partitions: 3})
	e.topic(t, metadata.Topic{Name: "keyed", Partitions: 2, CleanupPolicy: metadata.CleanupCompact})
	mixed, keyed, only := make([]int64, 3), make([]int64, 2), make([]int64, 2)
	fill(t, e, "mixed", 3, 12, 30, mixed)
	fill(t, e, "keyed", 2, 12, 20, keyed)
	directMixed, directKeyed := append([]int64(nil), mixed...), append([]int64(nil), keyed...)

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
	e.rec.Reset()
	st := runUntilIdle(t, e, c)
	if st.Jobs == 0 || st.Conflicts != 0 || st.EntriesIn != 3*12+2*12 {
		t.Fatalf("stats %+v: want the %d direct entries compacted, nothing else", st, 3*12+2*12)
	}
	if puts := e.rec.Count(tier.OpPut); puts != st.Jobs {
		t.Fatalf("%d PUTs for %d jobs: compaction wrote objects for record entries", puts, st.Jobs)
	}
	f = e.fetcher()
	for name, n := range topics {
		for p := range n {
			var directEnd int64
			switch name {
			case "mixed":
				directEnd = directMixed[p]
			case "keyed":
				directEnd = directKeyed[p]
			}
			want, got := before[fmt.Sprint(name, p)], fetchAll(t, f, name, p, 0)
			if name == "keyed" {
				// Key compaction drops superseded records of the direct
				// history; the sequenced tail stays as it was.
				want, got = from(want, directEnd), from(got, directEnd)
			}
			sameRecords(t, fmt.Sprintf("%s/%d after compaction", name, p), want, got)
			records := 0
			for _, en := range e.entries(t, name, p) {
				switch {
				case en.Base < directEnd && (en.Record != 0 || en.Level == 0):
					t.Fatalf("%s/%d: direct history entry %+v not compacted", name, p, en)
				case en.Base >= directEnd && (en.Record == 0 || en.Level != 0):
					t.Fatalf("%s/%d: entry %+v past the direct history is not the sequencer record's", name, p, en)
				case en.Record != 0:
					records++
				}
			}
			if records != 12 {
				t.Fatalf("%s/%d: %d record entries after compaction, want 12", name, p, records)
			}
		}
	}

	recs := e.entries(t, "only", 0)
	err := compaction.New(e.meta).SwapIndex(ctx, compaction.Swap{Topic: "only", Partition: 0, Old: recs[:2],
		New: []metadata.IndexEntry{{Base: 0, Object: "l1/x", Len: 10, Records: recs[0].Records + recs[1].Records}}})
	if !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("a swap of record entries: %v, want ErrInvalidArgument", err)
	}
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
