package main

import (
	"time"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/sdk/admin"
)

// The admin client speaks in its own types; --format json prints the API's
// messages (protojson), as it always has, so they are converted back here.

// msFlag is a milliseconds flag as a duration: -1 is admin.Forever.
func msFlag(ms int64, _ error) time.Duration {
	if ms == -1 {
		return admin.Forever
	}
	return time.Duration(ms) * time.Millisecond
}

// msOf is a duration in milliseconds: admin.Forever is -1.
func msOf(d time.Duration) int64 {
	if d == admin.Forever {
		return -1
	}
	return d.Milliseconds()
}

// unixMs is t in Unix milliseconds; the zero time is 0.
func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

var policyProtos = map[admin.CleanupPolicy]varvev1.CleanupPolicy{
	admin.CleanupDelete:  varvev1.CleanupPolicy_CLEANUP_POLICY_DELETE,
	admin.CleanupCompact: varvev1.CleanupPolicy_CLEANUP_POLICY_COMPACT,
}

var formatProtos = map[admin.SchemaFormat]varvev1.SchemaFormat{
	admin.SchemaJSON:     varvev1.SchemaFormat_SCHEMA_FORMAT_JSON,
	admin.SchemaProtobuf: varvev1.SchemaFormat_SCHEMA_FORMAT_PROTOBUF,
	admin.SchemaAvro:     varvev1.SchemaFormat_SCHEMA_FORMAT_AVRO,
}

func topicProto(t admin.Topic) *varvev1.Topic {
	c := t.Config
	pt := &varvev1.Topic{
		Name: t.Name, Id: t.ID, Partitions: t.Partitions, CreatedMs: unixMs(t.Created),
		Config: &varvev1.TopicConfig{
			RetentionMs: msOf(c.Retention), RetentionBytes: c.RetentionBytes,
			CleanupPolicy: policyProtos[c.CleanupPolicy], MaxRecordBytes: c.MaxRecordBytes,
			DeleteRetentionMs: msOf(c.DeleteRetention), MinCompactionLagMs: msOf(c.MinCompactionLag),
		},
	}
	if s := c.Schema; s != nil {
		pt.Config.Schema = &varvev1.TopicSchema{Format: formatProtos[s.Format], Fields: s.Fields}
	}
	return pt
}

func topicsProto(ts []admin.Topic) *varvev1.ListTopicsResponse {
	out := &varvev1.ListTopicsResponse{}
	for _, t := range ts {
		out.Topics = append(out.Topics, topicProto(t))
	}
	return out
}

func describeTopicProto(d admin.TopicDescription) *varvev1.DescribeTopicResponse {
	out := &varvev1.DescribeTopicResponse{Topic: topicProto(d.Topic)}
	for _, p := range d.Partitions {
		out.Partitions = append(out.Partitions, &varvev1.PartitionInfo{
			Partition: p.Partition, LogStartOffset: p.LogStartOffset, NextOffset: p.NextOffset, Bytes: p.Bytes, Segments: p.Segments,
		})
	}
	return out
}

func groupSummaryProto(g admin.GroupSummary) *varvev1.GroupSummary {
	return &varvev1.GroupSummary{Group: g.Group, State: g.State, Members: g.Members, Generation: g.Generation, Strategy: g.Strategy}
}

func groupsProto(gs []admin.GroupSummary) *varvev1.ListGroupsResponse {
	out := &varvev1.ListGroupsResponse{}
	for _, g := range gs {
		out.Groups = append(out.Groups, groupSummaryProto(g))
	}
	return out
}

func describeGroupProto(d admin.GroupDescription) *varvev1.DescribeGroupResponse {
	out := &varvev1.DescribeGroupResponse{Summary: groupSummaryProto(d.Summary)}
	for _, m := range d.Members {
		pm := &varvev1.GroupMember{
			MemberId: m.MemberID, ClientId: m.ClientID, Node: m.Node, Topics: m.Topics,
			JoinedMs: unixMs(m.Joined), SessionTimeoutMs: int32(m.SessionTimeout.Milliseconds()),
		}
		for _, tp := range m.Assignment {
			if n := len(pm.Assignment); n == 0 || pm.Assignment[n-1].Topic != tp.Topic {
				pm.Assignment = append(pm.Assignment, &varvev1.TopicPartitions{Topic: tp.Topic})
			}
			last := pm.Assignment[len(pm.Assignment)-1]
			last.Partitions = append(last.Partitions, tp.Partition)
		}
		out.Members = append(out.Members, pm)
	}
	for _, p := range d.Partitions {
		out.Partitions = append(out.Partitions, &varvev1.GroupPartition{
			Topic: p.Topic, Partition: p.Partition, MemberId: p.MemberID, CommittedOffset: p.CommittedOffset,
			EndOffset: p.EndOffset, Lag: p.Lag, CommittedMs: unixMs(p.Committed),
		})
	}
	return out
}

func compactionStatusProto(s admin.CompactionStatus) *varvev1.CompactionStatusResponse {
	out := &varvev1.CompactionStatusResponse{Paused: s.Paused, BacklogEntries: s.BacklogEntries, BacklogBytes: s.BacklogBytes, IndexEntries: s.IndexEntries}
	for _, p := range s.Partitions {
		out.Partitions = append(out.Partitions, &varvev1.PartitionCompaction{
			Topic: p.Topic, Partition: p.Partition, IndexEntries: p.IndexEntries, BacklogEntries: p.BacklogEntries, BacklogBytes: p.BacklogBytes,
		})
	}
	return out
}
