package compact

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/tier"
)

// etcdSentBytes is what the embedded etcd servers of this process sent
// their clients so far (etcd's own counter).
func etcdSentBytes(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_network_client_grpc_sent_bytes_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no etcd_network_client_grpc_sent_bytes_total: is etcd embedded?")
	return 0
}

// etcdPrefix reads every key under prefix from the env's etcd.
func etcdPrefix(t *testing.T, e *env, prefix string) map[string][]byte {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out
}

// recordBytes sums the values of the sequencer's batch records.
func recordBytes(t *testing.T, e *env) int {
	t.Helper()
	n := 0
	for _, v := range etcdPrefix(t, e, "/varve/seq/records/") {
		n += len(v)
	}
	return n
}

// TestPassAt1000PartitionsScale: 1,000 partitions written through the
// sequencer, each flush one level-0 object with a block of every
// partition. One pass compacts every partition, reads each level-0 object
// once (not once per partition: 1,000 ranged GETs of a few hundred bytes
// each), and what etcd sends the compactor does not grow with partitions
// × sequencer records (a per-partition read of the index reads every
// record).
func TestPassAt1000PartitionsScale(t *testing.T) {
	const parts, flushes = 1000, 6
	e := sequencedTopic(t, "wide", parts, flushes, 2*parts)
	objects := map[string]bool{}
	for p := range int32(parts) {
		for _, en := range e.entries(t, "wide", p) {
			objects[en.Object] = true
		}
	}
	if len(objects) != flushes {
		t.Fatalf("%d level-0 objects, want one per flush (%d)", len(objects), flushes)
	}
	recs := recordBytes(t, e)

	c := newCompactor(t, e, "c1", Config{MinEntries: flushes})
	e.rec.Reset()
	sent, txns := etcdSentBytes(t), etcdTxns(t)
	st, err := c.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sent, txns = etcdSentBytes(t)-sent, etcdTxns(t)-txns
	if st.Jobs != parts || st.EntriesIn != parts*flushes || st.Conflicts != 0 {
		t.Fatalf("one pass: %+v, want all %d partitions compacted", st, parts)
	}
	if gets := e.rec.Count(tier.OpGet); gets > len(objects) {
		t.Errorf("the pass made %d GETs, want at most one per level-0 object (%d)", gets, len(objects))
	}
	// The small runs of groupPartitions partitions at a time share one object.
	if puts := e.rec.Count(tier.OpPut); puts > (parts+groupPartitions-1)/groupPartitions {
		t.Errorf("the pass made %d PUTs, want one per %d partitions", puts, groupPartitions)
	}
	// The swaps read their keys and records' keys (no values); the watch
	// sends the new keys. Reading every record per partition would be
	// 1,000 × the records.
	if limit := float64(20*recs + 2<<20); sent > limit {
		t.Errorf("etcd sent %.0f bytes during the pass, want at most %.0f (the records hold %d bytes)", sent, limit, recs)
	}
	// Claims of up to 126 partitions each (a pass batch of 4 groups is 2
	// claims), and one write per transaction of swapsPerTxn swaps, which
	// gives their claims back: planned from the watched index, a swap
	// writes without a read of its own. Before (a read and a write per
	// transaction of a group of 64, 31 + 31 + 2, and a release per claim):
	// 126 at ebd4323.
	nclaims := (parts + compaction.MaxClaimBatch - 1) / compaction.MaxClaimBatch
	if limit := nclaims + 1 + (parts+swapsPerTxn-1)/swapsPerTxn + 1; txns > float64(limit) {
		t.Errorf("the pass made %.0f etcd transactions, want at most %d", txns, limit)
	}
	t.Logf("pass: %d GETs, %d PUTs, %.0f etcd transactions, etcd sent %.1f MiB, records %d KiB", e.rec.Count(tier.OpGet), e.rec.Count(tier.OpPut), txns, sent/(1<<20), recs>>10)
	if left := claims(t, e); len(left) != 0 {
		t.Fatalf("%d claims left after the pass, e.g. %s", len(left), left[0])
	}
	e.waitCache(t)
	f := e.fetcher()
	for _, p := range []int32{0, 1, 499, 998, 999} {
		readsBackFilled(t, f, "wide", p, 2*flushes)
	}
}

// sequencedTopic returns an env committing through a sequencer with topic
// of parts partitions, filled with flushes batches of n records, every one
// in the watched index.
func sequencedTopic(t *testing.T, topic string, parts, flushes, n int) *env {
	t.Helper()
	e := newEnv(t)
	e.sequenced(t)
	e.topic(t, metadata.Topic{Name: topic, Partitions: int32(parts)})
	fill(t, e, topic, parts, flushes, n, make([]int64, parts))
	e.waitCache(t)
	return e
}

// readsBackFilled checks that partition p of topic reads back the n
// records fill wrote to it, in order from offset 0.
func readsBackFilled(t *testing.T, f *fetch.Fetcher, topic string, p int32, n int) {
	t.Helper()
	got := fetchAll(t, f, topic, p, 0)
	if len(got) != n {
		t.Fatalf("%s/%d: %d records after compaction, want %d", topic, p, len(got), n)
	}
	for i, r := range got {
		if want := fmt.Sprintf("p%d-%d-", p, i); r.Offset != int64(i) || string(r.Value[:len(want)]) != want {
			t.Fatalf("%s/%d record %d: offset %d value %q", topic, p, i, r.Offset, r.Value)
		}
	}
}

// etcdTxns is how many Txn RPCs the embedded etcd servers of this process
// handled so far (the gRPC server's own counter).
func etcdTxns(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "grpc_method" && l.GetValue() == "Txn" {
					n += m.GetCounter().GetValue()
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal("no grpc_server_handled_total{grpc_method=\"Txn\"}: is etcd embedded?")
	}
	return n
}

// TestSwapTransactionsFollowPartitionsNotRecords: 100 partitions whose
// level-0 runs each come from 150 sequencer records (a pass's worth at a
// few flushes a second). One pass compacts each partition in one job, and
// its etcd transactions follow the partitions in a group, not the records:
// a swap fences the partition's index keys, not each record it replaces
// (when it compared every record, a run was cut at 96 records and a
// transaction held a handful of swaps).
func TestSwapTransactionsFollowPartitionsNotRecords(t *testing.T) {
	const parts, flushes = 100, 150
	e := sequencedTopic(t, "deep", parts, flushes, parts)
	c := newCompactor(t, e, "c1", Config{MinEntries: flushes})
	txns := etcdTxns(t)
	st, err := c.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	txns = etcdTxns(t) - txns
	if st.Jobs != parts || st.EntriesIn != parts*flushes || st.Conflicts != 0 {
		t.Fatalf("one pass: %+v, want each of %d partitions compacted in one job", st, parts)
	}
	// A claim (126 partitions each), and a write per transaction of up to
	// 31 swaps (no read: planned from the watched index; the claims given
	// back in it), in groups of 62 partitions: 31 + 31 + 31 + 7.
	if limit := 1 + 4; txns > float64(limit) {
		t.Errorf("the pass made %.0f etcd transactions, want at most %d", txns, limit)
	}
	t.Logf("pass over %d partitions of %d records each: %.0f etcd transactions", parts, flushes, txns)
	e.waitCache(t)
	f := e.fetcher()
	for _, p := range []int32{0, 57, 99} {
		readsBackFilled(t, f, "deep", p, flushes)
	}
}

// TestPassCompactsPartitionsConcurrently: a pass runs several partitions'
// jobs at once (Workers, default 4): four swaps wait for each other.
func TestPassCompactsPartitionsConcurrently(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "many", Partitions: 8})
	seq := make([]int64, 8)
	fill(t, e, "many", 8, 4, 64, seq)
	before := map[int32][]fetch.Record{}
	f := e.fetcher()
	for p := range int32(8) {
		before[p] = fetchAll(t, f, "many", p, 0)
	}
	c := newCompactor(t, e, "c1", Config{MinEntries: 4, GroupBytes: -1})
	var inside atomic.Int32
	all := make(chan struct{})
	c.beforeSwap = func(compaction.Swap) error {
		if inside.Add(1) == DefaultWorkers {
			close(all)
		}
		select {
		case <-all:
			return nil
		case <-time.After(20 * time.Second):
			return errors.New("no other job ran meanwhile")
		}
	}
	e.waitCache(t)
	st, err := c.RunOnce(context.Background())
	if err != nil || st.Jobs != 8 {
		t.Fatalf("pass: %+v %v, want 8 jobs", st, err)
	}
	e.waitCache(t)
	f = e.fetcher()
	for p := range int32(8) {
		sameRecords(t, fmt.Sprintf("many/%d", p), before[p], fetchAll(t, f, "many", p, 0))
		if n := len(e.entries(t, "many", p)); n != 1 {
			t.Fatalf("many/%d: %d entries, want 1", p, n)
		}
	}
	if !testenv.Eventually(5*time.Second, func() bool { return len(claims(t, e)) == 0 }) {
		t.Fatalf("claims left after the pass: %v", claims(t, e))
	}
}

// claims lists the compaction claims in etcd.
func claims(t *testing.T, e *env) []string {
	t.Helper()
	var out []string
	for k := range etcdPrefix(t, e, "/varve/claims/") {
		out = append(out, k)
	}
	return out
}

// TestSmallPartitionKeysGrowLogarithmically: a partition that receives a
// little data at a time gets one small level-1 object per pass. Merges
// are tiered (MergeObjects small objects of level L make one of level
// L+1), so after n passes it has about (MergeObjects-1)·log(n) index keys,
// not n/MergeObjects, and every record reads back.
func TestSmallPartitionKeysGrowLogarithmically(t *testing.T) {
	const rounds = 32
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "trickle", Partitions: 1})
	seq := make([]int64, 1)
	c := newCompactor(t, e, "c1", Config{MinEntries: 2, MergeObjects: 2})
	for range rounds {
		fill(t, e, "trickle", 1, 2, 5, seq)
		runUntilIdle(t, e, c)
	}
	es := e.entries(t, "trickle", 0)
	levels := map[int]int{}
	for _, en := range es {
		levels[en.Level]++
	}
	t.Logf("%d passes: %d index keys, per level %v", rounds, len(es), levels)
	// 32 level-1 objects merged pairwise: one per level, log2(32)+1 at
	// most.
	if len(es) > 6 || levels[0] != 0 {
		t.Fatalf("%d passes left %d index keys (per level %v), want at most 6", rounds, len(es), levels)
	}
	got := fetchAll(t, e.fetcher(), "trickle", 0, 0)
	if int64(len(got)) != seq[0] {
		t.Fatalf("%d records, want %d", len(got), seq[0])
	}
	for i, r := range got {
		if r.Offset != int64(i) || !strings.HasPrefix(string(r.Value), fmt.Sprintf("p0-%d-", i)) {
			t.Fatalf("record %d: offset %d value %q", i, r.Offset, r.Value)
		}
	}
}

// TestMergesAndNewEntriesGrouped: in one pass a group's worth of
// partitions (groupPartitions) each have two
// small jobs, a merge of two level-1 objects and a run of new level-0
// entries. Both kinds go into groups (a partition's two jobs into two
// groups): two PUTs for the pass, not one per job.
func TestMergesAndNewEntriesGrouped(t *testing.T) {
	const parts = groupPartitions
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "g", Partitions: parts})
	seq := make([]int64, parts)
	c := newCompactor(t, e, "c1", Config{MinEntries: 2, MergeObjects: 2})
	for range 2 {
		fill(t, e, "g", parts, 2, 2*parts, seq)
		e.waitCache(t)
		if st, err := c.RunOnce(context.Background()); err != nil || st.Jobs != parts {
			t.Fatalf("pass: %+v %v, want %d jobs", st, err, parts)
		}
	}
	fill(t, e, "g", parts, 2, 2*parts, seq)
	e.waitCache(t)
	e.rec.Reset()
	st, err := c.RunOnce(context.Background())
	if err != nil || st.Jobs != 2*parts || st.Conflicts != 0 {
		t.Fatalf("pass: %+v %v, want %d jobs (a merge and new entries per partition)", st, err, 2*parts)
	}
	if puts := e.rec.Count(tier.OpPut); puts != 2 {
		t.Errorf("%d PUTs for %d small jobs, want 2 (two groups)", puts, st.Jobs)
	}
	// No swap gave a claim back (each partition had two jobs): the pass
	// released them.
	if left := claims(t, e); len(left) != 0 {
		t.Fatalf("%d claims left after the pass, e.g. %s", len(left), left[0])
	}
	e.waitCache(t)
	f := e.fetcher()
	for p := range int32(parts) {
		got := fetchAll(t, f, "g", p, 0)
		if int64(len(got)) != seq[p] {
			t.Fatalf("g/%d: %d records, want %d", p, len(got), seq[p])
		}
		for i, r := range got {
			if r.Offset != int64(i) || !strings.HasPrefix(string(r.Value), fmt.Sprintf("p%d-%d-", p, i)) {
				t.Fatalf("g/%d record %d: offset %d value %q", p, i, r.Offset, r.Value)
			}
		}
		levels := map[int]int{}
		for _, en := range e.entries(t, "g", p) {
			levels[en.Level]++
		}
		if levels[0] != 0 || levels[1] != 1 || levels[2] != 1 {
			t.Fatalf("g/%d: entries per level %v, want one at level 1 and one at level 2", p, levels)
		}
	}
}
