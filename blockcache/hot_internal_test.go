package blockcache

import (
	"slices"
	"testing"
	"time"
)

// TestHotPartitionsList: the list an ask names is every partition read in
// the last hotFor, by topic and partition; none (the whole object) until
// the partitions have settled; partitions no longer read are forgotten,
// also on a node that never asks (touch prunes).
func TestHotPartitionsList(t *testing.T) {
	h := &hotPartitions{settle: hotSettle}
	t0 := time.Unix(1_000_000, 0)
	ns := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	h.touch("b", 2, ns(0))
	h.touch("a", 7, ns(0))
	h.touch("b", 1, ns(time.Second))
	if got := h.partitions(t0.Add(2 * time.Second)); got != nil {
		t.Fatalf("before the partitions settled: %v, want nil (ask for the whole object)", got)
	}
	got := h.partitions(t0.Add(time.Second + hotSettle))
	want := []TopicPartitions{{"a", []int32{7}}, {"b", []int32{1, 2}}}
	if !slices.EqualFunc(got, want, func(x, y TopicPartitions) bool { return x.Topic == y.Topic && slices.Equal(x.Partitions, y.Partitions) }) {
		t.Fatalf("hot partitions %v, want %v", got, want)
	}

	// b/1 read again later; the others not: past hotFor they are gone.
	h.touch("b", 1, ns(50*time.Second))
	got = h.partitions(t0.Add(61 * time.Second))
	if len(got) != 1 || got[0].Topic != "b" || !slices.Equal(got[0].Partitions, []int32{1}) {
		t.Fatalf("after a minute: %v, want b/1 only", got)
	}

	// A node that never asks still forgets: a new partition's first read
	// prunes the ones not read for hotFor.
	h2 := &hotPartitions{settle: hotSettle}
	for p := range int32(100) {
		h2.touch("old", p, ns(0))
	}
	h2.touch("new", 0, ns(2*hotFor))
	n := 0
	h2.m.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d partitions remembered, want 1 (the 100 unread ones pruned)", n)
	}
}
