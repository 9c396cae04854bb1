package gc_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
	"github.com/varve-io/varve/metadata/seqlog"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/sequencer/seqtest"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/gc"
	"github.com/varve-io/varve/tier/segment"
)

// seqCluster is an etcd, a MinIO bucket, an ingest node committing either
// directly or through a sequencer running in process, and a fetch node.
type seqCluster struct {
	meta    *metadata.Client
	store   tier.Store
	topics  *metadata.Cache
	index   *metadata.Cache // the fetch node's
	fetcher *fetch.Fetcher
}

func newSeqCluster(t *testing.T, topic metadata.Topic) *seqCluster {
	t.Helper()
	ctx := context.Background()
	srv := testenv.MinIO(t)
	s3, err := tier.NewS3(ctx, srv.S3Config(srv.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	etcd := testenv.StartEtcd(t)
	c := &seqCluster{meta: connectMeta(t, etcd), store: s3}
	if _, err := c.meta.CreateTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	if c.topics, err = c.meta.NewCache(ctx, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.topics.Close)
	reader := connectMeta(t, etcd)
	index, err := reader.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(index.Close)
	c.index = index
	c.fetcher = fetch.NewFetcher(s3, reader, index, blockcache.NewMemory(16<<20), nil, nil)
	return c
}

// ingester commits through the sequencer (seq) or directly.
func (c *seqCluster) ingester(t *testing.T, seq bool) *ingest.Ingester {
	t.Helper()
	var committer ingest.Committer = c.meta
	if seq {
		_, committer = seqtest.Start(t, c.meta, sequencer.Config{ID: "seq-1", CheckpointEvery: 1})
	}
	in, err := ingest.New(ingest.Config{NodeID: "in", Linger: time.Millisecond}, c.store, committer, c.topics, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	return in
}

// produce writes rounds of one record per partition (old timestamps:
// already past any retention) and returns the values by partition.
func produceRounds(t *testing.T, in *ingest.Ingester, topic string, parts int32, rounds int, tag string, want map[int32][]string) {
	t.Helper()
	for r := range rounds {
		recs := make([]ingest.Record, 0, parts)
		for p := range parts {
			recs = append(recs, ingest.Record{Partition: p, Record: segment.Record{Timestamp: 1000, Value: fmt.Appendf(nil, "%s-%d-%d", tag, p, r)}})
		}
		if _, err := in.Produce(context.Background(), topic, recs); err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			want[rec.Partition] = append(want[rec.Partition], string(rec.Value))
		}
	}
}

// readFrom fetches a partition from offset to its high watermark.
func (c *seqCluster) readFrom(t *testing.T, topic string, p int32, from int64) []string {
	t.Helper()
	var out []string
	for off := from; ; {
		res, err := c.fetcher.Fetch(context.Background(), topic, p, off, 1<<20, 0)
		if err != nil {
			t.Fatalf("fetch %s/%d at %d: %v", topic, p, off, err)
		}
		for _, r := range res.Records {
			if r.Offset != off {
				t.Fatalf("%s/%d: record at %d, want %d", topic, p, r.Offset, off)
			}
			out = append(out, string(r.Value))
			off++
		}
		if len(res.Records) == 0 || off >= res.HighWatermark {
			return out
		}
	}
}

// TestSequencedObjectSurvivesGC: objects committed only through sequencer
// records (no index key names them) are referenced: orphan collection
// passes past their grace period delete the true orphan beside them and
// leave them, and every record still reads back.
func TestSequencedObjectSurvivesGC(t *testing.T) {
	ctx := context.Background()
	c := newSeqCluster(t, metadata.Topic{Name: "kept", Partitions: 4})
	in := c.ingester(t, true)
	want := map[int32][]string{}
	produceRounds(t, in, "kept", 4, 2, "s", want)
	committed := listKeys(t, c.store)
	if len(committed) != 2 {
		t.Fatalf("bucket holds %v, want the two committed objects", committed)
	}
	orphan := "segments/orphan-0000" + tier.SegmentSuffix
	if err := c.store.PutIfAbsent(ctx, orphan, []byte("never committed")); err != nil {
		t.Fatal(err)
	}
	clk := &clock{}
	j := newJanitor(t, c.store, c.meta, clk)
	var deleted []string
	for range 3 {
		clk.Advance(2 * grace)
		rep, err := j.CollectOrphans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deleted = append(deleted, rep.Deleted...)
	}
	if !slices.Equal(deleted, []string{orphan}) {
		t.Fatalf("deleted %v, want exactly the orphan %s", deleted, orphan)
	}
	after := listKeys(t, c.store)
	slices.Sort(after)
	slices.Sort(committed)
	if !slices.Equal(after, committed) {
		t.Fatalf("bucket holds %v after collection, want %v", after, committed)
	}
	for p := range int32(4) {
		if got := c.readFrom(t, "kept", p, 0); !slices.Equal(got, want[p]) {
			t.Fatalf("partition %d reads %v, want %v", p, got, want[p])
		}
	}
}

// TestRetentionExpiresRecordEntries: a topic whose every record is past
// retention, committed first directly, then through the sequencer. A
// retention pass drops the entries under index keys and moves the log
// start past the blocks the sequencer records hold too (the partition key
// holds the new start); the record pruner then deletes those records, GC
// their objects, and the partition continues at its high watermark.
func TestRetentionExpiresRecordEntries(t *testing.T) {
	ctx := context.Background()
	const parts = 3
	c := newSeqCluster(t, metadata.Topic{Name: "ret", Partitions: parts, RetentionMs: 1000, RetentionBytes: -1})
	want := map[int32][]string{}
	direct := c.ingester(t, false)
	produceRounds(t, direct, "ret", parts, 2, "d", want)
	direct.Close(ctx)
	seq := c.ingester(t, true)
	produceRounds(t, seq, "ret", parts, 2, "s", want)

	clk := &clock{}
	j := newJanitor(t, c.store, c.meta, clk)
	rep, err := j.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 4*parts || rep.Records != 4*parts || len(rep.Objects) != 2*parts {
		t.Fatalf("retention dropped %d entries and %d records (%d objects of index keys), want all %d entries and records (the %d direct ones' objects)", rep.Entries, rep.Records, len(rep.Objects), 4*parts, 2*parts)
	}
	states, err := c.meta.PartitionStates(ctx, "ret")
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(parts) {
		if st := states[p]; st.Start != 4 || st.Next != 4 {
			t.Fatalf("partition %d after retention: %+v, want start 4, next 4", p, st)
		}
	}
	// The pruner deletes the records (below every log start) once they
	// are older than its grace and at or before a sequencer checkpoint.
	pr := pruneAfterGrace(t, j, clk, c.meta)
	if pr.Deleted == 0 || pr.Kept != 0 {
		t.Fatalf("pruning: %+v, want every record deleted", pr)
	}
	for range 3 {
		clk.Advance(2 * grace)
		if _, err := j.CollectOrphans(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if left := listKeys(t, c.store); len(left) != 0 {
		t.Fatalf("objects left after retention and GC: %v", left)
	}
	produceRounds(t, seq, "ret", parts, 1, "after", want)
	waitIndex(t, c.meta, c.index, "ret", parts)
	for p := range int32(parts) {
		if _, err := c.fetcher.Fetch(ctx, "ret", p, 2, 1<<20, 0); !errors.Is(err, fetch.ErrOffsetOutOfRange) {
			t.Fatalf("fetch of an expired offset: %v", err)
		}
		if got := c.readFrom(t, "ret", p, 4); !slices.Equal(got, want[p][4:]) {
			t.Fatalf("partition %d reads %v after retention, want %v", p, got, want[p][4:])
		}
	}
}

// waitCheckpoint waits until the sequencer has written a checkpoint at or
// after its last record.
func waitCheckpoint(t *testing.T, meta *metadata.Client) {
	t.Helper()
	ok := testenv.Eventually(30*time.Second, func() bool {
		rep, err := maintenance.New(meta).PruneRecords(context.Background(), maintenance.PruneOptions{From: ^uint64(0)})
		if err != nil {
			t.Fatal(err)
		}
		last, err := lastRecord(meta)
		if err != nil {
			t.Fatal(err)
		}
		return rep.Checkpoint >= last
	})
	if !ok {
		t.Fatal("the sequencer never checkpointed its last record")
	}
}

// lastRecord returns the newest sequencer record's batch (0: none).
func lastRecord(meta *metadata.Client) (uint64, error) {
	recs, err := seqlog.New(meta).Records(context.Background(), 0, 0)
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	return recs[len(recs)-1].Batch, nil
}

// TestRetentionReadsOnlyDuePartitions: with a watched index (Config.Index)
// a retention pass reads from etcd only the partitions where something is
// due, not every partition of every topic with a retention limit; what is
// due still goes, and a partition whose data expires later is read then.
func TestRetentionReadsOnlyDuePartitions(t *testing.T) {
	ctx := context.Background()
	const parts = 300
	c := newSeqCluster(t, metadata.Topic{Name: "due", Partitions: parts, RetentionMs: time.Hour.Milliseconds(), RetentionBytes: -1})
	in := c.ingester(t, true)
	// Partition 7 gets an old block first; then every partition a fresh one.
	if _, err := in.Produce(ctx, "due", []ingest.Record{{Partition: 7, Record: segment.Record{Timestamp: 1000, Value: []byte("old")}}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	recs := make([]ingest.Record, 0, parts)
	for p := range int32(parts) {
		recs = append(recs, ingest.Record{Partition: p, Record: segment.Record{Timestamp: now, Value: fmt.Appendf(nil, "fresh-%d", p)}})
	}
	if _, err := in.Produce(ctx, "due", recs); err != nil {
		t.Fatal(err)
	}
	waitIndex(t, c.meta, c.index, "due", parts)

	clk := &clock{}
	j, err := gc.New(gc.Config{NodeID: "test", Grace: grace, Now: clk.Now, Index: c.index}, c.store, c.meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := j.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Partitions != 1 || rep.Skipped != parts-1 || rep.Entries != 1 || rep.Records != 1 {
		t.Fatalf("first pass %+v, want partition 7 read and its old block dropped, %d partitions skipped", rep, parts-1)
	}
	waitIndex(t, c.meta, c.index, "due", parts)
	if rep, err := j.Retention(ctx); err != nil || rep.Partitions != 0 || rep.Skipped != parts {
		t.Fatalf("second pass %+v %v, want nothing read", rep, err)
	}
	// Two hours on, every fresh block has expired.
	clk.Advance(2 * time.Hour)
	rep, err = j.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Partitions != parts || rep.Skipped != 0 || rep.Entries != parts {
		t.Fatalf("pass two hours later %+v, want every partition's block dropped", rep)
	}
	states, err := c.meta.PartitionStates(ctx, "due")
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(parts) {
		want := int64(1)
		if p == 7 {
			want = 2
		}
		if st := states[p]; st.Start != want {
			t.Fatalf("partition %d after retention: %+v, want start %d", p, st, want)
		}
	}
}

// TestPruningPassOneTransaction: sequencer records of an expired topic
// alternate with records of a topic whose blocks are neither compacted
// nor expired. One pruning pass deletes every expired record (many runs
// between the kept ones, far more records than one read page) in one etcd
// transaction and keeps the others; both topics read back as before.
func TestPruningPassOneTransaction(t *testing.T) {
	ctx := context.Background()
	const parts, rounds = 2, 40
	c := newSeqCluster(t, metadata.Topic{Name: "ret", Partitions: parts, RetentionMs: 1000, RetentionBytes: -1})
	if _, err := c.meta.CreateTopic(ctx, metadata.Topic{Name: "keep", Partitions: parts, RetentionMs: -1, RetentionBytes: -1}); err != nil {
		t.Fatal(err)
	}
	seq := c.ingester(t, true)
	gone, kept := map[int32][]string{}, map[int32][]string{}
	for r := range rounds {
		produceRounds(t, seq, "ret", parts, 1, fmt.Sprint("r", r), gone)
		produceRounds(t, seq, "keep", parts, 1, fmt.Sprint("k", r), kept)
	}
	clk := &clock{}
	j := newJanitor(t, c.store, c.meta, clk)
	if _, err := j.Retention(ctx); err != nil {
		t.Fatal(err)
	}
	pr := pruneAfterGrace(t, j, clk, c.meta)
	if pr.Deleted < rounds || pr.Kept < rounds || pr.DeleteTxns != 1 {
		t.Fatalf("pruning pass: %+v; want at least %d records deleted and %d kept, in one delete transaction", pr, rounds, rounds)
	}
	if n := liveRecordsOf(t, c.meta); n != pr.Kept {
		t.Fatalf("%d sequencer records left, want the %d kept", n, pr.Kept)
	}
	waitIndex(t, c.meta, c.index, "keep", parts)
	for p := range int32(parts) {
		if got := c.readFrom(t, "keep", p, 0); !slices.Equal(got, kept[p]) {
			t.Fatalf("partition %d of the kept topic reads %v, want %v", p, got, kept[p])
		}
	}
}

// liveRecordsOf counts the sequencer records left.
func liveRecordsOf(t *testing.T, meta *metadata.Client) int {
	t.Helper()
	recs, err := seqlog.New(meta).Records(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// pruneAfterGrace runs a pruning pass (which notes the revision), waits
// for the sequencer to checkpoint its last record, moves the janitor's
// clock past the record grace and returns the next pass's report.
func pruneAfterGrace(t *testing.T, j *gc.Janitor, clk *clock, meta *metadata.Client) maintenance.PruneReport {
	t.Helper()
	if _, err := j.PruneRecords(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitCheckpoint(t, meta)
	clk.Advance(gc.DefaultRecordGrace + time.Second)
	pr, err := j.PruneRecords(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pr
}
