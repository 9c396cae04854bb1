package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/internal/authz"
)

// errNoFetchNode: a request this node cannot answer without a live fetch
// node.
var errNoFetchNode = errors.New("no fetch node")

// ListOffsets v1 is the first with one offset per partition; v7 and
// later (max timestamp, tiered offsets) are left out.
func init() { register(2, 1, 6, handleListOffsets) }

// handleListOffsets answers earliest (-2), latest (-1) and by-timestamp
// offsets, one Fetcher.ListOffsets call per topic and kind.
func handleListOffsets(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.ListOffsetsRequest)
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range req.Topics {
		ot := kmsg.NewListOffsetsResponseTopic()
		ot.Topic = rt.Topic
		ot.Partitions = make([]kmsg.ListOffsetsResponseTopicPartition, len(rt.Partitions))
		allowed := c.allowed(authz.Topic, rt.Topic, authz.Describe)
		t, known := c.s.d.Topics.Topic(rt.Topic)
		// One ListOffsets call per kind of offset asked (and per
		// timestamp): a consumer starting on many partitions asks once.
		type ask struct {
			spec fetch.OffsetSpec
			ts   int64
		}
		asks := map[ask][]int{}
		for i, rp := range rt.Partitions {
			op := kmsg.NewListOffsetsResponseTopicPartition()
			op.Partition = rp.Partition
			op.Timestamp, op.Offset = -1, -1
			switch {
			case !allowed:
				op.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case !known || rp.Partition < 0 || rp.Partition >= t.Partitions:
				op.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case rp.Timestamp < -2:
				op.ErrorCode = kerr.UnsupportedVersion.Code // -3 (max timestamp) and later: v7+
			default:
				a := ask{fetch.ByTimestamp, rp.Timestamp}
				switch rp.Timestamp {
				case -1:
					a = ask{fetch.Latest, 0}
				case -2:
					a = ask{fetch.Earliest, 0}
				}
				asks[a] = append(asks[a], i)
			}
			ot.Partitions[i] = op
		}
		for a, is := range asks {
			parts := make([]int32, len(is))
			for j, i := range is {
				parts[j] = ot.Partitions[i].Partition
			}
			res, err := c.listOffsets(ctx, rt.Topic, parts, a.spec, a.ts)
			byPart := map[int32]fetch.PartitionOffset{}
			for _, r := range res {
				byPart[r.Partition] = r
			}
			for _, i := range is {
				op := &ot.Partitions[i]
				r, ok := byPart[op.Partition]
				switch {
				case err != nil:
					op.ErrorCode = errorCode(err)
				case !ok:
					op.ErrorCode = kerr.UnknownTopicOrPartition.Code
				default:
					op.Offset, op.Timestamp = r.Offset, r.Timestamp
					if a.spec == fetch.ByTimestamp && r.Timestamp < 0 {
						op.Offset = -1 // no record at or after the time: Kafka answers -1
					}
				}
			}
		}
		resp.Topics = append(resp.Topics, ot)
	}
	return resp, nil
}

// listOffsets is Fetcher.ListOffsets; a node without the fetch role reads
// the earliest and latest offsets from etcd and asks a fetch node for
// offsets by time (Deps.OffsetsByTime).
func (c *conn) listOffsets(ctx context.Context, topic string, parts []int32, spec fetch.OffsetSpec, ts int64) ([]fetch.PartitionOffset, error) {
	if f := c.s.d.Fetcher; f != nil {
		return f.ListOffsets(ctx, topic, parts, spec, ts)
	}
	if spec == fetch.ByTimestamp {
		if c.s.d.OffsetsByTime == nil {
			return nil, fmt.Errorf("%w: offsets by time need a fetch node", errNoFetchNode)
		}
		return c.s.d.OffsetsByTime(ctx, topic, parts, ts)
	}
	states, err := c.s.d.Meta.PartitionStates(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make([]fetch.PartitionOffset, len(parts))
	for i, p := range parts {
		st := states[p]
		out[i] = fetch.PartitionOffset{Partition: p, Offset: st.Next, Timestamp: -1}
		if spec == fetch.Earliest {
			out[i].Offset = st.Start
		}
	}
	return out, nil
}
