package groups

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// OffsetCommit is one partition's offset to commit: the next offset to
// consume.
type OffsetCommit struct {
	Topic     string
	Partition int32
	Offset    int64
	Metadata  string
}

// Limits of commits.
const (
	// commitChunk partitions per transaction: two reads and one compare per
	// partition plus one read per topic stay under etcd's 128 operations.
	commitChunk       = 40
	MaxCommitOffsets  = 10000
	MaxCommitMetadata = 4096
)

// CommitOffsets commits offsets for a member of generation gen, fenced:
// the member must still be in the group (ErrUnknownMember — a zombie whose
// session ended cannot commit), gen must be the group's generation
// (ErrStaleGeneration), and each partition must be assigned to the member
// in it or have been revoked from it by it (ErrNotAssigned). Offsets only
// move forward (ErrOffsetRegress) and never past the partition's end.
// Checks and writes are one transaction per 40 partitions comparing the
// meta, the member and each offset key, so a rebalance, a leave or a
// concurrent commit in between makes it read again: a refused commit
// changes nothing.
func (c *Groups) CommitOffsets(ctx context.Context, g, member string, gen int64, offsets []OffsetCommit) error {
	if err := ValidateName(g); err != nil {
		return err
	}
	if member == "" {
		return fmt.Errorf("commit to group %q: %w: no member id", g, metadata.ErrInvalidArgument)
	}
	if len(offsets) == 0 || len(offsets) > MaxCommitOffsets {
		return fmt.Errorf("commit to group %q: %w: %d offsets, want 1 to %d", g, metadata.ErrInvalidArgument, len(offsets), MaxCommitOffsets)
	}
	seen := make(map[topicPart]bool, len(offsets))
	for _, o := range offsets {
		if err := metadata.ValidateTopicName(o.Topic); err != nil {
			return fmt.Errorf("commit to group %q: %w", g, err)
		}
		tp := topicPart{o.Topic, o.Partition}
		switch {
		case seen[tp]:
			return fmt.Errorf("commit to group %q: %w: %s/%d appears twice", g, metadata.ErrInvalidArgument, o.Topic, o.Partition)
		case o.Partition < 0:
			return fmt.Errorf("commit to group %q: %w: partition %d of %s", g, metadata.ErrPartitionOutOfRange, o.Partition, o.Topic)
		case o.Offset < 0:
			return fmt.Errorf("commit to group %q on %s/%d: %w: negative offset %d", g, o.Topic, o.Partition, metadata.ErrInvalidArgument, o.Offset)
		case len(o.Metadata) > MaxCommitMetadata:
			return fmt.Errorf("commit to group %q on %s/%d: %w: metadata is %d bytes, at most %d", g, o.Topic, o.Partition, metadata.ErrInvalidArgument, len(o.Metadata), MaxCommitMetadata)
		}
		seen[tp] = true
	}
	for i := 0; i < len(offsets); i += commitChunk {
		if err := c.commitOffsetsChunk(ctx, g, member, gen, offsets[i:min(i+commitChunk, len(offsets))]); err != nil {
			return err
		}
	}
	return nil
}

func (c *Groups) commitOffsetsChunk(ctx context.Context, g, member string, gen int64, offsets []OffsetCommit) error {
	mk := keys.GroupMember(g, member)
	for attempt := 0; ; attempt++ {
		ops := []clientv3.Op{clientv3.OpGet(keys.GroupMeta(g)), clientv3.OpGet(mk)}
		var topics []string
		for _, o := range offsets {
			ops = append(ops, clientv3.OpGet(keys.GroupOffset(g, o.Topic, o.Partition)), clientv3.OpGet(keys.Partition(o.Topic, o.Partition)))
		}
		for _, o := range offsets {
			if !slices.Contains(topics, o.Topic) {
				topics = append(topics, o.Topic)
				ops = append(ops, clientv3.OpGet(keys.Topic(o.Topic)))
			}
		}
		resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("commit to group %q: %w", g, err)
		}
		rr := func(i int) *clientv3.GetResponse {
			return (*clientv3.GetResponse)(resp.Responses[i].GetResponseRange())
		}
		memberKV := rr(1).Kvs
		if len(memberKV) == 0 || leftMark(memberKV[0].Value) {
			return fmt.Errorf("commit to group %q as %s: %w (its session ended; join again)", g, member, ErrUnknownMember)
		}
		metaKV := rr(0).Kvs
		if len(metaKV) == 0 {
			return fmt.Errorf("commit to group %q as %s: %w", g, member, ErrUnknownMember)
		}
		meta, err := decodeMeta(g, metaKV[0].Value)
		if err != nil {
			return err
		}
		if meta.Generation != gen {
			return fmt.Errorf("commit to group %q as %s with generation %d: %w: the group is at generation %d", g, member, gen, ErrStaleGeneration, meta.Generation)
		}
		parts := map[string]int32{}
		for i, t := range topics {
			kvs := rr(2 + 2*len(offsets) + i).Kvs
			if len(kvs) == 0 {
				return fmt.Errorf("commit to group %q: topic %q: %w", g, t, metadata.ErrTopicNotFound)
			}
			var tp metadata.Topic
			if err := json.Unmarshal(kvs[0].Value, &tp); err != nil {
				return fmt.Errorf("decode topic %q: %w", t, err)
			}
			parts[t] = tp.Partitions
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(keys.GroupMeta(g)), "=", metaKV[0].ModRevision),
			clientv3.Compare(clientv3.ModRevision(mk), "=", memberKV[0].ModRevision),
		}
		var puts []clientv3.Op
		now := time.Now().UnixMilli()
		states := map[string]map[int32]metadata.PartitionState{}
		for i, o := range offsets {
			// Past the partition key's high watermark, the offset may
			// still be within blocks committed through sequencer records:
			// a record-aware read decides (a high watermark only grows,
			// so a later read is as good as one at the snapshot).
			recordEnd := func() (int64, error) {
				if states[o.Topic] == nil {
					st, err := c.meta.PartitionStates(ctx, o.Topic)
					if err != nil {
						return 0, fmt.Errorf("commit to group %q on %s/%d: %w", g, o.Topic, o.Partition, err)
					}
					states[o.Topic] = st
				}
				return states[o.Topic][o.Partition].Next, nil
			}
			cmp, put, err := fenceOffset(g, member, gen, meta, parts[o.Topic], o, rr(2+2*i).Kvs, rr(3+2*i).Kvs, now, recordEnd)
			if err != nil {
				return err
			}
			cmps = append(cmps, cmp)
			puts = append(puts, put)
		}
		wr, err := c.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
		if err != nil {
			return fmt.Errorf("commit to group %q: %w", g, err)
		}
		if wr.Succeeded {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("commit to group %q: %w", g, ctx.Err())
		}
		// The generation, the member or an offset changed since the read:
		// check again.
	}
}

// fenceOffset checks one offset of a commit against what the chunk read —
// the group's meta, the topic's partition count, the committed offset
// (offsetKVs) and the partition state (partKVs) — and returns the compare
// and the put that commit it.
func fenceOffset(g, member string, gen int64, meta Meta, partitions int32, o OffsetCommit, offsetKVs, partKVs []*mvccpb.KeyValue, now int64, recordEnd func() (int64, error)) (clientv3.Cmp, clientv3.Op, error) {
	if o.Partition >= partitions {
		return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("commit to group %q on %s/%d: %w: the topic has %d partitions", g, o.Topic, o.Partition, metadata.ErrPartitionOutOfRange, partitions)
	}
	if !meta.Assignment[member].Has(o.Topic, o.Partition) && !meta.Revoked[member].Has(o.Topic, o.Partition) {
		return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("commit to group %q on %s/%d as %s in generation %d: %w", g, o.Topic, o.Partition, member, gen, ErrNotAssigned)
	}
	var end int64
	if len(partKVs) > 0 {
		var ps metadata.PartitionState
		if err := json.Unmarshal(partKVs[0].Value, &ps); err != nil {
			return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("decode partition %s/%d: %w", o.Topic, o.Partition, err)
		}
		end = ps.Next
	}
	if o.Offset > end {
		var err error
		if end, err = recordEnd(); err != nil {
			return clientv3.Cmp{}, clientv3.Op{}, err
		}
	}
	if o.Offset > end {
		return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("commit to group %q on %s/%d: %w: offset %d is past the end of the partition (%d)", g, o.Topic, o.Partition, metadata.ErrInvalidArgument, o.Offset, end)
	}
	ok := keys.GroupOffset(g, o.Topic, o.Partition)
	var modRev int64
	if len(offsetKVs) > 0 {
		var prev CommittedOffset
		if err := json.Unmarshal(offsetKVs[0].Value, &prev); err != nil {
			return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("decode committed offset %s: %w", ok, err)
		}
		if o.Offset < prev.Offset {
			return clientv3.Cmp{}, clientv3.Op{}, fmt.Errorf("commit to group %q on %s/%d: %w: offset %d is behind the committed %d (reset the group's offsets to move back)", g, o.Topic, o.Partition, ErrOffsetRegress, o.Offset, prev.Offset)
		}
		modRev = offsetKVs[0].ModRevision
	}
	v, _ := json.Marshal(CommittedOffset{Offset: o.Offset, Generation: gen, Metadata: o.Metadata, CommittedMs: now, Member: member})
	return clientv3.Compare(clientv3.ModRevision(ok), "=", modRev), clientv3.OpPut(ok, string(v)), nil
}
