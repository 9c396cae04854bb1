package groups_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
)

// env is a metadata client and the groups kept in its etcd.
type env struct {
	*metadata.Client
	*groups.Groups
}

func connect(t *testing.T) env {
	t.Helper()
	m, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return env{m, groups.New(m)}
}

func groupEnv(t *testing.T) (env, context.Context) {
	t.Helper()
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "events", Partitions: 6}); err != nil {
		t.Fatal(err)
	}
	return c, ctx
}

func join(t *testing.T, c env, g string, timeout time.Duration) *groups.Session {
	t.Helper()
	s, err := c.Join(context.Background(), groups.JoinSpec{Group: g, Topics: []string{"events"}, SessionTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Leave(context.Background()) })
	return s
}

// nextWith waits for a generation with n members.
func nextWith(t *testing.T, s *groups.Session, n int) groups.Generation {
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
	if err := c.CommitOffsets(ctx, "g", a.ID(), ga2.Generation, []groups.OffsetCommit{
		{Topic: "events", Partition: keep, Offset: 0}, {Topic: "events", Partition: lost, Offset: 0},
	}); err != nil {
		t.Fatal(err)
	}
	before, err := c.State(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name   string
		member string
		gen    int64
		offs   []groups.OffsetCommit
		want   error
	}{
		{"stale generation", a.ID(), ga.Generation, []groups.OffsetCommit{{Topic: "events", Partition: keep}}, groups.ErrStaleGeneration},
		{"unknown member", "m-nobody", ga2.Generation, []groups.OffsetCommit{{Topic: "events", Partition: keep}}, groups.ErrUnknownMember},
		{"not assigned", b.ID(), gb.Generation, []groups.OffsetCommit{{Topic: "events", Partition: keep}}, groups.ErrNotAssigned},
		{"past the end", a.ID(), ga2.Generation, []groups.OffsetCommit{{Topic: "events", Partition: keep, Offset: 5}}, metadata.ErrInvalidArgument},
		{"negative", a.ID(), ga2.Generation, []groups.OffsetCommit{{Topic: "events", Partition: keep, Offset: -1}}, metadata.ErrInvalidArgument},
		{"partition out of range", a.ID(), ga2.Generation, []groups.OffsetCommit{{Topic: "events", Partition: 6}}, metadata.ErrPartitionOutOfRange},
		{"unknown topic", a.ID(), ga2.Generation, []groups.OffsetCommit{{Topic: "nope", Partition: 0}}, metadata.ErrTopicNotFound},
		{"twice", a.ID(), ga2.Generation, []groups.OffsetCommit{{Topic: "events", Partition: keep}, {Topic: "events", Partition: keep}}, metadata.ErrInvalidArgument},
		{"bad group", a.ID(), ga2.Generation, nil, metadata.ErrInvalidArgument},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			g := "g"
			if tc.name == "bad group" {
				g, tc.offs = "a/b", []groups.OffsetCommit{{Topic: "events"}}
			}
			err := c.CommitOffsets(ctx, g, tc.member, tc.gen, tc.offs)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			after, err := c.State(ctx, "g")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before.Offsets, after.Offsets) || after.Meta.Generation != before.Meta.Generation {
				t.Fatalf("state changed: %+v → %+v", before, after)
			}
		})
	}

	// Reset and delete need an empty group.
	if _, err := c.ResetOffsets(ctx, "g", "events", map[int32]int64{0: 0}); !errors.Is(err, groups.ErrGroupActive) {
		t.Fatalf("reset of an active group: %v", err)
	}
	if err := c.Delete(ctx, "g"); !errors.Is(err, groups.ErrGroupActive) {
		t.Fatalf("delete of an active group: %v", err)
	}
	if err := c.Delete(ctx, "unknown"); !errors.Is(err, groups.ErrGroupNotFound) {
		t.Fatalf("delete of an unknown group: %v", err)
	}
	if _, err := c.FetchCommitted(ctx, "unknown", nil); !errors.Is(err, groups.ErrGroupNotFound) {
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
	if err := c.CommitOffsets(ctx, "g", b.ID(), ga3.Generation, []groups.OffsetCommit{{Topic: "events", Partition: 0}}); !errors.Is(err, groups.ErrUnknownMember) {
		t.Fatalf("zombie commit: %v", err)
	}
	if err := a.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.State(ctx, "g")
	if err != nil || st.Active() || len(st.Offsets) != 2 {
		t.Fatalf("after both left: %+v, %v", st, err)
	}
	if _, err := c.ResetOffsets(ctx, "g", "events", map[int32]int64{0: 1}); !errors.Is(err, metadata.ErrInvalidArgument) {
		t.Fatalf("reset past the end: %v", err)
	}
	if _, err := c.ResetOffsets(ctx, "g", "events", map[int32]int64{0: 0, 1: 0}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if gs, err := c.List(ctx); err != nil || len(gs) != 0 {
		t.Fatalf("groups after delete: %v, %v", gs, err)
	}
}

// A member that stops heartbeating disappears after its session timeout;
// the others get its partitions and its commits are refused.
func TestGroupSessionExpires(t *testing.T) {
	c, ctx := groupEnv(t)
	a := join(t, c, "g", 0)
	z := join(t, c, "g", groups.MinSessionTimeout)
	gz := nextWith(t, z, 2)
	start := time.Now()
	// a's lease is 10 s, z's 1 s and z never heartbeats.
	var ga groups.Generation
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
	if _, err := z.Next(ctx, gz.Generation); !errors.Is(err, groups.ErrUnknownMember) {
		t.Fatalf("expired session: %v", err)
	}
	if err := c.CommitOffsets(ctx, "g", z.ID(), gz.Generation, []groups.OffsetCommit{{Topic: "events", Partition: gz.Assigned["events"][0]}}); !errors.Is(err, groups.ErrUnknownMember) {
		t.Fatalf("zombie commit: %v", err)
	}
	if _, err := c.Heartbeat(ctx, "g", z.ID()); !errors.Is(err, groups.ErrUnknownMember) {
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
		spec groups.JoinSpec
		want error
	}{
		{"no topics", groups.JoinSpec{Group: "g"}, metadata.ErrInvalidArgument},
		{"unknown topic", groups.JoinSpec{Group: "g", Topics: []string{"nope"}}, metadata.ErrTopicNotFound},
		{"bad group", groups.JoinSpec{Group: "", Topics: []string{"events"}}, metadata.ErrInvalidArgument},
		{"bad strategy", groups.JoinSpec{Group: "g", Topics: []string{"events"}, Strategy: "roundrobin"}, metadata.ErrInvalidArgument},
		{"other strategy", groups.JoinSpec{Group: "g", Topics: []string{"events"}, Strategy: groups.StrategyRange}, groups.ErrInconsistentStrategy},
		{"short timeout", groups.JoinSpec{Group: "g", Topics: []string{"events"}, SessionTimeout: time.Millisecond}, metadata.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := c.State(ctx, "g")
			if _, err := c.Join(ctx, tc.spec); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			after, _ := c.State(ctx, "g")
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
	m2, err := metadata.Connect(ctx, metadata.Config{Endpoints: c1.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Close() })
	c2 := env{m2, groups.New(m2)}
	var ss []*groups.Session
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
		st, err := c1.State(ctx, "g")
		return err == nil && st.Meta.Generation == gen
	}) {
		t.Fatal("generation did not settle")
	}
}

// BenchmarkCommitOffsets measures fenced commits of one partition each.
func BenchmarkCommitOffsets(b *testing.B) {
	m, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	c := env{m, groups.New(m)}
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "events", Partitions: 1}); err != nil {
		b.Fatal(err)
	}
	s, err := c.Join(ctx, groups.JoinSpec{Group: "g", Topics: []string{"events"}})
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
		if err := c.CommitOffsets(ctx, "g", s.ID(), g.Generation, []groups.OffsetCommit{{Topic: "events", Partition: 0, Offset: 0}}); err != nil {
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
	if st, err := c.State(ctx, "g"); err != nil || len(st.Offsets) != 0 {
		t.Fatalf("a refused reset wrote %d offsets (%v)", len(st.Offsets), err)
	}
	bad[parts-1] = 0
	got, err := c.ResetOffsets(ctx, "g", "wide", bad)
	if err != nil || len(got) != parts {
		t.Fatalf("reset of %d partitions: %d offsets, %v", parts, len(got), err)
	}
	st, err := c.State(ctx, "g")
	if err != nil || len(st.Offsets) != parts {
		t.Fatalf("after the reset: %d committed offsets (%v), want %d", len(st.Offsets), err, parts)
	}
}
