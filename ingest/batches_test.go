package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/tier/segment"
)

// TestFlushedBlockStored: a flushed block's Stored bytes are the block as
// stored, decoding to its Records, with a large producer batch inside as
// it was sent (all but its baseOffset) and a small one re-encoded.
func TestFlushedBlockStored(t *testing.T) {
	env := newIdemEnv(t)
	in := env.nodes[0]
	got := make(chan ingest.Flushed, 4)
	in.OnFlushed = func(f ingest.Flushed) { got <- f }
	ts := time.Now().UnixMilli()
	var large, small []segment.Record
	for i := range 100 {
		large = append(large, segment.Record{Value: bytes.Repeat(fmt.Appendf(nil, "%d", i), 1000), Timestamp: ts})
	}
	small = large[:3:3]
	lb, err := segment.AppendProducerBatches(nil, large)
	if err != nil {
		t.Fatal(err)
	}
	// Two batches of three records: coalesced, they become one batch.
	sb, err := segment.AppendProducerBatches(nil, small)
	if err != nil {
		t.Fatal(err)
	}
	sb = append(sb, sb...)
	res, err := in.ProduceBatches(context.Background(), "t", []ingest.Batches{{Partition: 0, Bytes: lb}, {Partition: 1, Bytes: sb}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Base != 0 || res[0].Records != 100 || res[1].Partition != 1 || res[1].Records != 6 {
		t.Fatalf("results %+v", res)
	}
	f := <-got
	if len(f.Blocks) != 2 {
		t.Fatalf("%d blocks flushed", len(f.Blocks))
	}
	for _, b := range f.Blocks {
		if int64(len(b.Stored)) != b.Info.Length {
			t.Fatalf("block %d: %d stored bytes, the info says %d", b.Info.Partition, len(b.Stored), b.Info.Length)
		}
		recs, err := segment.DecodeBlock(b.Stored)
		if err != nil || len(recs) != len(b.Records) {
			t.Fatalf("block %d: %d records decoded from Stored (%v), %d flushed", b.Info.Partition, len(recs), err, len(b.Records))
		}
		kb, err := segment.BlockBatches(nil, b.Stored, b.Base)
		if err != nil {
			t.Fatal(err)
		}
		sent := map[int32][]byte{0: lb, 1: sb}[b.Info.Partition]
		if asSent := bytes.Contains(kb, sent[8:]); asSent != (b.Info.Partition == 0) {
			t.Fatalf("partition %d: stored as sent %v, want %v (large entries as sent, small ones coalesced)", b.Info.Partition, asSent, b.Info.Partition == 0)
		}
	}
}
