package node

import (
	"context"
	"fmt"
	"sync"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/rendezvous"
	"github.com/varve-io/varve/metadata"
)

// kafkaOffsetsByTime is, on a node without the fetch role, how its Kafka
// listener answers ListOffsets by time: it asks a live fetch node (chosen
// per topic by rendezvous hashing) through the internal BlockService. Nil
// on a node with the fetch role (the listener asks its own fetcher).
func (n *Node) kafkaOffsetsByTime(ctx context.Context) (func(ctx context.Context, topic string, parts []int32, ts int64) ([]fetch.PartitionOffset, error), error) {
	if n.fetcher != nil {
		return nil, nil
	}
	var mu sync.Mutex
	nodes := map[string]string{}
	stop, err := n.meta.WatchNodes(ctx, RoleFetch, func(m map[string]string) {
		mu.Lock()
		nodes = m
		mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	peers := newPeerClient(n.sec.peer, n.sec.guard.NodeSecret())
	n.onClose = append(n.onClose, stop, peers.close)
	return func(ctx context.Context, topic string, parts []int32, ts int64) ([]fetch.PartitionOffset, error) {
		mu.Lock()
		ids := make([]string, 0, len(nodes))
		for id := range nodes {
			ids = append(ids, id)
		}
		id := rendezvous.Pick(topic, ids)
		addr := nodes[id]
		mu.Unlock()
		if id == "" {
			return nil, fmt.Errorf("%w: offsets of %q by time: no live fetch node", blockcache.ErrUnavailable, topic)
		}
		resp, err := peers.ListOffsets(ctx, addr, &varvev1.ListOffsetsRequest{Topic: topic, Partitions: parts,
			Spec: varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP, TimestampMs: ts})
		if err != nil {
			switch connect.CodeOf(err) {
			case connect.CodeNotFound:
				return nil, fmt.Errorf("%w: %v", metadata.ErrTopicNotFound, err)
			case connect.CodeInvalidArgument:
				return nil, fmt.Errorf("%w: %v", metadata.ErrInvalidArgument, err)
			}
			return nil, fmt.Errorf("%w: offsets of %q by time from fetch node %s: %v", blockcache.ErrUnavailable, topic, id, err)
		}
		out := make([]fetch.PartitionOffset, len(resp.GetOffsets()))
		for i, o := range resp.GetOffsets() {
			out[i] = fetch.PartitionOffset{Partition: o.GetPartition(), Offset: o.GetOffset(), Timestamp: o.GetTimestampMs()}
		}
		return out, nil
	}, nil
}
