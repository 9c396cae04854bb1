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
//
// The compactor keeps its claims: a second pass over the same partitions
// claims nothing, and its etcd transactions are its swaps', one per batch
// of the pass (passBatch partitions: its groups' swaps nested in one
// transaction).
func TestPassAt1000PartitionsScale(t *testing.T) {
	const parts, flushes = 1000, 6
	e := newEnv(t)
	e.sequenced(t)
	e.topic(t, metadata.Topic{Name: "wide", Partitions: parts})
	seq := make([]int64, parts)
	fill(t, e, "wide", parts, flushes, 2*parts, seq)
	e.waitCache(t)
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
	// Claims of up to 126 partitions each (a pass batch of 4 groups is 4
	// claims), and one write per batch, its groups' swaps nested in it:
	// planned from the watched index, a swap writes without a read of its
	// own. Before (a read and a write per transaction of a group of 64,
	// 31 + 31 + 2, and a release per claim): 126 at ebd4323; 42 with
	// claims given back in the swaps, 31 swaps a transaction (4e88ee1); 24
	// (16 in the next pass) with 63 swaps a transaction (7252cb1).
	nclaims := 0
	for b := 0; b < parts; b += passBatch {
		nclaims += (min(passBatch, parts-b) + compaction.MaxClaimBatch - 1) / compaction.MaxClaimBatch
	}
	nswaps := (parts + passBatch - 1) / passBatch
	if limit := nclaims + 1 + nswaps; txns > float64(limit) {
		t.Errorf("the pass made %.0f etcd transactions, want at most %d", txns, limit)
	}
	t.Logf("pass: %d GETs, %d PUTs, %.0f etcd transactions, etcd sent %.1f MiB, records %d KiB", e.rec.Count(tier.OpGet), e.rec.Count(tier.OpPut), txns, sent/(1<<20), recs>>10)
	if held := claims(t, e); len(held) != parts {
		t.Fatalf("%d claims held after the pass, want the %d partitions'", len(held), parts)
	}

	// The next pass: the claims are the compactor's already.
	fill(t, e, "wide", parts, flushes, 2*parts, seq)
	e.waitCache(t)
	txns = etcdTxns(t)
	st, err = c.RunOnce(context.Background())
	txns = etcdTxns(t) - txns
	if err != nil || st.Jobs != parts || st.Conflicts != 0 {
		t.Fatalf("second pass: %+v %v, want all %d partitions compacted", st, err, parts)
	}
	if limit := nswaps + 1; txns > float64(limit) {
		t.Errorf("the second pass made %.0f etcd transactions, want at most %d (its swaps')", txns, limit)
	}
	t.Logf("second pass: %.0f etcd transactions", txns)
	e.waitCache(t)
	f := e.fetcher()
	for _, p := range []int32{0, 1, 499, 998, 999} {
		readsBackFilled(t, f, "wide", p, 4*flushes)
	}
	c.Close()
	if left := claims(t, e); len(left) != 0 {
		t.Fatalf("%d claims left after Close, e.g. %s", len(left), left[0])
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
// handled so far.
func etcdTxns(t *testing.T) float64 { return testenv.EtcdTxns(t) }

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
	// A claim (126 partitions each), and one write of the groups' swaps
	// (no read: planned from the watched index; 55 + 45 in two nested
	// transactions).
	if limit := 1 + 1; txns > float64(limit) {
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
// jobs at once (Workers, default 4): four jobs' PUTs wait for each other.
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
	gated := &gatedPuts{Store: e.rec, n: DefaultWorkers, all: make(chan struct{})}
	c, err := New(Config{NodeID: "c1", MinEntries: 4, GroupBytes: -1}, gated, e.meta, e.cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
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
	c.Close()
	if left := claims(t, e); len(left) != 0 {
		t.Fatalf("claims left after Close: %v", left)
	}
}

// TestClaimsKeptUpToAShare: a compactor keeps its claims from pass to
// pass (no claim transaction for a partition it compacted before) but not
// more than its share of the partitions when other compactors run, so a
// compactor that starts gets work; claims of a deleted topic are given
// back, and Close gives back the rest.
func TestClaimsKeptUpToAShare(t *testing.T) {
	const parts = 20
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "s", Partitions: parts})
	e.topic(t, metadata.Topic{Name: "gone", Partitions: 2})
	seq, gone := make([]int64, parts), make([]int64, 2)
	var compactors atomic.Int32
	compactors.Store(1)
	count := func(context.Context) (int, error) { return int(compactors.Load()), nil }
	c1 := newCompactor(t, e, "c1", Config{MinEntries: 2, Compactors: count})
	c2 := newCompactor(t, e, "c2", Config{MinEntries: 2, Compactors: count})
	// pass returns the pass's etcd transactions.
	pass := func(c *Compactor, wantJobs int) float64 {
		t.Helper()
		e.waitCache(t)
		txns := etcdTxns(t)
		st, err := c.RunOnce(context.Background())
		if err != nil || st.Jobs != wantJobs || st.Conflicts != 0 {
			t.Fatalf("%s's pass: %+v %v, want %d jobs", c.cfg.NodeID, st, err, wantJobs)
		}
		return etcdTxns(t) - txns
	}
	owners := func(want map[string]int) {
		t.Helper()
		got := map[string]int{}
		for _, v := range etcdPrefix(t, e, "/varve/claims/") {
			got[string(v)]++
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("claims held: %v, want %v", got, want)
		}
	}

	fill(t, e, "s", parts, 2, 2*parts, seq)
	fill(t, e, "gone", 2, 2, 4, gone)
	pass(c1, parts+2)
	owners(map[string]int{"c1": parts + 2})
	if err := e.meta.DeleteTopic(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	// A second compactor: c1 still holds every partition, c2 gets none;
	// c1's next pass keeps its share and gives back the rest (and the
	// deleted topic's).
	compactors.Store(2)
	fill(t, e, "s", parts, 2, 2*parts, seq)
	pass(c2, 0)
	// One swap transaction and one release, no claim.
	if txns := pass(c1, parts); txns != 2 {
		t.Errorf("c1's pass over %d held partitions, giving back %d: %.0f etcd transactions, want 2", parts, parts/2+2, txns)
	}
	owners(map[string]int{"c1": parts / 2})
	fill(t, e, "s", parts, 2, 2*parts, seq)
	pass(c2, parts/2)
	pass(c1, parts/2)
	owners(map[string]int{"c1": parts / 2, "c2": parts / 2})
	// c1 stops: c2 takes its partitions, and alone keeps them all.
	c1.Close()
	compactors.Store(1)
	fill(t, e, "s", parts, 2, 2*parts, seq)
	pass(c2, parts)
	owners(map[string]int{"c2": parts})
	e.waitCache(t)
	f := e.fetcher()
	for p := range int32(parts) {
		readsBackFilled(t, f, "s", p, int(seq[p]))
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
// groups): two PUTs for the pass, not one per job; through the sequencer,
// one etcd transaction.
func TestMergesAndNewEntriesGrouped(t *testing.T) {
	t.Run("direct", func(t *testing.T) { testMergesAndNewEntriesGrouped(t, false) })
	t.Run("sequenced", func(t *testing.T) { testMergesAndNewEntriesGrouped(t, true) })
}

func testMergesAndNewEntriesGrouped(t *testing.T, sequenced bool) {
	const parts = groupPartitions
	e := newEnv(t)
	if sequenced {
		e.sequenced(t)
	}
	e.topic(t, metadata.Topic{Name: "g", Partitions: parts})
	seq := make([]int64, parts)
	c := newCompactor(t, e, "c1", Config{MinEntries: 2, MergeObjects: 2})
	st, txns, err := mergeAndNewEntries(t, e, c, parts, seq)
	if err != nil || st.Jobs != 2*parts || st.Conflicts != 0 {
		t.Fatalf("pass: %+v %v, want %d jobs (a merge and new entries per partition)", st, err, 2*parts)
	}
	if puts := e.rec.Count(tier.OpPut); puts != 2 {
		t.Errorf("%d PUTs for %d small jobs, want 2 (two groups)", puts, st.Jobs)
	}
	// Through the sequencer (no partition state), both groups' swaps are
	// fenced on the views and nested in one transaction (the claims are
	// held from the earlier passes). Direct-path partitions write their
	// state: one group swaps fenced on its views, the other reads.
	t.Logf("%d jobs: %.0f etcd transactions", st.Jobs, txns)
	if sequenced && txns != 1 {
		t.Errorf("%.0f etcd transactions for the pass, want 1", txns)
	}
	mergedReadBack(t, e, parts, seq)
}

// TestJobsOnTheirOwnSwapWithTheBatch: partitions written through the
// sequencer, each with a merge and new level-0 entries, every job on its
// own object (GroupBytes negative): each job is stored alone, and their
// swaps, fenced on the views, go with the batch in one etcd transaction
// (they cost one transaction each, and a partition's second swap failed
// its fence after the first and was read again).
func TestJobsOnTheirOwnSwapWithTheBatch(t *testing.T) {
	const parts = 20
	e := newEnv(t)
	e.sequenced(t)
	e.topic(t, metadata.Topic{Name: "g", Partitions: parts})
	seq := make([]int64, parts)
	c := newCompactor(t, e, "c1", Config{MinEntries: 2, MergeObjects: 2, GroupBytes: -1})
	st, txns, err := mergeAndNewEntries(t, e, c, parts, seq)
	if err != nil || st.Jobs != 2*parts || st.Conflicts != 0 || st.EntriesIn == 0 || st.BytesWritten == 0 {
		t.Fatalf("pass: %+v %v, want %d jobs (a merge and new entries per partition)", st, err, 2*parts)
	}
	if puts := e.rec.Count(tier.OpPut); puts != 2*parts {
		t.Errorf("%d PUTs for %d jobs on their own, want one each", puts, st.Jobs)
	}
	t.Logf("%d jobs: %.0f etcd transactions", st.Jobs, txns)
	if txns != 1 {
		t.Errorf("%.0f etcd transactions for the pass, want 1", txns)
	}
	mergedReadBack(t, e, parts, seq)
}

// gatedPuts holds every PutIfAbsent until n of them are in.
type gatedPuts struct {
	tier.Store
	n      int32
	inside atomic.Int32
	all    chan struct{}
}

func (g *gatedPuts) PutIfAbsent(ctx context.Context, key string, b []byte) error {
	if g.inside.Add(1) == g.n {
		close(g.all)
	}
	select {
	case <-g.all:
	case <-time.After(20 * time.Second):
		return errors.New("no other job ran meanwhile")
	}
	return g.Store.PutIfAbsent(ctx, key, b)
}

// mergeAndNewEntries runs two passes over topic g of parts partitions,
// each after two flushes, then two more flushes, and returns the third
// pass's stats, etcd transactions and error: each partition then has a
// merge (its two level-1 objects) and new level-0 entries. The store's
// recorder holds the third pass's calls only.
func mergeAndNewEntries(t *testing.T, e *env, c *Compactor, parts int, seq []int64) (Stats, float64, error) {
	t.Helper()
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
	txns := etcdTxns(t)
	st, err := c.RunOnce(context.Background())
	return st, etcdTxns(t) - txns, err
}

// mergedReadBack checks that every partition of g reads back its records
// in order, from one level-1 and one level-2 entry.
func mergedReadBack(t *testing.T, e *env, parts int, seq []int64) {
	t.Helper()
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
