package metadata_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
)

// TestRecordMemoReadsWhatIndexEntriesReads: reads of every partition
// through one RecordMemo give exactly what IndexEntries gives, while
// records are committed, deleted, and the topic is created again between
// the reads: the memo never serves a record not live at the read's
// revision.
func TestRecordMemoReadsWhatIndexEntriesReads(t *testing.T) {
	ctx := context.Background()
	e := newSeqEnv(t, sequencer.Config{})
	const parts = 50
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "u", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	l, lu := ledger{}, ledger{}
	one := func(p int32) int64 { return int64(1 + p%3) }
	for i := range 40 { // more than a page of records
		e.commit(t, &mu, l, "t", fmt.Sprintf("objects/t-%d.vseg", i), allPartitions(parts)[i%5:], one)
		e.commit(t, &mu, lu, "u", fmt.Sprintf("objects/u-%d.vseg", i), []int32{int32(i % 3)}, one)
	}
	memo := metadata.NewRecordMemo()
	same := func(what, topic string, n int32) {
		t.Helper()
		for p := range n {
			want, wst, err := e.reader.IndexEntries(ctx, topic, p)
			if err != nil {
				t.Fatal(err)
			}
			got, gst, err := e.reader.IndexEntriesWith(ctx, topic, p, memo)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) || gst != wst {
				t.Fatalf("%s: %s/%d through the memo: %d entries, state %+v; want %d entries, state %+v\ngot  %+v\nwant %+v", what, topic, p, len(got), gst, len(want), wst, got, want)
			}
		}
	}
	same("first pass", "t", parts)
	same("first pass", "u", 3)
	checkEntriesAll := func(what string) {
		t.Helper()
		for p := range int32(parts) {
			got, _, err := e.reader.IndexEntriesWith(ctx, "t", p, memo)
			if err != nil {
				t.Fatal(err)
			}
			checkEntries(t, what, l, p, got)
		}
	}
	checkEntriesAll("first pass")
	// New records after the memo read the others, and a record deleted.
	for i := range 5 {
		e.commit(t, &mu, l, "t", fmt.Sprintf("objects/t2-%d.vseg", i), allPartitions(parts), one)
	}
	raw, err := clientv3.New(clientv3.Config{Endpoints: e.endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	entries, _, err := e.reader.IndexEntries(ctx, "u", 0)
	if err != nil || len(entries) == 0 {
		t.Fatalf("entries of u/0: %d, %v", len(entries), err)
	}
	if _, err := raw.Delete(ctx, fmt.Sprintf("/varve/seq/records/%020d", entries[0].Record)); err != nil {
		t.Fatal(err)
	}
	same("after new and deleted records", "t", parts)
	same("after new and deleted records", "u", 3)
	checkEntriesAll("after new records")
	// The topic deleted and created again: its old blocks are not its.
	if err := e.writer.DeleteTopic(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "u", Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	same("after u was created again", "u", 3)
	for p := range int32(3) {
		if got, _, err := e.reader.IndexEntriesWith(ctx, "u", p, memo); err != nil || len(got) != 0 {
			t.Fatalf("u/%d created again: %d entries through the memo, %v", p, len(got), err)
		}
	}
}
