package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Partitions lists every partition the cache holds index entries or state
// for, sorted.
func (ca *Cache) Partitions() []TopicPartition {
	ca.mu.RLock()
	out := make([]TopicPartition, 0, len(ca.parts))
	for tp, pc := range ca.parts {
		if len(pc.entries) > 0 {
			out = append(out, TopicPartition{tp.topic, tp.p})
		}
	}
	ca.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// Snapshot returns a copy of a partition's state and every index entry
// (with its ModRev), as of the returned revision.
func (ca *Cache) Snapshot(topic string, p int32) ([]IndexEntry, PartitionState, int64) {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	pc := ca.parts[topicPartition{topic, p}]
	if pc == nil {
		return nil, PartitionState{}, ca.rev
	}
	return append([]IndexEntry(nil), pc.entries...), pc.state, ca.rev
}

// Seen is what the watched index held of a partition at one revision:
// enough for a write fenced on it instead of on a read of its own
// (compaction's swaps, metadata/compaction). At Rev the partition's index
// keys were exactly the key entries of the Snapshot taken with it, and
// its served entries did not overlap.
type Seen struct {
	// Rev is the etcd revision the cache reflected.
	Rev int64
	// TopicCreateRev and TopicModRev are the topic key's revisions.
	TopicCreateRev, TopicModRev int64
	// Partition is the value of the partition key and PartitionModRev its
	// ModRevision (0: no partition key, a partition written only through
	// the sequencer).
	Partition       PartitionState
	PartitionModRev int64
}

// SnapshotSeen is Snapshot with what it was taken from (Seen), under one
// lock. ok is false when the cache holds no topic of that name.
func (ca *Cache) SnapshotSeen(topic string, p int32) (entries []IndexEntry, seen Seen, ok bool) {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	tr, ok := ca.topicRevs[topic]
	if !ok {
		return nil, Seen{}, false
	}
	seen = Seen{Rev: ca.rev, TopicCreateRev: tr.create, TopicModRev: tr.mod}
	if pc := ca.parts[topicPartition{topic, p}]; pc != nil {
		entries = append([]IndexEntry(nil), pc.entries...)
		seen.Partition, seen.PartitionModRev = pc.direct, pc.directRev
	}
	return entries, seen, true
}

// ReadPartition calls fn with a partition's state and the index entries
// the cache serves for it (key entries and the record entries no key
// overlaps, in base order, ModRev set), as of one revision, under the
// cache's read lock: fn must not keep or change entries, nor call the
// cache. It reports false, without calling fn, when the cache holds
// nothing of the partition.
func (ca *Cache) ReadPartition(topic string, p int32, fn func(PartitionState, []IndexEntry)) bool {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	pc := ca.parts[topicPartition{topic, p}]
	if pc == nil {
		return false
	}
	fn(pc.state, pc.entries)
	return true
}

// IndexEntries reads a partition's index entries (with their ModRev) and
// state at one revision: the entries under index keys and, in base order
// among them, the blocks committed through the sequencer (Record set,
// ModRev the record key's) that no index key entry overlaps and that end
// after the log start: key entries shadow record entries (docs/metadata.md, "Reading the records"). The
// state's high watermark includes every record entry, shadowed or not,
// and the key entries. It reads every live sequencer record.
func (c *Client) IndexEntries(ctx context.Context, topic string, p int32) ([]IndexEntry, PartitionState, error) {
	return c.IndexEntriesWith(ctx, topic, p, nil)
}

// IndexEntriesWith is IndexEntries reading the sequencer records through
// memo (nil: none), for a pass over many partitions: each record is
// decoded once per pass instead of once per partition, and only its
// blocks of the partition are visited.
func (c *Client) IndexEntriesWith(ctx context.Context, topic string, p int32, memo *RecordMemo) ([]IndexEntry, PartitionState, error) {
	prefix := indexPartitionPrefix(topic, p)
	ops := []clientv3.Op{
		clientv3.OpGet(partitionKey(topic, p)),
		clientv3.OpGet(prefix, clientv3.WithRange(prefixEnd(prefix))),
	}
	if recordDecoder != nil {
		ops = append(ops, recordOps(topic)...)
	}
	resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, PartitionState{}, fmt.Errorf("read index of %s/%d: %w", topic, p, err)
	}
	var st PartitionState
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &st); err != nil {
			return nil, st, fmt.Errorf("decode partition %s/%d: %w", topic, p, err)
		}
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	out := make([]IndexEntry, 0, len(kvs))
	for _, kv := range kvs {
		k, ok := parseKey(string(kv.Key))
		if !ok || k.kind != "index" {
			return nil, st, fmt.Errorf("read index of %s/%d: malformed key %q", topic, p, kv.Key)
		}
		var e IndexEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, st, fmt.Errorf("decode index entry %s: %w", kv.Key, err)
		}
		e.Topic, e.Partition, e.Base, e.ModRev = topic, p, k.base, kv.ModRevision
		out = append(out, e)
	}
	t, _, err := recordView(resp.Responses[2:])
	if err != nil {
		return nil, st, fmt.Errorf("read index of %s/%d: %w", topic, p, err)
	}
	if t == nil {
		return out, st, nil
	}
	var recs []IndexEntry
	if memo != nil {
		recs, err = memo.entries(ctx, c, resp.Header.Revision, t, p)
	} else {
		recs, err = c.recordEntries(ctx, resp.Header.Revision, t, p)
	}
	if err != nil {
		return nil, st, fmt.Errorf("read index of %s/%d: %w", topic, p, err)
	}
	if len(out) > 0 {
		st.Next = max(st.Next, out[len(out)-1].End())
	}
	if len(recs) > 0 {
		for _, r := range recs {
			st.Next = max(st.Next, r.End())
		}
		for _, r := range unshadowed(out, recs) {
			if r.End() > st.Start { // below the log start: expired
				out = append(out, r)
			}
		}
		sort.SliceStable(out, func(i, j int) bool { return out[i].Base < out[j].Base })
	}
	return out, st, nil
}

// unshadowed returns the record entries of recs that overlap no entry of
// keyed (index key entries, sorted by Base and not overlapping).
func unshadowed(keyed, recs []IndexEntry) []IndexEntry {
	var out []IndexEntry
	for _, r := range recs {
		if i, j := overlapping(keyed, r.Base, r.End()); i == j {
			out = append(out, r)
		}
	}
	return out
}
