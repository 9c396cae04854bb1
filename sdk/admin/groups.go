package admin

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/sdk"
)

// GroupSummary is a consumer group in a list.
type GroupSummary struct {
	Group      string
	State      string
	Members    int32
	Generation int64
	Strategy   string
}

// GroupMember is a member of a consumer group.
type GroupMember struct {
	MemberID string
	ClientID string
	// Node is the node the member's session runs on.
	Node   string
	Topics []string
	// Assignment lists the member's partitions, by topic.
	Assignment     []sdk.TopicPartition
	Joined         time.Time
	SessionTimeout time.Duration
}

// GroupPartition is a group's view of one partition.
type GroupPartition struct {
	Topic     string
	Partition int32
	// MemberID owns the partition; empty when none does.
	MemberID string
	// CommittedOffset is -1 when the group committed none.
	CommittedOffset int64
	EndOffset       int64
	Lag             int64
	Committed       time.Time
}

// GroupDescription is a group's members, and per partition its owner,
// committed offset, end offset and lag.
type GroupDescription struct {
	Summary    GroupSummary
	Members    []GroupMember
	Partitions []GroupPartition
}

// CommittedOffset is a group's committed offset of a partition.
type CommittedOffset struct {
	Topic      string
	Partition  int32
	Offset     int64
	Metadata   string
	Generation int64
	Committed  time.Time
}

// ResetTarget is where ResetGroupOffsets moves a group's offsets: made by
// ResetToEarliest, ResetToLatest, ResetToOffset or ResetToTime.
type ResetTarget struct {
	spec   varvev1.ResetSpec
	offset int64
	at     time.Time
}

// ResetToEarliest moves offsets to each partition's log start.
func ResetToEarliest() ResetTarget {
	return ResetTarget{spec: varvev1.ResetSpec_RESET_SPEC_EARLIEST}
}

// ResetToLatest moves offsets to each partition's end.
func ResetToLatest() ResetTarget { return ResetTarget{spec: varvev1.ResetSpec_RESET_SPEC_LATEST} }

// ResetToOffset moves offsets to offset.
func ResetToOffset(offset int64) ResetTarget {
	return ResetTarget{spec: varvev1.ResetSpec_RESET_SPEC_OFFSET, offset: offset}
}

// ResetToTime moves offsets to the first record at or after t.
func ResetToTime(t time.Time) ResetTarget {
	return ResetTarget{spec: varvev1.ResetSpec_RESET_SPEC_TIMESTAMP, at: t}
}

// ListGroups returns every consumer group.
func (a *Client) ListGroups(ctx context.Context) ([]GroupSummary, error) {
	res, err := a.groups.ListGroups(ctx, connect.NewRequest(&varvev1.ListGroupsRequest{}))
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	out := make([]GroupSummary, len(res.Msg.GetGroups()))
	for i, g := range res.Msg.GetGroups() {
		out[i] = summaryOf(g)
	}
	return out, nil
}

// DescribeGroup returns a group's members, assignment, and per partition
// the committed offset, end offset and lag. An unknown group is
// connect.CodeNotFound.
func (a *Client) DescribeGroup(ctx context.Context, group string) (GroupDescription, error) {
	res, err := a.groups.DescribeGroup(ctx, connect.NewRequest(&varvev1.DescribeGroupRequest{Group: group}))
	if err != nil {
		return GroupDescription{}, fmt.Errorf("describe group %s: %w", group, err)
	}
	d := GroupDescription{Summary: summaryOf(res.Msg.GetSummary())}
	for _, m := range res.Msg.GetMembers() {
		gm := GroupMember{
			MemberID: m.GetMemberId(), ClientID: m.GetClientId(), Node: m.GetNode(), Topics: m.GetTopics(),
			Joined: msTime(m.GetJoinedMs()), SessionTimeout: time.Duration(m.GetSessionTimeoutMs()) * time.Millisecond,
		}
		for _, tp := range m.GetAssignment() {
			for _, p := range tp.GetPartitions() {
				gm.Assignment = append(gm.Assignment, sdk.TopicPartition{Topic: tp.GetTopic(), Partition: p})
			}
		}
		d.Members = append(d.Members, gm)
	}
	for _, p := range res.Msg.GetPartitions() {
		d.Partitions = append(d.Partitions, GroupPartition{
			Topic: p.GetTopic(), Partition: p.GetPartition(), MemberID: p.GetMemberId(),
			CommittedOffset: p.GetCommittedOffset(), EndOffset: p.GetEndOffset(), Lag: p.GetLag(),
			Committed: msTime(p.GetCommittedMs()),
		})
	}
	return d, nil
}

// CommittedOffsets returns the group's committed offset of every partition
// it committed.
func (a *Client) CommittedOffsets(ctx context.Context, group string) (map[sdk.TopicPartition]int64, error) {
	res, err := a.groups.FetchCommitted(ctx, connect.NewRequest(&varvev1.FetchCommittedRequest{Group: group}))
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets of group %s: %w", group, err)
	}
	out := map[sdk.TopicPartition]int64{}
	for _, o := range res.Msg.GetOffsets() {
		out[sdk.TopicPartition{Topic: o.GetTopic(), Partition: o.GetPartition()}] = o.GetOffset()
	}
	return out, nil
}

// ResetGroupOffsets moves the committed offsets of a group without members
// on topic (every partition, or those given) to the target, and returns
// the new offsets. A group that does not exist yet is created with them.
// A group with members is connect.CodeFailedPrecondition (reason
// GROUP_ACTIVE) and nothing changes; a zero target or a negative offset is
// connect.CodeInvalidArgument.
func (a *Client) ResetGroupOffsets(ctx context.Context, group, topic string, to ResetTarget, partitions ...int32) ([]CommittedOffset, error) {
	req := &varvev1.ResetOffsetsRequest{Group: group, Topic: topic, Partitions: partitions, Spec: to.spec, Offset: to.offset}
	if !to.at.IsZero() {
		req.TimestampMs = to.at.UnixMilli()
	}
	res, err := a.groups.ResetOffsets(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, fmt.Errorf("reset offsets of group %s on %s: %w", group, topic, err)
	}
	out := make([]CommittedOffset, len(res.Msg.GetOffsets()))
	for i, o := range res.Msg.GetOffsets() {
		out[i] = CommittedOffset{
			Topic: o.GetTopic(), Partition: o.GetPartition(), Offset: o.GetOffset(), Metadata: o.GetMetadata(),
			Generation: o.GetGeneration(), Committed: msTime(o.GetCommittedMs()),
		}
	}
	return out, nil
}

// DeleteGroup deletes a group without members and its committed offsets.
func (a *Client) DeleteGroup(ctx context.Context, group string) error {
	if _, err := a.groups.DeleteGroup(ctx, connect.NewRequest(&varvev1.DeleteGroupRequest{Group: group})); err != nil {
		return fmt.Errorf("delete group %s: %w", group, err)
	}
	return nil
}

func summaryOf(g *varvev1.GroupSummary) GroupSummary {
	return GroupSummary{
		Group: g.GetGroup(), State: g.GetState(), Members: g.GetMembers(),
		Generation: g.GetGeneration(), Strategy: g.GetStrategy(),
	}
}
