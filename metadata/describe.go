package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// What a topic's description reports per partition (varve topic describe,
// TopicService.DescribeTopic). A partition key (partitions/<topic>/<p>)
// counts only the blocks under index keys, and only where a commit of the
// direct path or retention wrote it: blocks committed through the
// sequencer live in its batch records, and compaction of such a
// partition writes index keys without a partition key. So the figures
// here are counted from the served entries themselves — every index key
// entry and every record entry no key entry shadows — that end after the
// log start, as the read path serves them: Bytes is their stored bytes
// (what the object store keeps for the partition), Segments their number
// (blocks). For a partition of the direct path alone these are the
// partition key's own figures (it counts the index keys left).

// PartitionFigures returns the figures of topic t's partitions from the
// cache (which must keep entries: NewCache with withEntries), as of the
// cache's revision; ok is false when the cache cannot tell (it keeps no
// entries, or knows t under another id). Call CatchUp first for a
// linearizable answer.
func (ca *Cache) PartitionFigures(t Topic) (map[int32]PartitionState, bool) {
	if !ca.withEntries {
		return nil, false
	}
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	if ct, ok := ca.topics[t.Name]; !ok || ct.ID != t.ID {
		return nil, false
	}
	out := make(map[int32]PartitionState, t.Partitions)
	for p := range t.Partitions {
		pc := ca.parts[topicPartition{t.Name, p}]
		if pc == nil {
			continue
		}
		st := pc.state
		st.Bytes, st.Segments = served(pc.entries, st.Start)
		out[p] = st
	}
	return out, true
}

// served sums the stored bytes and counts the entries of es that end
// after start.
func served(es []IndexEntry, start int64) (bytes, segments int64) {
	for _, e := range es {
		if e.End() > start {
			bytes += e.Len
			segments++
		}
	}
	return bytes, segments
}

// indexPage bounds the index keys one range read of PartitionFigures
// returns (each is about 100 bytes).
const indexPage = 10000

// PartitionFigures reads the figures of topic t's partitions from etcd at
// one revision: the partition keys, the topic's index keys (in pages) and
// the sequencer's live records. It is what a node without a watched index
// (no fetch role) answers a description with; its cost follows the
// topic's index keys and the records not yet reclaimed.
func (c *Client) PartitionFigures(ctx context.Context, t Topic) (map[int32]PartitionState, error) {
	ops := []clientv3.Op{clientv3.OpGet(partitionsPrefix(t.Name), clientv3.WithPrefix())}
	if recordDecoder != nil {
		ops = append(ops, recordOps(t.Name)...)
	}
	resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("read partitions of %q: %w", t.Name, err)
	}
	rev := resp.Header.Revision
	states := map[int32]PartitionState{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		k, ok := parseKey(string(kv.Key))
		if !ok || k.kind != "partitions" {
			continue
		}
		var st PartitionState
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		states[k.partition] = st
	}
	keyed := map[int32][]IndexEntry{}
	prefix := indexTopicPrefix(t.Name)
	for key, end := prefix, prefixEnd(prefix); ; {
		r, err := c.cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(indexPage), clientv3.WithRev(rev))
		if err != nil {
			return nil, fmt.Errorf("read index of %q at revision %d: %w", t.Name, rev, err)
		}
		for _, kv := range r.Kvs {
			k, ok := parseKey(string(kv.Key))
			if !ok || k.kind != "index" {
				return nil, fmt.Errorf("read index of %q: malformed key %q", t.Name, kv.Key)
			}
			var e IndexEntry
			if err := json.Unmarshal(kv.Value, &e); err != nil {
				return nil, fmt.Errorf("decode index entry %s: %w", kv.Key, err)
			}
			e.Topic, e.Partition, e.Base, e.ModRev = t.Name, k.partition, k.base, kv.ModRevision
			keyed[k.partition] = append(keyed[k.partition], e)
		}
		if !r.More || len(r.Kvs) == 0 {
			break
		}
		key = string(r.Kvs[len(r.Kvs)-1].Key) + "\x00"
	}
	recs := map[int32][]IndexEntry{}
	var nexts map[int32]int64
	rt, head, err := recordView(resp.Responses[1:])
	if err != nil {
		return nil, fmt.Errorf("read partitions of %q: %w", t.Name, err)
	}
	if rt != nil && rt.ID == t.ID {
		es, err := c.recordEntries(ctx, rev, rt, -1)
		if err != nil {
			return nil, fmt.Errorf("read partitions of %q: %w", t.Name, err)
		}
		for _, e := range es {
			recs[e.Partition] = append(recs[e.Partition], e)
		}
		// The records newest first and the checkpoint give the high
		// watermarks of partitions whose records were reclaimed.
		if nexts, err = c.recordNexts(ctx, rev, rt, -1, head); err != nil {
			return nil, fmt.Errorf("read partitions of %q: %w", t.Name, err)
		}
	}
	out := make(map[int32]PartitionState, t.Partitions)
	for p := range t.Partitions {
		st, ks, rs := states[p], keyed[p], recs[p]
		if _, ok := states[p]; !ok && len(ks) == 0 && len(rs) == 0 && nexts[p] == 0 {
			continue
		}
		sort.Slice(ks, func(i, j int) bool { return ks[i].Base < ks[j].Base })
		st.Next = max(st.Next, st.Start, nexts[p])
		if len(ks) > 0 {
			st.Next = max(st.Next, ks[len(ks)-1].End())
		}
		for _, r := range rs {
			st.Next = max(st.Next, r.End())
		}
		es := append(ks, unshadowed(ks, rs)...)
		st.Bytes, st.Segments = served(es, st.Start)
		out[p] = st
	}
	return out, nil
}
