package groups_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/varve-io/varve/metadata/groups"
)

type A = groups.Assignment

func subs(topics []string, ids ...string) []groups.Subscription {
	out := make([]groups.Subscription, len(ids))
	for i, id := range ids {
		out[i] = groups.Subscription{ID: id, Topics: topics}
	}
	return out
}

func TestAssignRange(t *testing.T) {
	cases := []struct {
		name    string
		members []groups.Subscription
		parts   map[string]int32
		want    map[string]A
	}{
		{"even", subs([]string{"t"}, "a", "b"), map[string]int32{"t": 4},
			map[string]A{"a": {"t": {0, 1}}, "b": {"t": {2, 3}}}},
		{"uneven, first gets more", subs([]string{"t", "u"}, "b", "a"), map[string]int32{"t": 3, "u": 1},
			map[string]A{"a": {"t": {0, 1}, "u": {0}}, "b": {"t": {2}}}},
		{"more members than partitions", subs([]string{"t"}, "a", "b", "c"), map[string]int32{"t": 2},
			map[string]A{"a": {"t": {0}}, "b": {"t": {1}}, "c": {}}},
		{"missing topic", subs([]string{"gone"}, "a"), map[string]int32{},
			map[string]A{"a": {}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := groups.Assign(groups.StrategyRange, tc.members, tc.parts, nil)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// moves counts partitions whose owner changed between two assignments.
func moves(prev, next map[string]A) int {
	owner := map[string]string{}
	for id, a := range prev {
		for tp, ps := range a {
			for _, p := range ps {
				owner[fmt.Sprint(tp, p)] = id
			}
		}
	}
	n := 0
	for id, a := range next {
		for tp, ps := range a {
			for _, p := range ps {
				if o, ok := owner[fmt.Sprint(tp, p)]; ok && o != id {
					n++
				}
			}
		}
	}
	return n
}

func checkComplete(t *testing.T, got map[string]A, parts map[string]int32) {
	t.Helper()
	seen := map[string]bool{}
	for _, a := range got {
		for tp, ps := range a {
			for _, p := range ps {
				k := fmt.Sprint(tp, "/", p)
				if seen[k] {
					t.Fatalf("%s assigned twice: %v", k, got)
				}
				seen[k] = true
			}
		}
	}
	total := 0
	for _, n := range parts {
		total += int(n)
	}
	if len(seen) != total {
		t.Fatalf("%d of %d partitions assigned: %v", len(seen), total, got)
	}
}

func TestAssignSticky(t *testing.T) {
	topics := []string{"t", "u"}
	parts := map[string]int32{"t": 8, "u": 4}
	cases := []struct {
		name      string
		prev      map[string]A
		members   []string
		wantMoves int
		wantCount map[string]int // nil: balanced within one
	}{
		{"first member takes everything", nil, []string{"a"}, 0, map[string]int{"a": 12}},
		{"second member takes half, nothing else moves", map[string]A{"a": {"t": {0, 1, 2, 3, 4, 5, 6, 7}, "u": {0, 1, 2, 3}}},
			[]string{"a", "b"}, 6, map[string]int{"a": 6, "b": 6}},
		{"third member takes a third from both", map[string]A{"a": {"t": {0, 1, 2, 3, 4, 5}}, "b": {"t": {6, 7}, "u": {0, 1, 2, 3}}},
			[]string{"a", "b", "c"}, 4, map[string]int{"a": 4, "b": 4, "c": 4}},
		{"a member leaves: only its partitions move", map[string]A{"a": {"t": {0, 1, 2, 3}}, "b": {"t": {4, 5, 6, 7}}, "c": {"u": {0, 1, 2, 3}}},
			[]string{"a", "b"}, 4, map[string]int{"a": 6, "b": 6}}, // c's four
		{"nothing changes", map[string]A{"a": {"t": {0, 2, 4, 6}, "u": {0, 2}}, "b": {"t": {1, 3, 5, 7}, "u": {1, 3}}},
			[]string{"a", "b"}, 0, map[string]int{"a": 6, "b": 6}},
		{"stale previous partitions are dropped", map[string]A{"a": {"t": {0, 1, 99}, "gone": {0}}},
			[]string{"a", "b"}, 0, map[string]int{"a": 6, "b": 6}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := groups.Assign(groups.StrategySticky, subs(topics, tc.members...), parts, tc.prev)
			checkComplete(t, got, parts)
			if m := moves(tc.prev, got); m != tc.wantMoves {
				t.Errorf("%d partitions moved, want %d: %v → %v", m, tc.wantMoves, tc.prev, got)
			}
			for id, n := range tc.wantCount {
				if got[id].Count() != n {
					t.Errorf("member %s has %d partitions, want %d: %v", id, got[id].Count(), n, got)
				}
			}
			// Kept partitions stay with their owner: a second run is stable.
			if again := groups.Assign(groups.StrategySticky, subs(topics, tc.members...), parts, got); !reflect.DeepEqual(again, got) {
				t.Errorf("not stable: %v then %v", got, again)
			}
		})
	}
	// Different subscriptions: every partition goes to a subscriber.
	mixed := []groups.Subscription{{ID: "a", Topics: []string{"t"}}, {ID: "b", Topics: []string{"t", "u"}}, {ID: "c", Topics: []string{"u"}}}
	got := groups.Assign(groups.StrategySticky, mixed, parts, nil)
	checkComplete(t, got, parts)
	if len(got["a"]["u"]) > 0 || len(got["c"]["t"]) > 0 {
		t.Fatalf("partition given to a non-subscriber: %v", got)
	}
}
