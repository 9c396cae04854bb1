package fetch

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
)

// OffsetSpec selects what ListOffsets returns.
type OffsetSpec int

// Offset specs.
const (
	Earliest OffsetSpec = iota + 1
	Latest
	ByTimestamp
)

// PartitionOffset is one answer of ListOffsets. Timestamp is -1 unless the
// spec is ByTimestamp and a record was found.
type PartitionOffset struct {
	Partition int32
	Offset    int64
	Timestamp int64
}

// ListOffsets returns, per partition (all when partitions is empty), the
// earliest offset, the latest (next) offset, or the first offset whose
// record's timestamp is at or after ts (the latest offset when none is).
func (f *Fetcher) ListOffsets(ctx context.Context, topic string, partitions []int32, spec OffsetSpec, ts int64) ([]PartitionOffset, error) {
	t, err := f.Topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	if spec < Earliest || spec > ByTimestamp {
		return nil, fmt.Errorf("%w: list offsets of %q: unknown offset spec %d", metadata.ErrInvalidArgument, topic, spec)
	}
	if len(partitions) == 0 {
		for p := int32(0); p < t.Partitions; p++ {
			partitions = append(partitions, p)
		}
	}
	if slices.Max(partitions) >= t.Partitions {
		// Partitions added an instant ago: this node's watch may lag.
		if t, err = f.meta.GetTopic(ctx, topic); err != nil {
			return nil, err
		}
	}
	for _, p := range partitions {
		if p < 0 || p >= t.Partitions {
			return nil, fmt.Errorf("%w: topic %q has %d partitions, got partition %d", metadata.ErrPartitionOutOfRange, topic, t.Partitions, p)
		}
	}
	// Linearizable: reflects every commit acknowledged before the call.
	states, err := f.meta.PartitionStates(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make([]PartitionOffset, 0, len(partitions))
	for _, p := range partitions {
		st := states[p]
		po := PartitionOffset{Partition: p, Timestamp: -1}
		switch spec {
		case Earliest:
			po.Offset = st.Start
		case Latest:
			po.Offset = st.Next
		case ByTimestamp:
			po.Offset, po.Timestamp, err = f.offsetForTime(ctx, topic, p, st, ts)
			if err != nil {
				return nil, err
			}
		}
		out = append(out, po)
	}
	return out, nil
}

func (f *Fetcher) offsetForTime(ctx context.Context, topic string, p int32, st metadata.PartitionState, ts int64) (int64, int64, error) {
	// st is linearizable; the watched index may trail it by the watch
	// latency. Let it catch up (briefly) so a record acknowledged an instant
	// ago is found.
	catchUp, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for view := f.index.Partition(topic, p); view.State.Next < st.Next; view = f.index.Partition(topic, p) {
		select {
		case <-view.Changed:
		case <-catchUp.Done():
			if ctx.Err() != nil {
				return 0, 0, ctx.Err()
			}
			return 0, 0, fmt.Errorf("%w: the index of %s/%d is behind etcd", blockcache.ErrUnavailable, topic, p)
		}
	}
	for _, e := range f.index.Entries(topic, p, st.Start, 0) {
		if e.MaxTS < ts {
			continue
		}
		recs, err := f.Block(ctx, e)
		if err != nil {
			return 0, 0, err
		}
		for i, r := range recs {
			o := e.Base + int64(i)
			if o >= st.Start && r.Timestamp >= ts {
				return o, r.Timestamp, nil
			}
		}
	}
	return st.Next, -1, nil
}
