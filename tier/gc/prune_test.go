package gc_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/compact"
	"github.com/varve-io/varve/tier/gc"
)

// newSeqClusterOn is a fetch node (its own client, index cache and
// fetcher) on etcd and store.
func newSeqClusterOn(t *testing.T, etcd []string, store tier.Store) *seqCluster {
	t.Helper()
	reader := connectMeta(t, etcd)
	index, err := reader.NewCache(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(index.Close)
	return &seqCluster{meta: reader, store: store, index: index,
		fetcher: fetch.NewFetcher(store, reader, index, blockcache.NewMemory(16<<20), nil, nil)}
}

// seqRunner runs sequencers in process, one term after the other, and
// dials the one leading.
type seqRunner struct {
	meta *metadata.Client
	mu   sync.Mutex
	seqs map[string]*sequencer.Sequencer
	stop func()
}

func (r *seqRunner) start(t *testing.T, id string, cfg sequencer.Config) {
	t.Helper()
	cfg.ID = id
	s, err := sequencer.New(r.meta, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	if !testenv.Eventually(30*time.Second, s.Leading) {
		t.Fatalf("sequencer %s never led", id)
	}
	r.mu.Lock()
	r.seqs[id], r.stop = s, stop
	r.mu.Unlock()
}

// batches counts the records every term wrote.
func (r *seqRunner) batches() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, s := range r.seqs {
		n += s.Stats().Batches
	}
	return n
}

func (r *seqRunner) dial(_ context.Context, id string) (sequencer.Service, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.seqs[id]
	if !ok {
		return nil, fmt.Errorf("no sequencer %s", id)
	}
	return s, nil
}

// liveBytesOutsideIndex sums the keys and values under /varve/ but not
// under /varve/index/ nor the sequencer checkpoint (which holds the commit
// ids answered within the dedupe window: bounded in time, not in data).
func liveBytesOutsideIndex(t *testing.T, etcd []string) int64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var n int64
	for _, r := range [][2]string{
		{"/varve/", "/varve/index/"},
		{clientv3.GetPrefixRangeEnd("/varve/index/"), "/varve/seq/checkpoint"},
		{clientv3.GetPrefixRangeEnd("/varve/seq/checkpoint"), clientv3.GetPrefixRangeEnd("/varve/")},
	} {
		resp, err := cli.Get(context.Background(), r[0], clientv3.WithRange(r[1]))
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			n += int64(len(kv.Key) + len(kv.Value))
		}
	}
	return n
}

// liveRecords counts the seq/records/ keys.
func liveRecords(t *testing.T, etcd []string) int64 {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/varve/seq/records/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// TestPrunedRecordsKeepTheLog: a many-partition topic produced through an
// ingest node committing via the sequencer, with compaction and record
// pruning running while it produces. The log reads back identical (every
// offset once, in order) before, during and after; live sequencer records
// and etcd's live bytes stay bounded while the data grows tenfold; GC then
// deletes exactly the replaced level-0 objects and the log still reads
// back; a sequencer recovering after the pruning continues every
// partition at its high watermark.
func TestPrunedRecordsKeepTheLog(t *testing.T) {
	ctx := context.Background()
	const (
		parts      = 100
		minEntries = 4
		cpEvery    = 2
		rounds     = 4  // per phase
		phases     = 19 // the data grows tenfold after the first phase
	)
	srv := testenv.MinIO(t)
	store, err := tier.NewS3(ctx, srv.S3Config(srv.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	etcd := testenv.StartEtcd(t)
	meta := connectMeta(t, etcd)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "big", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	topics, err := meta.NewCache(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topics.Close)
	c := newSeqClusterOn(t, etcd, store)
	seqs := &seqRunner{meta: meta, seqs: map[string]*sequencer.Sequencer{}}
	seqCfg := sequencer.Config{CheckpointEvery: cpEvery}
	seqs.start(t, "seq-1", seqCfg)
	in, err := ingest.New(ingest.Config{NodeID: "in", Linger: time.Millisecond}, store, sequencer.NewClient(meta, seqs.dial), topics, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })

	cmp, err := compact.New(compact.Config{NodeID: "c1", MinEntries: minEntries, TargetBytes: 1 << 20, BlockBytes: 16 << 10}, store, meta, c.index, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cmp.Close)
	clk := &clock{}
	j := newJanitor(t, store, meta, clk)
	foot := maintenance.New(meta)

	want := map[int32][]string{}
	readAll := func(when string) {
		t.Helper()
		waitIndex(t, meta, c.index, "big", parts)
		for p := range int32(parts) {
			if got := c.readFrom(t, "big", p, 0); !slices.Equal(got, want[p]) {
				t.Fatalf("%s: partition %d reads %d records, want %d (%v…, want %v…)", when, p, len(got), len(want[p]), head(got), head(want[p]))
			}
		}
	}
	var pruned maintenance.PruneReport // summed over passes; Examined: the most deleted by one
	// maintain is one compaction pass and one pruning pass (the janitor's
	// clock moves past the record grace between passes).
	maintain := func() {
		t.Helper()
		waitIndex(t, meta, c.index, "big", parts)
		if _, err := cmp.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		clk.Advance(gc.DefaultRecordGrace + time.Second)
		rep, err := j.PruneRecords(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Every record the pass deletes goes in one transaction.
		if rep.Deleted > 0 && rep.DeleteTxns != 1 {
			t.Fatalf("pruning pass %+v: %d delete transactions for %d records, want one", rep, rep.DeleteTxns, rep.Deleted)
		}
		pruned.Deleted += rep.Deleted
		pruned.Kept += rep.Kept
		pruned.DeleteTxns += rep.DeleteTxns
		pruned.Examined = max(pruned.Examined, rep.Deleted)
	}

	produceRounds(t, in, "big", parts, rounds, "r0", want)
	readAll("before compaction")
	var firstRecords int64
	var firstOther int64
	for ph := range phases {
		// Compaction and pruning run while the next rounds are produced.
		var wg sync.WaitGroup
		wg.Go(func() { produceRounds(t, in, "big", parts, rounds, fmt.Sprint("r", ph+1), want) })
		maintain()
		wg.Wait()
		readAll(fmt.Sprintf("phase %d, while compacting", ph))
		for range 3 {
			maintain()
		}
		readAll(fmt.Sprintf("phase %d, after compaction", ph))
		n := liveRecords(t, etcd)
		f, err := foot.Footprint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("phase %d: %d rounds produced, %d sequencer records written, %d live, etcd live %d keys %d bytes", ph, (ph+2)*rounds, seqs.batches(), n, f.Keys, f.Bytes)
		if ph == 0 {
			firstRecords = n
		}
		// Records left: those holding a partition's uncompacted tail (fewer
		// than MinEntries level-0 entries; a round may take two batches)
		// and those after the checkpoint: the compaction lag, whatever
		// the data.
		if bound := int64(2 * (minEntries + cpEvery)); n > bound {
			t.Fatalf("phase %d: %d live sequencer records of %d written, want at most %d (the compaction lag)", ph, n, seqs.batches(), bound)
		}
		// Outside the index keys (which follow the compacted objects:
		// level-2 objects are never merged again, and this test's are
		// tiny) and the checkpoint, etcd's live bytes stay flat: the
		// sequencer records, one per flush, are gone.
		other := liveBytesOutsideIndex(t, etcd)
		if ph == 0 {
			firstOther = other
		}
		ss, err := foot.StorageStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("phase %d: etcd live bytes outside index keys %d; etcd DB %d bytes, %d in use", ph, other, ss.DBSize, ss.DBSizeInUse)
		if other > 2*firstOther+4096 {
			t.Fatalf("phase %d: etcd live bytes outside index keys grew from %d to %d", ph, firstOther, other)
		}
	}
	t.Logf("records live: %d after %d rounds, %d after %d", firstRecords, 2*rounds, liveRecords(t, etcd), (phases+1)*rounds)

	// GC: exactly the replaced objects go — every level-0 object no live
	// record names, and the level-1 objects merged into level 2.
	refs, _, err := foot.ReferencedObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var replaced []string
	replacedL0 := 0
	for _, k := range listKeys(t, store) {
		if _, ok := refs[k]; !ok {
			if !strings.HasPrefix(k, "l1/") && !strings.HasPrefix(k, "l2/") {
				replacedL0++
			}
			replaced = append(replaced, k)
		}
	}
	// One level-0 object per round: all but those of live records.
	if live := liveRecords(t, etcd); int64(replacedL0) < int64((phases+1)*rounds)-live {
		t.Fatalf("%d level-0 objects replaced, want at least %d", replacedL0, int64((phases+1)*rounds)-live)
	}
	var deleted []string
	for range 3 {
		clk.Advance(2 * grace)
		rep, err := j.CollectOrphans(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deleted = append(deleted, rep.Deleted...)
	}
	slices.Sort(deleted)
	slices.Sort(replaced)
	if !slices.Equal(deleted, replaced) {
		t.Fatalf("GC deleted %d objects, want the %d replaced level-0 ones", len(deleted), len(replaced))
	}
	readAll("after GC")

	// A new sequencer term recovers after the pruning and continues every
	// partition at its high watermark.
	seqs.stop()
	seqs.start(t, "seq-2", seqCfg)
	produceRounds(t, in, "big", parts, 2, "after-failover", want)
	readAll("after failover")
}

// waitIndex waits until the cache serves, for every partition, the
// entries and high watermark a linearizable read gives. (Its revision may
// stay behind etcd's: writes outside the watched range, like claims, do
// not advance it.)
func waitIndex(t *testing.T, meta *metadata.Client, index *metadata.Cache, topic string, parts int32) {
	t.Helper()
	ctx := context.Background()
	for p := range parts {
		ok := testenv.Eventually(30*time.Second, func() bool {
			want, st, err := meta.IndexEntries(ctx, topic, p)
			if err != nil {
				t.Fatal(err)
			}
			got, cst, _ := index.Snapshot(topic, p)
			if cst.Next != st.Next || len(got) != len(want) {
				return false
			}
			for i := range got {
				if got[i].Base != want[i].Base || got[i].ModRev != want[i].ModRev || got[i].Record != want[i].Record {
					return false
				}
			}
			return true
		})
		if !ok {
			got, cst, _ := index.Snapshot(topic, p)
			want, st, _ := meta.IndexEntries(ctx, topic, p)
			t.Fatalf("%s/%d: the cache serves %v (next %d), a linearizable read %v (next %d)", topic, p, got, cst.Next, want, st.Next)
		}
	}
}

func head(s []string) []string { return s[:min(len(s), 3)] }

// TestRetentionExpiresCompactedRecordEntries: a topic written only through
// the sequencer (no partition keys), its record entries compacted into
// index keys, everything past retention. Retention moves each log start
// past them and deletes the keys; the pruner deletes the records and GC
// every object.
func TestRetentionExpiresCompactedRecordEntries(t *testing.T) {
	ctx := context.Background()
	const parts = 3
	c := newSeqCluster(t, metadata.Topic{Name: "ret", Partitions: parts, RetentionMs: 1000, RetentionBytes: -1})
	want := map[int32][]string{}
	produceRounds(t, c.ingester(t, true), "ret", parts, 4, "s", want)
	waitIndex(t, c.meta, c.index, "ret", parts)
	cmp, err := compact.New(compact.Config{NodeID: "c1", MinEntries: 2}, c.store, c.meta, c.index, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cmp.Close)
	if st, err := cmp.RunOnce(ctx); err != nil || st.EntriesIn != 4*parts {
		t.Fatalf("compaction: %+v, %v; want every record entry compacted", st, err)
	}
	clk := &clock{}
	j := newJanitor(t, c.store, c.meta, clk)
	rep, err := j.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != parts {
		t.Fatalf("retention dropped %d entries, want the %d compacted ones", rep.Entries, parts)
	}
	for p := range int32(parts) {
		entries, st, err := c.meta.IndexEntries(ctx, "ret", p)
		if err != nil || len(entries) != 0 || st.Start != 4 || st.Next != 4 {
			t.Fatalf("partition %d after retention: %+v %+v, %v; want no entry, start 4, next 4", p, entries, st, err)
		}
	}
	if _, err := j.PruneRecords(ctx); err != nil {
		t.Fatal(err)
	}
	waitCheckpoint(t, c.meta)
	clk.Advance(gc.DefaultRecordGrace + time.Second)
	if pr, err := j.PruneRecords(ctx); err != nil || pr.Kept != 0 || pr.Deleted == 0 {
		t.Fatalf("pruning: %+v, %v; want every record deleted", pr, err)
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
}
