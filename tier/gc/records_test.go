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
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/tier"
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
		s, err := sequencer.New(c.meta, sequencer.Config{ID: "seq-1"})
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
		committer = sequencer.NewClient(c.meta, func(context.Context, string) (sequencer.Service, error) { return s, nil })
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

// TestRetentionLeavesRecordEntries: a topic whose every record is past
// retention, committed first directly, then through the sequencer. A
// retention pass drops the entries under index keys (the log start moves
// past them) and leaves the blocks sequencer records hold: there is no
// key of theirs to delete, and records cannot be rewritten yet. Those
// still read back identical, before and after an orphan collection.
func TestRetentionLeavesRecordEntries(t *testing.T) {
	ctx := context.Background()
	const parts = 3
	c := newSeqCluster(t, metadata.Topic{Name: "ret", Partitions: parts, RetentionMs: 1000, RetentionBytes: -1})
	want := map[int32][]string{}
	direct := c.ingester(t, false)
	produceRounds(t, direct, "ret", parts, 2, "d", want)
	direct.Close(ctx)
	produceRounds(t, c.ingester(t, true), "ret", parts, 2, "s", want)

	clk := &clock{}
	j := newJanitor(t, c.store, c.meta, clk)
	rep, err := j.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 2*parts {
		t.Fatalf("retention dropped %d entries, want the %d direct ones", rep.Entries, 2*parts)
	}
	for range 3 {
		clk.Advance(2 * grace)
		if _, err := j.CollectOrphans(ctx); err != nil {
			t.Fatal(err)
		}
	}
	states, err := c.meta.PartitionStates(ctx, "ret")
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.meta.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.index.WaitRevision(ctx, st.Revision); err != nil {
		t.Fatal(err)
	}
	for p := range int32(parts) {
		if st := states[p]; st.Start != 2 || st.Next != 4 {
			t.Fatalf("partition %d after retention: %+v, want start 2, next 4", p, st)
		}
		if _, err := c.fetcher.Fetch(ctx, "ret", p, 0, 1<<20, 0); !errors.Is(err, fetch.ErrOffsetOutOfRange) {
			t.Fatalf("fetch of a dropped offset: %v", err)
		}
		if got := c.readFrom(t, "ret", p, 2); !slices.Equal(got, want[p][2:]) {
			t.Fatalf("partition %d reads %v after retention, want %v", p, got, want[p][2:])
		}
	}
}
