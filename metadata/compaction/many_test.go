package compaction_test

import (
	"context"
	"errors"
	"testing"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
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
