package groups_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
)

func kafkaLease(t *testing.T, c env, node string) *groups.KafkaLease {
	t.Helper()
	l, err := c.NewKafkaLease(context.Background(), node, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// TestKafkaGroupHoldFences: a Kafka coordinator's marker keeps Varve
// members, a second coordinator, deletes and resets out; its commits are
// fenced on it, and once released another coordinator takes the group and
// the first one's commits fail.
func TestKafkaGroupHoldFences(t *testing.T) {
	c, ctx := groupEnv(t)
	a, b := kafkaLease(t, c, "a"), kafkaLease(t, c, "b")
	h, err := a.Hold(ctx, "g")
	if err != nil || h.Revision == 0 || h.Generation != 0 {
		t.Fatalf("hold: %+v, %v", h, err)
	}
	if again, err := a.Hold(ctx, "g"); err != nil || again.Revision != h.Revision {
		t.Fatalf("holding again under the same lease: %+v, %v; want revision %d", again, err, h.Revision)
	}
	if _, err := b.Hold(ctx, "g"); !errors.Is(err, groups.ErrKafkaHeld) {
		t.Fatalf("second coordinator's hold: %v, want ErrKafkaHeld", err)
	}
	if _, err := c.Join(ctx, groups.JoinSpec{Group: "g", Topics: []string{"events"}}); !errors.Is(err, groups.ErrInconsistentStrategy) {
		t.Fatalf("Varve join into a Kafka group: %v, want ErrInconsistentStrategy", err)
	}
	if err := c.Groups.Delete(ctx, "g"); !errors.Is(err, groups.ErrGroupActive) {
		t.Fatalf("delete of a held group: %v", err)
	}
	if _, err := c.ResetOffsets(ctx, "g", "events", map[int32]int64{0: 0}); !errors.Is(err, groups.ErrGroupActive) {
		t.Fatalf("reset of a held group: %v", err)
	}
	if err := c.Leave(ctx, "g", groups.KafkaMemberID); !errors.Is(err, groups.ErrUnknownMember) {
		t.Fatalf("Varve leave of the marker: %v, want ErrUnknownMember", err)
	}
	if errs, err := c.KafkaCommit(ctx, "g", h.Revision, 3, "m1", []groups.OffsetCommit{{Topic: "events", Partition: 1}}); err != nil || errs[0] != nil {
		t.Fatalf("commit of the holder: %v %v", errs, err)
	}
	if _, err := c.KafkaCommit(ctx, "g", 0, -1, "", []groups.OffsetCommit{{Topic: "events", Partition: 1}}); !errors.Is(err, groups.ErrKafkaHeld) {
		t.Fatalf("simple commit into a held group: %v, want ErrKafkaHeld", err)
	}
	if err := c.KafkaRebalanced(ctx, "g", h.Revision, 7, []string{"m2", "m1"}); err != nil {
		t.Fatal(err)
	}
	st, err := c.State(ctx, "g")
	if err != nil || st.Meta.Generation != 7 || st.Meta.Strategy != groups.StrategyKafka || len(st.Meta.Members) != 2 || st.Meta.Members[0] != "m1" {
		t.Fatalf("meta after a Kafka rebalance: %+v, %v", st.Meta, err)
	}
	if len(st.Members) != 1 || st.Members[0].ID != groups.KafkaMemberID || st.Members[0].Node != "a" || len(st.Offsets) != 1 || st.Offsets[0].Member != "m1" || st.Offsets[0].Generation != 3 {
		t.Fatalf("state of a held group: %+v", st)
	}
	if err := a.Release(ctx, "g", h.Revision); err != nil {
		t.Fatal(err)
	}
	hb, err := b.Hold(ctx, "g")
	if err != nil || hb.Generation != 7 {
		t.Fatalf("hold after the release: %+v, %v; want generation 7 from the meta", hb, err)
	}
	if _, err := c.KafkaCommit(ctx, "g", h.Revision, 3, "m1", []groups.OffsetCommit{{Topic: "events", Partition: 1}}); !errors.Is(err, groups.ErrKafkaFenced) {
		t.Fatalf("commit of the former holder: %v, want ErrKafkaFenced", err)
	}
	if err := c.KafkaRebalanced(ctx, "g", h.Revision, 8, nil); !errors.Is(err, groups.ErrKafkaFenced) {
		t.Fatalf("meta of the former holder: %v, want ErrKafkaFenced", err)
	}
	if err := a.Release(ctx, "g", h.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Hold(ctx, "g"); !errors.Is(err, groups.ErrKafkaHeld) {
		t.Fatalf("a stale release let go of the new holder's marker: %v", err)
	}
	// Closing the lease lets go of every marker at once.
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Done():
	default:
		t.Fatal("a closed lease is not done")
	}
	if _, err := a.Hold(ctx, "g"); err != nil {
		t.Fatalf("hold after the holder's lease was revoked: %v", err)
	}
}

// TestKafkaGroupRefusedWithVarveMembers: a group with Varve members is not
// held by a Kafka coordinator, and a commit without generation into it
// fails.
func TestKafkaGroupRefusedWithVarveMembers(t *testing.T) {
	c, ctx := groupEnv(t)
	s := join(t, c, "v", 0)
	nextWith(t, s, 1)
	l := kafkaLease(t, c, "a")
	if _, err := l.Hold(ctx, "v"); !errors.Is(err, groups.ErrInconsistentStrategy) {
		t.Fatalf("Kafka hold of a Varve group: %v, want ErrInconsistentStrategy", err)
	}
	if _, err := c.KafkaCommit(ctx, "v", 0, -1, "", []groups.OffsetCommit{{Topic: "events", Partition: 0}}); !errors.Is(err, groups.ErrGroupActive) {
		t.Fatalf("simple commit into a Varve group with members: %v, want ErrGroupActive", err)
	}
	if err := s.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Hold(ctx, "v"); err != nil {
		t.Fatalf("hold once the Varve member left: %v", err)
	}
}

// TestKafkaGroupCommitOffsets: per-partition errors (unknown topic or
// partition, metadata too large, offsets out of range) leave the other
// partitions committed; offsets may go backwards; a commit without a
// generation needs a group without members; DeleteOffsets is fenced on
// the members.
func TestKafkaGroupCommitOffsets(t *testing.T) {
	c, ctx := groupEnv(t)
	errs, err := c.KafkaCommit(ctx, "k", 0, -1, "", []groups.OffsetCommit{
		{Topic: "events", Partition: 0, Offset: 0, Metadata: "m"},
		{Topic: "nope", Partition: 0},
		{Topic: "events", Partition: 6},
		{Topic: "events", Partition: 1, Metadata: strings.Repeat("x", groups.MaxCommitMetadata+1)},
		{Topic: "events", Partition: 2, Offset: 5},
		{Topic: "events", Partition: 3, Offset: -1},
		{Topic: "events", Partition: 4, Offset: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []error{nil, metadata.ErrTopicNotFound, metadata.ErrPartitionOutOfRange, groups.ErrMetadataTooLarge, groups.ErrCommitOutOfRange, groups.ErrCommitOutOfRange, nil}
	for i, w := range want {
		if w == nil && errs[i] != nil || w != nil && !errors.Is(errs[i], w) {
			t.Errorf("offset %d: %v, want %v", i, errs[i], w)
		}
	}
	got, err := c.FetchCommitted(ctx, "k", nil)
	if err != nil || len(got) != 2 || got[0].Partition != 0 || got[0].Metadata != "m" || got[1].Partition != 4 {
		t.Fatalf("committed: %+v, %v", got, err)
	}
	// A Varve reset moves an offset; a Kafka commit may move it back.
	if _, err := c.ResetOffsets(ctx, "k", "events", map[int32]int64{5: 0}); err != nil {
		t.Fatal(err)
	}
	st, err := c.State(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteOffsets(ctx, "k", []groups.TopicPartition{{Topic: "events", Partition: 0}, {Topic: "events", Partition: 3}}, st.Revision); err != nil {
		t.Fatal(err)
	}
	if got, err := c.FetchCommitted(ctx, "k", nil); err != nil || len(got) != 2 || got[0].Partition != 4 || got[1].Partition != 5 {
		t.Fatalf("committed after deleting partition 0: %+v, %v", got, err)
	}
	s := join(t, c, "k", 0)
	nextWith(t, s, 1)
	if err := c.DeleteOffsets(ctx, "k", []groups.TopicPartition{{Topic: "events", Partition: 4}}, st.Revision); !errors.Is(err, groups.ErrGroupActive) {
		t.Fatalf("delete with a member joined since: %v, want ErrGroupActive", err)
	}
	sums, err := c.Summaries(ctx)
	if err != nil || len(sums) != 1 || sums[0] != (groups.Summary{Name: "k", Members: 1, HasMeta: true}) {
		t.Fatalf("summaries: %+v, %v", sums, err)
	}
}
