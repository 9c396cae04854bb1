package compaction

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/keys"
	"github.com/varve-io/varve/metadata/seqlog"
)

// keyRange is the offsets [base, end) of one index key.
type keyRange struct{ base, end int64 }

// addRecordBacklog adds to the backlog, as of rev, the blocks committed
// through the sequencer that no index key covers yet: level-0 entries held
// by its batch records (docs/metadata.md, "Reading the records"), of a
// topic that still has the id they were committed under and past their
// partition's log start. ranges are each partition's index keys, in base
// order.
func (c *Client) addRecordBacklog(ctx context.Context, rev int64, byTP map[metadata.TopicPartition]*PartitionBacklog, order *[]metadata.TopicPartition, ranges map[metadata.TopicPartition][]keyRange) error {
	var recs []*metadata.RecordBlocks
	from, to := keys.SeqRecordsPrefix(), keys.PrefixEnd(keys.SeqRecordsPrefix())
	for {
		resp, err := c.cli.Get(ctx, from, clientv3.WithRange(to), clientv3.WithLimit(32), clientv3.WithRev(rev))
		if err != nil {
			return fmt.Errorf("read compaction backlog: sequencer records: %w", err)
		}
		for _, kv := range resp.Kvs {
			rb, err := seqlog.IndexDecoder.DecodeBlocks(kv.Value)
			if err != nil {
				return fmt.Errorf("read compaction backlog: sequencer record %s: %w", kv.Key, err)
			}
			recs = append(recs, rb)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if len(recs) == 0 {
		return nil
	}
	ids := map[string]string{}
	starts := map[metadata.TopicPartition]int64{}
	read := func(topic string) error {
		if _, ok := ids[topic]; ok {
			return nil
		}
		ids[topic] = ""
		resp, err := c.cli.Txn(ctx).Then(
			clientv3.OpGet(keys.Topic(topic), clientv3.WithRev(rev)),
			clientv3.OpGet(keys.PartitionsPrefix(topic), clientv3.WithPrefix(), clientv3.WithRev(rev)),
		).Commit()
		if err != nil {
			return fmt.Errorf("read compaction backlog: topic %q: %w", topic, err)
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			var t metadata.Topic
			if err := json.Unmarshal(kvs[0].Value, &t); err != nil {
				return fmt.Errorf("read compaction backlog: decode topic %q: %w", topic, err)
			}
			ids[topic] = t.ID
		}
		for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
			k, ok := keys.Parse(string(kv.Key))
			if !ok || k.Kind != "partitions" {
				continue
			}
			st, err := metadata.DecodePartitionState(kv.Value)
			if err != nil {
				return fmt.Errorf("read compaction backlog: %s: %w", kv.Key, err)
			}
			starts[metadata.TopicPartition{Topic: topic, Partition: k.Partition}] = st.Start
		}
		return nil
	}
	for _, rb := range recs {
		for _, e := range rb.Entries {
			if err := read(e.Topic); err != nil {
				return err
			}
			tp := metadata.TopicPartition{Topic: e.Topic, Partition: e.Partition}
			if id := ids[e.Topic]; id == "" || rb.TopicIDs[e.Topic] != id || e.End() <= starts[tp] || covered(ranges[tp], e) {
				continue
			}
			b := byTP[tp]
			if b == nil {
				b = &PartitionBacklog{Topic: tp.Topic, Partition: tp.Partition}
				byTP[tp] = b
				*order = append(*order, tp)
			}
			b.Entries++
			b.L0Entries++
			b.L0Bytes += e.Len
		}
	}
	return nil
}

// covered reports whether an index key of rs (in base order) overlaps e:
// the key then shadows it.
func covered(rs []keyRange, e metadata.IndexEntry) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].end > e.Base })
	return i < len(rs) && rs[i].base < e.End()
}
