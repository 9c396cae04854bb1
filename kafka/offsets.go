package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/internal/authz"
)

// ListOffsets v1 is the first with one offset per partition; v7 and
// later (max timestamp, tiered offsets) are left out.
func init() { register(2, 1, 6, handleListOffsets) }

// handleListOffsets answers earliest (-2), latest (-1) and by-timestamp
// offsets, one Fetcher.ListOffsets call per topic and kind.
func handleListOffsets(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.ListOffsetsRequest)
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	f := c.s.d.Fetcher
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
			res, err := f.ListOffsets(ctx, rt.Topic, parts, a.spec, a.ts)
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
