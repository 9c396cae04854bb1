package compaction_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/sequencer/seqtest"
)

// ClaimMany takes the free claims of a batch in one transaction (a held
// one fails only itself), and ReleaseMany gives back only the caller's.
func TestClaimManyAndReleaseMany(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	a, err := c.NewClaimer(ctx, "a", 10e9)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	b, err := c.NewClaimer(ctx, "b", 10e9)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if ok, err := b.Claim(ctx, "t", 3); !ok || err != nil {
		t.Fatalf("b claims: %v %v", ok, err)
	}
	var tps []metadata.TopicPartition
	for p := range int32(compaction.MaxClaimBatch) {
		tps = append(tps, metadata.TopicPartition{Topic: "t", Partition: p})
	}
	ok, rev, err := a.ClaimMany(ctx, tps)
	if err != nil || rev == 0 {
		t.Fatalf("ClaimMany: %v (revision %d)", err, rev)
	}
	for i, got := range ok {
		if want := i != 3; got != want {
			t.Fatalf("partition %d claimed = %v, want %v", i, got, want)
		}
	}
	if ok, _ := b.Claim(ctx, "t", 10); ok {
		t.Fatal("b took a partition a claimed in its batch")
	}
	if _, _, err := a.ClaimMany(ctx, append(tps, metadata.TopicPartition{Topic: "t", Partition: 99})); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("ClaimMany over the limit: %v", err)
	}
	// b's release of the whole batch gives back only its own claim.
	if err := b.ReleaseMany(ctx, tps); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.Claim(ctx, "t", 10); ok {
		t.Fatal("b released a's claim")
	}
	if err := a.ReleaseMany(ctx, tps); err != nil {
		t.Fatal(err)
	}
	again, _, err := b.ClaimMany(ctx, tps)
	if err != nil {
		t.Fatal(err)
	}
	for i, got := range again {
		if !got {
			t.Fatalf("partition %d still held after both released", i)
		}
	}
}

// SwapMany applies the swaps of several partitions together or not at
// all: one stale swap refuses the whole group and nothing changes.
func TestSwapManyAllOrNothing(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	for _, name := range []string{"x", "y"} {
		if _, err := c.CreateTopic(ctx, metadata.Topic{Name: name, Partitions: 1}); err != nil {
			t.Fatal(err)
		}
		commitN(t, c, name, 0, 4)
	}
	read := func(topic string) []metadata.IndexEntry {
		es, _, err := c.IndexEntries(ctx, topic, 0)
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	oldX, oldY := read("x"), read("y")
	merged := func(topic string, old []metadata.IndexEntry) compaction.Swap {
		return compaction.Swap{Topic: topic, Old: old, New: []metadata.IndexEntry{{
			Base: old[0].Base, Object: "l1/_shared/g.vseg", Off: 8, Len: 200, Records: old[len(old)-1].End() - old[0].Base, Level: 1, RawBytes: 1600,
		}}}
	}
	// Two swaps of one partition, or a dropped prefix: refused.
	if err := c.SwapMany(ctx, []compaction.Swap{merged("x", oldX[:2]), merged("x", oldX[2:])}); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("two swaps of x/0: %v", err)
	}
	// y changes after the plan: the group is refused, x is not swapped.
	commitN(t, c, "y", 4, 1)
	stale := oldY
	if err := c.SwapIndex(ctx, merged("y", read("y")[:2])); err != nil {
		t.Fatal(err)
	}
	if err := c.SwapMany(ctx, []compaction.Swap{merged("x", oldX), merged("y", stale)}); !errors.Is(err, compaction.ErrSwapConflict) {
		t.Fatalf("stale group: %v, want ErrSwapConflict", err)
	}
	if got := read("x"); len(got) != 4 || got[0].Level != 0 {
		t.Fatalf("x after a refused group: %+v", got)
	}
	// Fresh plans: both swap at once.
	y := read("y")
	if err := c.SwapMany(ctx, []compaction.Swap{merged("x", oldX), {Topic: "y", Old: y, New: []metadata.IndexEntry{{
		Base: 0, Object: "l2/_shared/g.vseg", Off: 300, Len: 250, Records: 50, Level: 2, RawBytes: 2000,
	}}}}); err != nil {
		t.Fatal(err)
	}
	gx, gy := read("x"), read("y")
	if len(gx) != 1 || gx[0].Records != 40 || len(gy) != 1 || gy[0].Records != 50 {
		t.Fatalf("after the group: x %+v, y %+v", gx, gy)
	}
	_, st, err := c.IndexEntries(ctx, "x", 0)
	if err != nil || st.Bytes != 200 || st.Segments != 1 {
		t.Fatalf("x's state after the group: %+v %v", st, err)
	}
}

// A swap planned from the watched index (Swap.Seen) writes fenced on that
// view, without a read; a view that a commit at the head made stale falls
// back to a read and applies; one a swap made stale is a conflict, and a
// topic deleted and created again is never swapped into.
func TestSwapFencedOnTheWatchedView(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	for _, name := range []string{"x", "y", "z"} {
		if _, err := c.CreateTopic(ctx, metadata.Topic{Name: name, Partitions: 1}); err != nil {
			t.Fatal(err)
		}
		commitN(t, c, name, 0, 4)
	}
	cache, err := c.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	view := func(topic string) ([]metadata.IndexEntry, *metadata.Seen) {
		t.Helper()
		if err := cache.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		es, sn, ok := cache.SnapshotSeen(topic, 0)
		if !ok || sn.Rev == 0 || sn.TopicModRev == 0 || sn.PartitionModRev == 0 || sn.Partition.Bytes == 0 {
			t.Fatalf("view of %s: %v %+v", topic, ok, sn)
		}
		return es, &sn
	}
	merged := func(topic string, old []metadata.IndexEntry, sn *metadata.Seen) compaction.Swap {
		return compaction.Swap{Topic: topic, Old: old, Seen: sn, New: []metadata.IndexEntry{{
			Base: old[0].Base, Object: "l1/" + topic + ".vseg", Off: 8, Len: 150, Records: old[len(old)-1].End() - old[0].Base, Level: 1, RawBytes: 1600,
		}}}
	}
	check := func(topic string, entries int, bytes int64) {
		t.Helper()
		es, st, err := c.IndexEntries(ctx, topic, 0)
		if err != nil || len(es) != entries || st.Bytes != bytes {
			t.Fatalf("%s: %d entries, state %+v, %v; want %d entries, %d bytes", topic, len(es), st, err, entries, bytes)
		}
	}
	oldX, snX := view("x")
	oldY, snY := view("y")
	if err := c.SwapMany(ctx, []compaction.Swap{merged("x", oldX, snX), merged("y", oldY, snY)}); err != nil {
		t.Fatal(err)
	}
	check("x", 1, 150)
	check("y", 1, 150)

	// A commit at the head of z after the view: the fenced write fails,
	// the read sees only the partition state moved, and the swap applies
	// on top of it.
	oldZ, snZ := view("z")
	commitN(t, c, "z", 4, 1)
	if err := c.SwapIndex(ctx, merged("z", oldZ, snZ)); err != nil {
		t.Fatal(err)
	}
	check("z", 2, 250)

	// A view another swap made stale: a conflict, nothing changes.
	commitN(t, c, "x", 4, 2)
	oldX, snX = view("x")
	if err := c.SwapIndex(ctx, merged("x", oldX[1:], nil)); err != nil {
		t.Fatal(err)
	}
	if err := c.SwapIndex(ctx, merged("x", oldX, snX)); !errors.Is(err, compaction.ErrSwapConflict) {
		t.Fatalf("a swap on a stale view: %v, want ErrSwapConflict", err)
	}
	check("x", 2, 300)

	// y deleted and created again after the view: not swapped.
	commitN(t, c, "y", 1, 2)
	oldY, snY = view("y")
	if err := c.DeleteTopic(ctx, "y"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "y", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.SwapIndex(ctx, merged("y", oldY, snY)); err == nil {
		t.Fatal("a swap into a topic created again after its view applied")
	}
	check("y", 0, 0)
}

// SwapMany at the operation limit GroupCost allows is a transaction etcd
// accepts, and one more swap is refused before etcd sees it: swaps of
// three topics' partitions with direct-path keys and a partition state
// (four comparisons each), and swaps of level-0 runs of sequencer records
// planned from the watched index (two each: 63 in a transaction), whose
// read, when the write fenced on the view fails (the topic altered since),
// takes two read transactions.
func TestSwapManyAtTheOperationLimit(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	// n is the most of the swaps next returns that fit in a transaction.
	atLimit := func(next func(i int) compaction.Swap) (swaps []compaction.Swap, n int) {
		for i := 0; ; i++ {
			swaps = append(swaps, next(i))
			if compaction.GroupCost(swaps) > compaction.MaxGroupOps {
				return swaps, i
			}
		}
	}
	applied := func(swaps []compaction.Swap) {
		t.Helper()
		for _, s := range swaps {
			if es, _, err := c.IndexEntries(ctx, s.Topic, s.Partition); err != nil || len(es) != 1 || es[0].Level != 1 || es[0].End() != s.Old[len(s.Old)-1].End() {
				t.Fatalf("%s/%d after the swap: %+v %v", s.Topic, s.Partition, es, err)
			}
		}
	}
	l1 := func(i int, old []metadata.IndexEntry) []metadata.IndexEntry {
		return []metadata.IndexEntry{{Base: 0, Object: "l1/_shared/g.vseg", Off: int64(8 + 100*i), Len: 100, Records: old[len(old)-1].End(), Level: 1, RawBytes: 800}}
	}

	topics := []string{"a", "b", "c"}
	for _, topic := range topics {
		if _, err := c.CreateTopic(ctx, metadata.Topic{Name: topic, Partitions: 20}); err != nil {
			t.Fatal(err)
		}
	}
	direct, n := atLimit(func(i int) compaction.Swap {
		topic, p := topics[i%len(topics)], int32(i/len(topics))
		for b := range 2 {
			res, err := c.Commit(ctx, fmt.Sprintf("%s-%d-%d", topic, p, b), []metadata.Append{{
				Topic: topic, Partition: p, Object: fmt.Sprintf("obj-%d", b), Off: 8, Len: 100, Records: 10, RawBytes: 400,
			}})
			if err != nil || res[0].Err != nil {
				t.Fatalf("commit %s/%d: %v %v", topic, p, err, res)
			}
		}
		old, _, err := c.IndexEntries(ctx, topic, p)
		if err != nil {
			t.Fatal(err)
		}
		return compaction.Swap{Topic: topic, Partition: p, Old: old, New: l1(i, old)}
	})
	if n != 31 {
		t.Errorf("%d direct-path swaps of 3 topics fit in a transaction, want 31", n)
	}
	if err := c.SwapMany(ctx, direct); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("%d swaps, one over the limit: %v", n+1, err)
	}
	if err := c.SwapMany(ctx, direct[:n]); err != nil {
		t.Fatalf("%d swaps at the limit: %v", n, err)
	}
	applied(direct[:n])

	cache := sequencedViews(t, c, 100, 2)
	viewed, n := atLimit(func(i int) compaction.Swap {
		old, sn, ok := cache.SnapshotSeen("seq", int32(i))
		if !ok || len(old) != 2 || old[0].Record == 0 || sn.PartitionModRev != 0 {
			t.Fatalf("view of seq/%d: %v %+v %+v", i, ok, old, sn)
		}
		return compaction.Swap{Topic: "seq", Partition: int32(i), Old: old, Seen: &sn, New: l1(i, old)}
	})
	if n != 63 {
		t.Errorf("%d swaps of sequencer records planned from the watched index fit in a transaction, want 63", n)
	}
	if err := c.SwapMany(ctx, viewed); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("%d swaps, one over the limit: %v", n+1, err)
	}
	// The topic altered after the view: the fenced write fails, the read
	// (3 keys a swap) takes two transactions, the write applies.
	if _, err := c.UpdateTopic(ctx, "seq", func(t *metadata.Topic) error { t.RetentionMs = 3600_000; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.SwapMany(ctx, viewed[:n]); err != nil {
		t.Fatalf("%d swaps at the limit: %v", n, err)
	}
	applied(viewed[:n])
	t.Logf("%d direct-path swaps of 3 topics, %d of sequencer records, in one transaction", 31, n)
}

// SwapGroups writes the groups planned from the watched index together,
// one nested transaction each: four groups of 50 swaps of sequencer-record
// runs (about 400 operations) and a fifth in one etcd transaction. A group
// whose view another swap made stale fails alone (then reads and finds
// the conflict: nothing of it changes), a group without views reads and
// applies, and a group over NestedGroupOps is refused before etcd sees it.
func TestSwapGroupsNestedInOneTransaction(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	const parts = 300
	cache := sequencedViews(t, c, parts, 2)
	swap := func(p int, viewed bool) compaction.Swap {
		old, sn, ok := cache.SnapshotSeen("seq", int32(p))
		if !ok || len(old) != 2 {
			t.Fatalf("view of seq/%d: %v %+v", p, ok, old)
		}
		s := compaction.Swap{Topic: "seq", Partition: int32(p), Old: old, New: []metadata.IndexEntry{{
			Base: 0, Object: fmt.Sprintf("l1/g%d.vseg", p), Off: 8, Len: 100, Records: 20, Level: 1, RawBytes: 800,
		}}}
		if viewed {
			s.Seen = &sn
		}
		return s
	}
	group := func(from, n int, viewed bool) []compaction.Swap {
		var g []compaction.Swap
		for p := from; p < from+n; p++ {
			g = append(g, swap(p, viewed))
		}
		return g
	}
	groups := [][]compaction.Swap{group(0, 50, true), group(50, 50, true), group(100, 50, true), group(150, 50, true),
		group(200, 10, true), group(210, 10, false), group(220, 60, true)}
	if err := c.SwapIndex(ctx, swap(200, true)); err != nil {
		t.Fatal(err)
	}
	txns := testenv.EtcdTxns(t)
	errs := c.SwapGroups(ctx, groups)
	txns = testenv.EtcdTxns(t) - txns
	for g, want := range []error{nil, nil, nil, nil, compaction.ErrSwapConflict, nil, metadata.ErrInvalidArgument} {
		if (want == nil) != (errs[g] == nil) || (want != nil && !errors.Is(errs[g], want)) {
			t.Errorf("group %d: %v, want %v", g, errs[g], want)
		}
	}
	// The nested write of groups 0-4; group 4's read; group 5's read and
	// write.
	if txns != 4 {
		t.Errorf("%.0f etcd transactions, want 4", txns)
	}
	for p := range parts {
		es, _, err := c.IndexEntries(ctx, "seq", int32(p))
		if err != nil {
			t.Fatal(err)
		}
		swapped := p < 201 || (p >= 210 && p < 220)
		if swapped && (len(es) != 1 || es[0].Object != fmt.Sprintf("l1/g%d.vseg", p) || es[0].Records != 20) {
			t.Fatalf("seq/%d: %+v, want its level-1 entry", p, es)
		}
		if !swapped && (len(es) != 2 || es[0].Record == 0) {
			t.Fatalf("seq/%d: %+v, want its two record entries", p, es)
		}
	}
}

// Two swaps of disjoint runs of one partition, planned from the same view,
// may be in two groups of one SwapGroups request when neither writes the
// partition state (a partition written only through the sequencer): etcd
// checks the comparisons of all nested transactions before the first
// write, so both apply. A partition with a state may have one swap only.
func TestSwapGroupsTwoRunsOfOnePartition(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "direct", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	commitN(t, c, "direct", 0, 4)
	cache := sequencedViews(t, c, 1, 4)
	halves := func(topic string) (a, b compaction.Swap) {
		old, sn, ok := cache.SnapshotSeen(topic, 0)
		if !ok || len(old) != 4 {
			t.Fatalf("view of %s: %v %+v", topic, ok, old)
		}
		half := func(es []metadata.IndexEntry, name string) compaction.Swap {
			return compaction.Swap{Topic: topic, Old: es, Seen: &sn, New: []metadata.IndexEntry{{
				Base: es[0].Base, Object: name, Off: 8, Len: 150, Records: 20, Level: 1, RawBytes: 800,
			}}}
		}
		return half(old[:2], "l1/"+topic+"-a.vseg"), half(old[2:], "l1/"+topic+"-b.vseg")
	}
	a, b := halves("direct")
	errs := c.SwapGroups(ctx, [][]compaction.Swap{{a}, {b}})
	if errs[0] != nil || !errors.Is(errs[1], metadata.ErrInvalidArgument) {
		t.Fatalf("two swaps of a direct-path partition: %v", errs)
	}
	a, b = halves("seq")
	txns := testenv.EtcdTxns(t)
	if errs := c.SwapGroups(ctx, [][]compaction.Swap{{a}, {b}}); errs[0] != nil || errs[1] != nil {
		t.Fatalf("two swaps of a sequencer partition: %v", errs)
	}
	if txns = testenv.EtcdTxns(t) - txns; txns != 1 {
		t.Errorf("%.0f etcd transactions, want 1", txns)
	}
	es, _, err := c.IndexEntries(ctx, "seq", 0)
	if err != nil || len(es) != 2 || es[0].Object != "l1/seq-a.vseg" || es[1].Object != "l1/seq-b.vseg" || es[1].Base != 20 {
		t.Fatalf("seq after both swaps: %+v %v", es, err)
	}
}

// sequencedViews creates topic "seq" of parts partitions, commits flushes
// blocks of 10 records to each through a sequencer, and returns a watched
// index that has them.
func sequencedViews(t *testing.T, c env, parts, flushes int) *metadata.Cache {
	t.Helper()
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "seq", Partitions: int32(parts)}); err != nil {
		t.Fatal(err)
	}
	_, seq := seqtest.Start(t, c.Client, sequencer.Config{ID: "seq"})
	for b := range flushes {
		var as []metadata.Append
		for p := range int32(parts) {
			as = append(as, metadata.Append{Topic: "seq", Partition: p, Object: fmt.Sprintf("s%d", b), Off: int64(100 * p), Len: 100, Records: 10, RawBytes: 400})
		}
		if res, err := seq.Commit(ctx, fmt.Sprintf("s%d", b), as); err != nil || res[0].Err != nil {
			t.Fatalf("commit through the sequencer: %v %v", res, err)
		}
	}
	cache, err := c.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	if err := cache.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	return cache
}

// TestSwapGroupsSpillKeepsTheView: more groups than one transaction takes
// (MaxNestedGroups), the last one holding the second runs of partitions
// whose first runs are in the first transaction's groups. The last group
// is fenced on the revision of the transaction that swapped those first
// runs (refence), not on the view they moved: it applies in a second
// transaction, without a read.
func TestSwapGroupsSpillKeepsTheView(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	const parts = compaction.MaxNestedGroups
	cache := sequencedViews(t, c, parts, 4)
	var groups [][]compaction.Swap
	var second []compaction.Swap
	for p := range int32(parts) {
		old, sn, ok := cache.SnapshotSeen("seq", p)
		if !ok || len(old) != 4 {
			t.Fatalf("view of seq/%d: %v %+v", p, ok, old)
		}
		half := func(es []metadata.IndexEntry, name string) compaction.Swap {
			return compaction.Swap{Topic: "seq", Partition: p, Old: es, Seen: &sn, New: []metadata.IndexEntry{{
				Base: es[0].Base, Object: name, Off: 8, Len: 150, Records: 20, Level: 1, RawBytes: 800,
			}}}
		}
		groups = append(groups, []compaction.Swap{half(old[:2], fmt.Sprintf("l1/a%d.vseg", p))})
		second = append(second, half(old[2:], fmt.Sprintf("l1/b%d.vseg", p)))
	}
	groups = append(groups, second)
	txns := testenv.EtcdTxns(t)
	for g, err := range c.SwapGroups(ctx, groups) {
		if err != nil {
			t.Fatalf("group %d: %v", g, err)
		}
	}
	if txns = testenv.EtcdTxns(t) - txns; txns != 2 {
		t.Errorf("%.0f etcd transactions for %d groups, want 2 (the last group in a second, without a read)", txns, len(groups))
	}
	for p := range int32(parts) {
		es, _, err := c.IndexEntries(ctx, "seq", p)
		if err != nil || len(es) != 2 || es[0].Object != fmt.Sprintf("l1/a%d.vseg", p) || es[1].Object != fmt.Sprintf("l1/b%d.vseg", p) || es[1].Base != 20 {
			t.Fatalf("seq/%d after both swaps: %+v %v", p, es, err)
		}
	}
}
