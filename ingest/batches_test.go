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

// TestNextFlush: the seal hint of Produce answers is the time to the next
// multiple of the linger; none while files fill to flush_bytes before their
// tick, and again two ticks after the last one did.
func TestNextFlush(t *testing.T) {
	ctx := context.Background()
	meta, fs, cache := metaTopicFS(t, 1)
	const linger = 100 * time.Millisecond
	in, err := ingest.New(ingest.Config{NodeID: "a", Linger: linger, FlushBytes: 4 << 10}, fs, meta, cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	now := time.UnixMilli(1_000_037) // 37 ms past a multiple of 100 ms
	if next, every := in.NextFlush(now); next != 63*time.Millisecond || every != linger {
		t.Fatalf("NextFlush: %v every %v, want 63ms every 100ms", next, every)
	}
	// A file that reaches flush_bytes seals before its tick.
	if _, err := in.Produce(ctx, "t", []ingest.Record{{Partition: 0, Record: segment.Record{Value: bytes.Repeat([]byte("x"), 8<<10)}}}); err != nil {
		t.Fatal(err)
	}
	if next, every := in.NextFlush(time.Now()); next != 0 || every != 0 {
		t.Fatalf("NextFlush after a full file: %v every %v, want none", next, every)
	}
	if _, every := in.NextFlush(time.Now().Add(2 * linger)); every != linger {
		t.Fatalf("NextFlush two ticks after the full file: every %v, want %v", every, linger)
	}
}
