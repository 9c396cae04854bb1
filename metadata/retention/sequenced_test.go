package retention_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/metadata/retention"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/sequencer/seqtest"
)

// seqEnv is env with a sequencer running in process on the same etcd.
type seqEnv struct {
	env
	seq *sequencer.Client
}

func connectSeq(t *testing.T, topic metadata.Topic) seqEnv {
	t.Helper()
	c := connect(t)
	if _, err := c.CreateTopic(context.Background(), topic); err != nil {
		t.Fatal(err)
	}
	_, seq := seqtest.Start(t, c.Client, sequencer.Config{ID: "seq"})
	return seqEnv{c, seq}
}

// seqBlock commits one block of n records of size stored bytes through the
// sequencer and returns its base.
func (c seqEnv) seqBlock(t *testing.T, topic string, p int32, object string, n, size int64) int64 {
	t.Helper()
	ts := time.Now().UnixMilli()
	res, err := c.seq.Commit(context.Background(), object, []metadata.Append{{
		Topic: topic, Partition: p, Object: object, Off: 0, Len: size, Records: n, MinTS: ts - 1, MaxTS: ts, RawBytes: size,
	}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("commit %s through the sequencer: %v %v", object, err, res)
	}
	return res[0].Base
}

// compact swaps the entries (index keys or record entries) covering
// [from, to) for one level-1 entry of size bytes, as a compactor does.
func (c seqEnv) compact(t *testing.T, topic string, p int32, from, to, size int64) {
	t.Helper()
	ctx := context.Background()
	entries, _, err := c.IndexEntries(ctx, topic, p)
	if err != nil {
		t.Fatal(err)
	}
	sw := compaction.Swap{Topic: topic, Partition: p}
	l1 := metadata.IndexEntry{Base: from, Object: fmt.Sprintf("l1-%d-%d", from, to), Len: size, Level: 1}
	for _, e := range entries {
		if e.Base >= from && e.End() <= to {
			sw.Old = append(sw.Old, e)
			l1.Records += e.Records
			l1.RawBytes += e.RawBytes
			l1.MinTS, l1.MaxTS = e.MinTS, max(l1.MaxTS, e.MaxTS)
		}
	}
	if len(sw.Old) == 0 || sw.Old[0].Base != from || sw.Old[len(sw.Old)-1].End() != to {
		t.Fatalf("no entries tile [%d,%d): %+v", from, to, sw.Old)
	}
	sw.New = []metadata.IndexEntry{l1}
	if err := compaction.New(c.Client).SwapIndex(ctx, sw); err != nil {
		t.Fatal(err)
	}
}

// checkSize applies retention and checks the log start, the partition's
// live bytes (every served entry past the start) and that it is dense.
func (c seqEnv) checkSize(t *testing.T, topic string, p int32, wantStart, wantBytes int64) retention.Result {
	t.Helper()
	ctx := context.Background()
	res, err := c.ApplyRetention(ctx, topic, p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st := checkLog(t, c.env, topic, p)
	entries, _, err := c.IndexEntries(ctx, topic, p)
	if err != nil {
		t.Fatal(err)
	}
	var bytes, keyBytes, keys int64
	for _, e := range entries {
		if e.End() <= st.Start {
			t.Fatalf("entry [%d,%d) (record %d) is still served below the log start %d", e.Base, e.End(), e.Record, st.Start)
		}
		bytes += e.Len
		if e.Record == 0 {
			keyBytes += e.Len
			keys++
		}
	}
	if res.Start != wantStart || st.Start != wantStart || bytes != wantBytes {
		t.Fatalf("after retention: result %+v, partition %+v, %d bytes left; want start %d and %d bytes", res, st, bytes, wantStart, wantBytes)
	}
	// The partition key counts the index-key blocks (docs/metadata.md).
	if keyBytes > 0 && (st.Bytes != keyBytes || st.Segments != keys) {
		t.Fatalf("partition key counts %d bytes in %d segments, the index keys hold %d in %d", st.Bytes, st.Segments, keyBytes, keys)
	}
	// Nothing more is due.
	again, err := c.ApplyRetention(ctx, topic, p, time.Now())
	if err != nil || again.Entries != 0 || again.Records != 0 || again.Start != wantStart {
		t.Fatalf("second pass: %+v %v", again, err)
	}
	return res
}

// sizeTopic keeps at least 250 bytes per partition, with no time limit.
func sizeTopic(name string) metadata.Topic {
	return metadata.Topic{Name: name, Partitions: 1, RetentionMs: -1, RetentionBytes: 250}
}

// TestRetentionBytesSequencerRecords: a partition written only through
// the sequencer (no partition key, no index key) keeps at least
// retention.bytes.
func TestRetentionBytesSequencerRecords(t *testing.T) {
	c := connectSeq(t, sizeTopic("rec"))
	for i := range 5 {
		c.seqBlock(t, "rec", 0, fmt.Sprintf("o%d", i), 3, 100)
	}
	// 500 bytes: 400 and 300 are still >= 250, 200 is not.
	res := c.checkSize(t, "rec", 0, 6, 300)
	if res.Entries != 2 || res.Records != 6 || res.Bytes != 200 {
		t.Fatalf("result %+v, want 2 entries, 6 records and 200 bytes dropped", res)
	}
}

// TestRetentionBytesCompactedRecords: records compacted into index keys in
// a partition with no partition key: the keys count, and those below the
// new log start are deleted in the same pass.
func TestRetentionBytesCompactedRecords(t *testing.T) {
	c := connectSeq(t, sizeTopic("cmp"))
	for i := range 6 {
		c.seqBlock(t, "cmp", 0, fmt.Sprintf("o%d", i), 3, 100)
	}
	c.compact(t, "cmp", 0, 0, 6, 150)
	c.compact(t, "cmp", 0, 6, 12, 150)
	// Keys of 150 and 150, then records of 100 and 100: 500 bytes; the
	// first key goes (350 left), the second stays (200 < 250).
	res := c.checkSize(t, "cmp", 0, 6, 350)
	if res.Entries != 1 || res.Records != 6 || res.Bytes != 150 {
		t.Fatalf("result %+v, want one key of 6 records and 150 bytes dropped", res)
	}
}

// TestRetentionBytesAfterPartitionKey: once a retention pass created the
// partition key (log start only), later records compacted into keys are
// still retained by size.
func TestRetentionBytesAfterPartitionKey(t *testing.T) {
	c := connectSeq(t, metadata.Topic{Name: "pk", Partitions: 1, RetentionMs: -1, RetentionBytes: 150})
	for i := range 3 {
		c.seqBlock(t, "pk", 0, fmt.Sprintf("a%d", i), 3, 100)
	}
	c.checkSize(t, "pk", 0, 3, 200) // 300 → 200 >= 150; 100 is not
	for i := range 4 {
		c.seqBlock(t, "pk", 0, fmt.Sprintf("b%d", i), 3, 100)
	}
	c.compact(t, "pk", 0, 3, 15, 200)
	// A key of 200 over [3,15), records of 100 and 100: 400 bytes; the key
	// goes (200 left), the next record stays (100 < 150).
	res := c.checkSize(t, "pk", 0, 15, 200)
	if res.Entries != 1 || res.Records != 12 {
		t.Fatalf("result %+v, want the key of 12 records dropped", res)
	}
}

// TestRetentionBytesDirectThenSequencer: a partition committed directly
// (index keys, a partition key counting their bytes), then through the
// sequencer: the records' bytes count too, so the direct keys go.
func TestRetentionBytesDirectThenSequencer(t *testing.T) {
	c := connect(t)
	if _, err := c.CreateTopic(context.Background(), sizeTopic("mix")); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	commitBlock(t, c, "mix", 0, "d0", 3, now, 100)
	commitBlock(t, c, "mix", 0, "d1", 3, now, 100)
	_, seq := seqtest.Start(t, c.Client, sequencer.Config{ID: "seq"})
	sc := seqEnv{c, seq}
	for i := range 3 {
		if base := sc.seqBlock(t, "mix", 0, fmt.Sprintf("s%d", i), 3, 100); base != int64(6+3*i) {
			t.Fatalf("sequencer block %d at %d, want %d", i, base, 6+3*i)
		}
	}
	// 500 bytes: both direct keys go (400, 300), then 200 < 250.
	res := sc.checkSize(t, "mix", 0, 6, 300)
	if res.Entries != 2 || res.Records != 6 || res.Bytes != 200 {
		t.Fatalf("result %+v, want both direct keys (6 records, 200 bytes) dropped", res)
	}
	// Compacting the remaining records and more retention keep it exact.
	sc.seqBlock(t, "mix", 0, "s3", 3, 100)
	sc.compact(t, "mix", 0, 6, 12, 120)
	// Key 120 over [6,12), records 100 and 100: 320; the key stays (200 < 250).
	sc.checkSize(t, "mix", 0, 6, 320)
}
