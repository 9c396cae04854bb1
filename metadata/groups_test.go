package metadata_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

type A = metadata.Assignment

func subs(topics []string, ids ...string) []metadata.Subscription {
	out := make([]metadata.Subscription, len(ids))
	for i, id := range ids {
		out[i] = metadata.Subscription{ID: id, Topics: topics}
	}
	return out
}

func TestAssignRange(t *testing.T) {
	cases := []struct {
		name    string
		members []metadata.Subscription
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
			got := metadata.Assign(metadata.StrategyRange, tc.members, tc.parts, nil)
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
			got := metadata.Assign(metadata.StrategySticky, subs(topics, tc.members...), parts, tc.prev)
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
			if again := metadata.Assign(metadata.StrategySticky, subs(topics, tc.members...), parts, got); !reflect.DeepEqual(again, got) {
				t.Errorf("not stable: %v then %v", got, again)
			}
		})
	}
	// Different subscriptions: every partition goes to a subscriber.
	mixed := []metadata.Subscription{{ID: "a", Topics: []string{"t"}}, {ID: "b", Topics: []string{"t", "u"}}, {ID: "c", Topics: []string{"u"}}}
	got := metadata.Assign(metadata.StrategySticky, mixed, parts, nil)
	checkComplete(t, got, parts)
	if len(got["a"]["u"]) > 0 || len(got["c"]["t"]) > 0 {
		t.Fatalf("partition given to a non-subscriber: %v", got)
	}
}

func groupEnv(t *testing.T) (*metadata.Client, context.Context) {
	t.Helper()
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "events", Partitions: 6}); err != nil {
		t.Fatal(err)
	}
	return c, ctx
}

func join(t *testing.T, c *metadata.Client, g string, timeout time.Duration) *metadata.GroupSession {
	t.Helper()
	s, err := c.JoinGroup(context.Background(), metadata.JoinSpec{Group: g, Topics: []string{"events"}, SessionTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Leave(context.Background()) })
	return s
}

// nextWith waits for a generation with n members.
func nextWith(t *testing.T, s *metadata.GroupSession, n int) metadata.GroupGeneration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var after int64
	for {
		g, err := s.Next(ctx, after)
		if err != nil {
			t.Fatalf("member %s waiting for %d members: %v", s.ID(), n, err)
		}
		if g.Members == n {
			return g
		}
		after = g.Generation
	}
}

func TestGroupMembershipAndFencing(t *testing.T) {
	c, ctx := groupEnv(t)
	a := join(t, c, "g", 0)
	ga := nextWith(t, a, 1)
	if ga.Assigned.Count() != 6 {
		t.Fatalf("single member got %v", ga.Assigned)
	}
	b := join(t, c, "g", 0)
	gb := nextWith(t, b, 2)
	ga2 := nextWith(t, a, 2)
	if ga2.Generation != gb.Generation || ga2.Generation <= ga.Generation {
		t.Fatalf("generations: a %d then %d, b %d", ga.Generation, ga2.Generation, gb.Generation)
	}
	if ga2.Assigned.Count() != 3 || gb.Assigned.Count() != 3 || ga2.Revoked.Count() != 3 {
		t.Fatalf("a %v (revoked %v), b %v", ga2.Assigned, ga2.Revoked, gb.Assigned)
	}
	// a commits a partition it just lost (allowed in this generation) and one it keeps.
	var keep, lost int32
	for _, p := range ga2.Assigned["events"] {
		keep = p
	}
	for _, p := range ga2.Revoked["events"] {
		lost = p
	}
	if err := c.CommitOffsets(ctx, "g", a.ID(), ga2.Generation, []metadata.OffsetCommit{
		{Topic: "events", Partition: keep, Offset: 0}, {Topic: "events", Partition: lost, Offset: 0},
	}); err != nil {
		t.Fatal(err)
	}
	before, err := c.GroupState(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name   string
		member string
		gen    int64
		offs   []metadata.OffsetCommit
		want   error
	}{
		{"stale generation", a.ID(), ga.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: keep}}, metadata.ErrStaleGeneration},
		{"unknown member", "m-nobody", ga2.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: keep}}, metadata.ErrUnknownMember},
		{"not assigned", b.ID(), gb.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: keep}}, metadata.ErrNotAssigned},
		{"past the end", a.ID(), ga2.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: keep, Offset: 5}}, metadata.ErrInvalidArgument},
		{"negative", a.ID(), ga2.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: keep, Offset: -1}}, metadata.ErrInvalidArgument},
		{"partition out of range", a.ID(), ga2.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: 6}}, metadata.ErrPartitionOutOfRange},
		{"unknown topic", a.ID(), ga2.Generation, []metadata.OffsetCommit{{Topic: "nope", Partition: 0}}, metadata.ErrTopicNotFound},
		{"twice", a.ID(), ga2.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: keep}, {Topic: "events", Partition: keep}}, metadata.ErrInvalidArgument},
		{"bad group", a.ID(), ga2.Generation, nil, metadata.ErrInvalidArgument},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			g := "g"
			if tc.name == "bad group" {
				g, tc.offs = "a/b", []metadata.OffsetCommit{{Topic: "events"}}
			}
			err := c.CommitOffsets(ctx, g, tc.member, tc.gen, tc.offs)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			after, err := c.GroupState(ctx, "g")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before.Offsets, after.Offsets) || after.Meta.Generation != before.Meta.Generation {
				t.Fatalf("state changed: %+v → %+v", before, after)
			}
		})
	}

	// Reset and delete need an empty group.
	if _, err := c.ResetOffsets(ctx, "g", "events", map[int32]int64{0: 0}); !errors.Is(err, metadata.ErrGroupActive) {
		t.Fatalf("reset of an active group: %v", err)
	}
	if err := c.DeleteGroup(ctx, "g"); !errors.Is(err, metadata.ErrGroupActive) {
		t.Fatalf("delete of an active group: %v", err)
	}
	if err := c.DeleteGroup(ctx, "unknown"); !errors.Is(err, metadata.ErrGroupNotFound) {
		t.Fatalf("delete of an unknown group: %v", err)
	}
	if _, err := c.FetchCommitted(ctx, "unknown", nil); !errors.Is(err, metadata.ErrGroupNotFound) {
		t.Fatalf("fetch committed of an unknown group: %v", err)
	}

	// b leaves: a gets everything, in a new generation, and b is a zombie.
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	ga3 := nextWith(t, a, 1)
	if ga3.Assigned.Count() != 6 || ga3.Generation <= ga2.Generation {
		t.Fatalf("after leave: %+v", ga3)
	}
	if err := c.CommitOffsets(ctx, "g", b.ID(), ga3.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: 0}}); !errors.Is(err, metadata.ErrUnknownMember) {
		t.Fatalf("zombie commit: %v", err)
	}
	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.GroupState(ctx, "g")
	if err != nil || st.Active() || len(st.Offsets) != 2 {
		t.Fatalf("after both left: %+v, %v", st, err)
	}
	if _, err := c.ResetOffsets(ctx, "g", "events", map[int32]int64{0: 1}); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("reset past the end: %v", err)
	}
	if _, err := c.ResetOffsets(ctx, "g", "events", map[int32]int64{0: 0, 1: 0}); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if gs, err := c.ListGroups(ctx); err != nil || len(gs) != 0 {
		t.Fatalf("groups after delete: %v, %v", gs, err)
	}
}

// A member that stops heartbeating disappears after its session timeout;
// the others get its partitions and its commits are refused.
func TestGroupSessionExpires(t *testing.T) {
	c, ctx := groupEnv(t)
	a := join(t, c, "g", 0)
	z := join(t, c, "g", metadata.MinSessionTimeout)
	gz := nextWith(t, z, 2)
	start := time.Now()
	// a's lease is 10 s, z's 1 s and z never heartbeats.
	var ga metadata.GroupGeneration
	for ga.Members != 1 {
		var err error
		if ga, err = a.Next(ctx, max(ga.Generation, gz.Generation)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("expired member's partitions moved after %v", time.Since(start))
	if ga.Assigned.Count() != 6 {
		t.Fatalf("survivor has %v", ga.Assigned)
	}
	if _, err := z.Next(ctx, gz.Generation); !errors.Is(err, metadata.ErrUnknownMember) {
		t.Fatalf("expired session: %v", err)
	}
	if err := c.CommitOffsets(ctx, "g", z.ID(), gz.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: gz.Assigned["events"][0]}}); !errors.Is(err, metadata.ErrUnknownMember) {
		t.Fatalf("zombie commit: %v", err)
	}
	if _, err := c.Heartbeat(ctx, "g", z.ID()); !errors.Is(err, metadata.ErrUnknownMember) {
		t.Fatalf("zombie heartbeat: %v", err)
	}
	if gen, err := c.Heartbeat(ctx, "g", a.ID()); err != nil || gen != ga.Generation {
		t.Fatalf("heartbeat: %d, %v", gen, err)
	}
}

func TestJoinGroupBadInput(t *testing.T) {
	c, ctx := groupEnv(t)
	nextWith(t, join(t, c, "g", 0), 1)
	cases := []struct {
		name string
		spec metadata.JoinSpec
		want error
	}{
		{"no topics", metadata.JoinSpec{Group: "g"}, metadata.ErrInvalidArgument},
		{"unknown topic", metadata.JoinSpec{Group: "g", Topics: []string{"nope"}}, metadata.ErrTopicNotFound},
		{"bad group", metadata.JoinSpec{Group: "", Topics: []string{"events"}}, metadata.ErrInvalidArgument},
		{"bad strategy", metadata.JoinSpec{Group: "g", Topics: []string{"events"}, Strategy: "roundrobin"}, metadata.ErrInvalidArgument},
		{"other strategy", metadata.JoinSpec{Group: "g", Topics: []string{"events"}, Strategy: metadata.StrategyRange}, metadata.ErrInconsistentStrategy},
		{"short timeout", metadata.JoinSpec{Group: "g", Topics: []string{"events"}, SessionTimeout: time.Millisecond}, metadata.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := c.GroupState(ctx, "g")
			if _, err := c.JoinGroup(ctx, tc.spec); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			after, _ := c.GroupState(ctx, "g")
			if len(after.Members) != len(before.Members) || after.Meta.Generation != before.Meta.Generation {
				t.Fatalf("state changed")
			}
		})
	}
}

// Racing members on two clients (two nodes) converge on one generation per
// member-set change and every partition is assigned exactly once.
func TestGroupConcurrentJoins(t *testing.T) {
	c1, ctx := groupEnv(t)
	c2, err := metadata.Connect(ctx, metadata.Config{Endpoints: c1.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	var ss []*metadata.GroupSession
	for i := range 6 {
		c := c1
		if i%2 == 1 {
			c = c2
		}
		ss = append(ss, join(t, c, "g", 0))
	}
	t0 := time.Now()
	final := map[string]A{}
	var gen int64
	for _, s := range ss {
		g := nextWith(t, s, 6)
		final[s.ID()] = g.Assigned
		if gen != 0 && g.Generation != gen {
			t.Fatalf("members see generations %d and %d", gen, g.Generation)
		}
		gen = g.Generation
	}
	t.Logf("converged after %v", time.Since(t0))
	checkComplete(t, final, map[string]int32{"events": 6})
	for id, a := range final {
		if a.Count() != 1 {
			t.Fatalf("member %s has %v", id, a)
		}
	}
	if !testenv.EventuallyEvery(10*time.Second, 20*time.Millisecond, func() bool {
		st, err := c1.GroupState(ctx, "g")
		return err == nil && st.Meta.Generation == gen
	}) {
		t.Fatal("generation did not settle")
	}
}

// BenchmarkCommitOffsets measures fenced commits of one partition each.
func BenchmarkCommitOffsets(b *testing.B) {
	c, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "events", Partitions: 1}); err != nil {
		b.Fatal(err)
	}
	s, err := c.JoinGroup(ctx, metadata.JoinSpec{Group: "g", Topics: []string{"events"}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Leave(ctx)
	g, err := s.Next(ctx, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := c.CommitOffsets(ctx, "g", s.ID(), g.Generation, []metadata.OffsetCommit{{Topic: "events", Partition: 0, Offset: 0}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
}

// TestResetOffsetsOverThousandPartitions: a reset of every partition of a
// 1,000-partition topic (more than one etcd transaction holds) applies to
// all of them; one offset outside its log refuses the whole reset before
// anything is written.
func TestResetOffsetsOverThousandPartitions(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	const parts = 1000
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "wide", Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	bad := map[int32]int64{}
	for p := range int32(parts) {
		bad[p] = 0
	}
	bad[parts-1] = 7 // past the end of an empty partition
	if _, err := c.ResetOffsets(ctx, "g", "wide", bad); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("reset with one offset past the end: %v", err)
	}
	if st, err := c.GroupState(ctx, "g"); err != nil || len(st.Offsets) != 0 {
		t.Fatalf("a refused reset wrote %d offsets (%v)", len(st.Offsets), err)
	}
	bad[parts-1] = 0
	got, err := c.ResetOffsets(ctx, "g", "wide", bad)
	if err != nil || len(got) != parts {
		t.Fatalf("reset of %d partitions: %d offsets, %v", parts, len(got), err)
	}
	st, err := c.GroupState(ctx, "g")
	if err != nil || len(st.Offsets) != parts {
		t.Fatalf("after the reset: %d committed offsets (%v), want %d", len(st.Offsets), err, parts)
	}
}
