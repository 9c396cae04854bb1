package compaction_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/sequencer/seqtest"
)

// TestBacklogCountsSequencerRecords: blocks committed through the
// sequencer (held by its batch records, no index key) are level-0 backlog
// until a swap covers them with index keys; blocks of another topic
// committed directly count as before.
func TestBacklogCountsSequencerRecords(t *testing.T) {
	ctx := context.Background()
	c := connect(t)
	for _, name := range []string{"direct", "seq"} {
		if _, err := c.CreateTopic(ctx, metadata.Topic{Name: name, Partitions: 2}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := c.Commit(ctx, fmt.Sprintf("d%d", i), []metadata.Append{{Topic: "direct", Partition: 0, Object: fmt.Sprintf("d%d", i), Len: 100, Records: 10}}); err != nil {
			t.Fatal(err)
		}
	}
	_, seq := seqtest.Start(t, c.Client, sequencer.Config{ID: "seq"})
	for i := range 4 {
		res, err := seq.Commit(ctx, fmt.Sprintf("s%d", i), []metadata.Append{
			{Topic: "seq", Partition: 0, Object: fmt.Sprintf("s%d", i), Len: 100, Records: 10},
			{Topic: "seq", Partition: 1, Object: fmt.Sprintf("s%d", i), Off: 100, Len: 50, Records: 5},
		})
		if err != nil || res[0].Err != nil || res[1].Err != nil {
			t.Fatalf("commit through the sequencer: %v %v", res, err)
		}
	}
	backlog := func() map[string]compaction.PartitionBacklog {
		t.Helper()
		bs, err := c.Backlog(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]compaction.PartitionBacklog{}
		for _, b := range bs {
			out[fmt.Sprintf("%s/%d", b.Topic, b.Partition)] = b
		}
		return out
	}
	want := func(got map[string]compaction.PartitionBacklog, tp string, entries, l0, bytes int64) {
		t.Helper()
		if b := got[tp]; b.Entries != entries || b.L0Entries != l0 || b.L0Bytes != bytes {
			t.Fatalf("%s backlog %+v, want %d entries, %d level-0 of %d bytes", tp, b, entries, l0, bytes)
		}
	}
	got := backlog()
	want(got, "direct/0", 3, 3, 300)
	want(got, "seq/0", 4, 4, 400)
	want(got, "seq/1", 4, 4, 200)
	// Compacting the first three blocks of seq/0 leaves one level-1 key
	// and one record block.
	entries, _, err := c.IndexEntries(ctx, "seq", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SwapIndex(ctx, compaction.Swap{Topic: "seq", Partition: 0, Old: entries[:3],
		New: []metadata.IndexEntry{{Base: 0, Object: "l1", Len: 250, Records: 30, Level: 1}}}); err != nil {
		t.Fatal(err)
	}
	got = backlog()
	want(got, "seq/0", 2, 1, 100)
	want(got, "seq/1", 4, 4, 200)
}
