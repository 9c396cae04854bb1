package fetch_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/sequencer/seqtest"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// env is a real etcd and a real MinIO bucket; ingest nodes write level-0
// objects there and commit either directly or through an in-process
// sequencer; fetch nodes read over their own etcd client.
type env struct {
	endpoints []string
	writer    *metadata.Client
	store     tier.Store
	topics    *metadata.Cache // the ingest node's topics
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{endpoints: testenv.StartEtcd(t)}
	e.writer = connect(t, e.endpoints)
	minio := testenv.MinIO(t)
	s3, err := tier.NewS3(ctx, minio.S3Config(minio.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	e.store = s3
	return e
}

func connect(t *testing.T, endpoints []string) *metadata.Client {
	t.Helper()
	c, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) createTopic(t *testing.T, name string, parts int32) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: name, Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	if e.topics == nil {
		ca, err := e.writer.NewCache(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ca.Close)
		e.topics = ca
	}
	if !testenv.Eventually(10*time.Second, func() bool { _, ok := e.topics.Topic(name); return ok }) {
		t.Fatalf("topic %s never reached the ingest node's cache", name)
	}
}

// sequencer runs a sequencer in process and returns a committer that
// reaches it.
func (e *env) sequencer(t *testing.T) ingest.Committer {
	t.Helper()
	_, c := seqtest.Start(t, e.writer, sequencer.Config{ID: "seq-1"})
	return c
}

// ingester is an ingest node committing through c.
func (e *env) ingester(t *testing.T, c ingest.Committer) *ingest.Ingester {
	t.Helper()
	in, err := ingest.New(ingest.Config{NodeID: "in", Linger: time.Millisecond, FlushBytes: 1 << 20}, e.store, c, e.topics, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	return in
}

// fetcher is a fetch node: its own etcd client, watched index and an
// empty block cache (every block is read from MinIO).
func (e *env) fetcher(t *testing.T) (*fetch.Fetcher, *metadata.Cache) {
	t.Helper()
	meta := connect(t, e.endpoints)
	ca, err := meta.NewCache(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ca.Close)
	return fetch.NewFetcher(e.store, meta, ca, blockcache.NewMemory(64<<20), nil, nil), ca
}

// log is what each partition must read back: values by offset.
type log map[int32][]string

// produce sends rounds of records, each round one record to every
// partition; a record's value names its partition and round.
func produce(t *testing.T, in *ingest.Ingester, topic string, parts int32, rounds int, tag string, want log) {
	t.Helper()
	for r := range rounds {
		recs := make([]ingest.Record, 0, parts)
		for p := range parts {
			recs = append(recs, ingest.Record{Partition: p, Record: segment.Record{Timestamp: int64(1000 + r), Key: []byte("k"),
				Value: fmt.Appendf(nil, "%s-%d-%d", tag, p, r)}})
		}
		res, err := in.Produce(context.Background(), topic, recs)
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range res {
			if x.Partition != recs[i].Partition || x.Offset != int64(len(want[x.Partition])) {
				t.Fatalf("%s round %d: record for partition %d landed at %d/%d, want offset %d", tag, r, recs[i].Partition, x.Partition, x.Offset, len(want[x.Partition]))
			}
			want[x.Partition] = append(want[x.Partition], string(recs[i].Value))
		}
	}
}

// readAll fetches a partition from offset 0 to its high watermark and
// checks it reads back exactly want, dense and in order.
func readAll(t *testing.T, f *fetch.Fetcher, topic string, p int32, want []string) {
	t.Helper()
	var got []string
	for off := int64(0); off < int64(len(want)); {
		res, err := f.Fetch(context.Background(), topic, p, off, 1<<20, 10*time.Second)
		if err != nil {
			t.Fatalf("fetch %s/%d at %d: %v", topic, p, off, err)
		}
		if len(res.Records) == 0 {
			t.Fatalf("fetch %s/%d at %d: nothing (high watermark %d, want %d records)", topic, p, off, res.HighWatermark, len(want))
		}
		for _, r := range res.Records {
			if r.Offset != off {
				t.Fatalf("%s/%d: record at offset %d, want %d", topic, p, r.Offset, off)
			}
			got = append(got, string(r.Value))
			off++
		}
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s/%d offset %d: %q, want %q", topic, p, i, got[i], want[i])
		}
	}
}

// TestFetchSequencedRecords is the end-to-end proof: an ingest node writes
// objects to MinIO and commits them through the sequencer (no index or
// partition keys are written); a fetch node on another etcd client reads
// every record back, its latest offsets match, and a fetch node whose
// watched index is frozen still reads a record acknowledged after it
// stopped (the linearizable lookup finds it in the records).
func TestFetchSequencedRecords(t *testing.T) {
	ctx := context.Background()
	const parts = 40
	e := newEnv(t)
	e.createTopic(t, "seq", parts)
	f, _ := e.fetcher(t)
	frozen, frozenCache := e.fetcher(t)
	frozenCache.Close()
	in := e.ingester(t, e.sequencer(t))
	want := log{}
	produce(t, in, "seq", parts, 4, "s", want)

	for p := range int32(parts) {
		readAll(t, f, "seq", p, want[p])
	}
	offs, err := f.ListOffsets(ctx, "seq", []int32{0, 17, parts - 1}, fetch.Latest, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range offs {
		if o.Offset != int64(len(want[o.Partition])) {
			t.Fatalf("latest offset of partition %d: %d, want %d", o.Partition, o.Offset, len(want[o.Partition]))
		}
	}
	// The frozen index knows of no record at all: each fetch asks etcd.
	for _, p := range []int32{0, 17, parts - 1} {
		last := int64(len(want[p]) - 1)
		res, err := frozen.Fetch(ctx, "seq", p, last, 1<<20, 0)
		if err != nil || len(res.Records) != 1 || string(res.Records[0].Value) != want[p][last] || res.HighWatermark != last+1 {
			t.Fatalf("fetch with a lagging index of %d/%d: %+v, %v", p, last, res, err)
		}
	}
}

// TestFetchMixedHistory: blocks committed by the direct path first, then,
// once the sequencer took over, through it; the fetch node reads each
// partition back dense and in order across the switch, and the index
// readers list the direct entries (index keys) before the record ones.
func TestFetchMixedHistory(t *testing.T) {
	ctx := context.Background()
	const parts = 8
	e := newEnv(t)
	e.createTopic(t, "mixed", parts)
	f, _ := e.fetcher(t)
	want := log{}
	direct := e.ingester(t, e.writer)
	produce(t, direct, "mixed", parts, 3, "direct", want)
	direct.Close(ctx)
	seq := e.ingester(t, e.sequencer(t))
	produce(t, seq, "mixed", parts, 3, "seq", want)

	for p := range int32(parts) {
		readAll(t, f, "mixed", p, want[p])
	}
	reader := connect(t, e.endpoints)
	states, err := reader.PartitionStates(ctx, "mixed")
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(parts) {
		if states[p].Next != 6 {
			t.Fatalf("partition %d high watermark %d, want 6", p, states[p].Next)
		}
		entries, st, err := reader.IndexEntries(ctx, "mixed", p)
		if err != nil || st.Next != 6 {
			t.Fatalf("IndexEntries of %d: next %d, %v", p, st.Next, err)
		}
		next := int64(0)
		for i, en := range entries {
			if en.Base != next || (en.Record != 0) != (en.Base >= 3) {
				t.Fatalf("partition %d entry %d: %+v (want base %d, from a record from offset 3 on)", p, i, en, next)
			}
			next = en.End()
		}
		if next != 6 {
			t.Fatalf("partition %d entries end at %d, want 6", p, next)
		}
	}
}
