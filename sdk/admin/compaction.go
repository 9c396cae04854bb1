package admin

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// CompactionStatus is whether compaction is paused, and its backlog:
// level-0 index entries and bytes, in total and per partition.
type CompactionStatus struct {
	Paused         bool
	BacklogEntries int64
	BacklogBytes   int64
	IndexEntries   int64
	Partitions     []PartitionCompaction
}

// PartitionCompaction is the compaction backlog of one partition.
type PartitionCompaction struct {
	Topic          string
	Partition      int32
	IndexEntries   int64
	BacklogEntries int64
	BacklogBytes   int64
}

// PauseCompaction stops compaction on every node; a running job stops
// before its index swap.
func (a *Client) PauseCompaction(ctx context.Context) error {
	if _, err := a.admin.PauseCompaction(ctx, connect.NewRequest(&varvev1.PauseCompactionRequest{})); err != nil {
		return fmt.Errorf("pause compaction: %w", err)
	}
	return nil
}

// ResumeCompaction resumes compaction on every node.
func (a *Client) ResumeCompaction(ctx context.Context) error {
	if _, err := a.admin.ResumeCompaction(ctx, connect.NewRequest(&varvev1.ResumeCompactionRequest{})); err != nil {
		return fmt.Errorf("resume compaction: %w", err)
	}
	return nil
}

// CompactionStatus returns whether compaction is paused and its backlog,
// of every topic or of topic only (an unknown topic is
// connect.CodeNotFound).
func (a *Client) CompactionStatus(ctx context.Context, topic string) (CompactionStatus, error) {
	res, err := a.admin.CompactionStatus(ctx, connect.NewRequest(&varvev1.CompactionStatusRequest{Topic: topic}))
	if err != nil {
		return CompactionStatus{}, fmt.Errorf("compaction status: %w", err)
	}
	m := res.Msg
	s := CompactionStatus{Paused: m.GetPaused(), BacklogEntries: m.GetBacklogEntries(), BacklogBytes: m.GetBacklogBytes(), IndexEntries: m.GetIndexEntries()}
	for _, p := range m.GetPartitions() {
		s.Partitions = append(s.Partitions, PartitionCompaction{
			Topic: p.GetTopic(), Partition: p.GetPartition(), IndexEntries: p.GetIndexEntries(),
			BacklogEntries: p.GetBacklogEntries(), BacklogBytes: p.GetBacklogBytes(),
		})
	}
	return s, nil
}
