package metadata

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/varve-io/varve/metadata/internal/keys"
	"github.com/varve-io/varve/metadata/internal/seqhook"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Blocks committed through the sequencer have no index or partition keys:
// they live in its batch records (seq/records/<batch>, docs/metadata.md,
// "The sequencer"). This file reads them for the index readers of this
// package — the watched Cache, IndexEntries, PartitionStates and
// LookupIndex — so that every reader sees both kinds of block.

// RecordBlocks is what the read path needs of one sequencer batch record.
type RecordBlocks struct {
	Batch uint64
	// TopicIDs maps each topic named in the batch to the id its blocks
	// were committed under: a block whose topic now has another id
	// (deleted and created again) is not part of the topic.
	TopicIDs map[string]string
	// Entries are the batch's committed blocks — neither refused nor
	// duplicates — as level-0 index entries with Topic, Partition, Base
	// and Record (= Batch) set, in record order.
	Entries []IndexEntry
	// Objects are every object the record names, committed or not.
	Objects []string
}

// TopicNexts is one topic's high watermarks in a sequencer checkpoint.
type TopicNexts struct {
	Name, ID string
	Next     []int64 // by partition
}

// RecordDecoder decodes the sequencer's batch records and checkpoints.
// metadata/seqlog, which owns their formats, registers one in its init
// (seqlog imports metadata, so metadata cannot import it): a program that
// links seqlog reads records — every node does (the sequencer, fetch and
// metadata/maintenance import it). Without one, records are ignored.
type RecordDecoder interface {
	// DecodeBlocks decodes a seq/records/<batch> value.
	DecodeBlocks(value []byte) (*RecordBlocks, error)
	// CheckpointHead decodes the seq/checkpoint value: the current
	// checkpoint's batch and its number of chunks.
	CheckpointHead(value []byte) (batch uint64, chunks int, err error)
	// CheckpointNexts decodes a whole checkpoint (its chunks joined) into
	// every topic's high watermarks.
	CheckpointNexts(value []byte) ([]TopicNexts, error)
}

// recordDecoder is set once, by seqlog's init, before any goroutine runs.
var recordDecoder RecordDecoder

func init() {
	seqhook.Register = func(d any) { recordDecoder = d.(RecordDecoder) }
}

// liveIn reports whether the record's blocks of topic belong to t: the
// topic exists and still has the id they were committed under.
func (rb *RecordBlocks) liveIn(t *Topic) bool {
	if t == nil {
		return false
	}
	id, ok := rb.TopicIDs[t.Name]
	return ok && id == t.ID
}

// recordPage bounds the records one range read returns (each is at most
// about 1.25 MiB).
const recordPage = 32

// scanRecords decodes the records from batch from on, as of rev, oldest
// first (desc: newest first), calling fn with each and its key's
// ModRevision until fn returns false.
func (c *Client) scanRecords(ctx context.Context, rev int64, from uint64, desc bool, fn func(rb *RecordBlocks, modRev int64) (bool, error)) error {
	start, end := keys.SeqRecord(from), keys.PrefixEnd(keys.SeqRecordsPrefix())
	// Pages grow from 2 records: the newest one or two usually answer a
	// read newest first.
	for page := int64(2); ; page = min(2*page, recordPage) {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page), clientv3.WithRev(rev)}
		if desc {
			opts = append(opts, clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		}
		resp, err := c.cli.Get(ctx, start, opts...)
		if err != nil {
			return fmt.Errorf("read sequencer records at revision %d: %w", rev, err)
		}
		for _, kv := range resp.Kvs {
			rb, err := recordDecoder.DecodeBlocks(kv.Value)
			if err != nil {
				return fmt.Errorf("sequencer record %s: %w", kv.Key, err)
			}
			more, err := fn(rb, kv.ModRevision)
			if err != nil || !more {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		last := string(resp.Kvs[len(resp.Kvs)-1].Key)
		if desc {
			end = last
		} else {
			start = last + "\x00"
		}
	}
}

// recordEntries returns the record entries of topic t's partition p (all
// partitions: p < 0) as of rev, in base order, with ModRev set.
func (c *Client) recordEntries(ctx context.Context, rev int64, t *Topic, p int32) ([]IndexEntry, error) {
	var out []IndexEntry
	err := c.scanRecords(ctx, rev, 0, false, func(rb *RecordBlocks, modRev int64) (bool, error) {
		if !rb.liveIn(t) {
			return true, nil
		}
		for _, e := range rb.Entries {
			if e.Topic == t.Name && (p < 0 || e.Partition == p) {
				e.ModRev = modRev
				out = append(out, e)
			}
		}
		return true, nil
	})
	return out, err
}

// checkpointNexts reads the checkpoint that head (the seq/checkpoint
// value) names, as of rev, and returns topic t's high watermarks in it
// (nil when it has none under t's id).
func (c *Client) checkpointNexts(ctx context.Context, rev int64, head []byte, t *Topic) ([]int64, error) {
	batch, chunks, err := recordDecoder.CheckpointHead(head)
	if err != nil {
		return nil, fmt.Errorf("sequencer checkpoint: %w", err)
	}
	var v []byte
	for i := range chunks {
		resp, err := c.cli.Get(ctx, keys.SeqCheckpointChunk(batch, i), clientv3.WithRev(rev))
		if err != nil {
			return nil, fmt.Errorf("read sequencer checkpoint %d chunk %d: %w", batch, i, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("read sequencer checkpoint %d: chunk %d is missing", batch, i)
		}
		v = append(v, resp.Kvs[0].Value...)
	}
	tops, err := recordDecoder.CheckpointNexts(v)
	if err != nil {
		return nil, fmt.Errorf("sequencer checkpoint %d: %w", batch, err)
	}
	for _, tn := range tops {
		if tn.Name == t.Name && tn.ID == t.ID {
			return tn.Next, nil
		}
	}
	return nil, nil
}

// recordNexts returns the high watermarks the sequencer's records give
// topic t's partitions (only p; all when p < 0) as of rev. It reads the
// records newest first and stops once every wanted partition has a
// block; partitions without one since the checkpoint (head, nil if none)
// take the checkpoint's. So it reads at most the records after the
// checkpoint (bounded by the sequencer's checkpoint interval), and the
// checkpoint only when a partition was idle since.
func (c *Client) recordNexts(ctx context.Context, rev int64, t *Topic, p int32, head []byte) (map[int32]int64, error) {
	want := int(t.Partitions)
	if p >= 0 {
		want = 1
	}
	var from uint64
	if head != nil {
		batch, _, err := recordDecoder.CheckpointHead(head)
		if err != nil {
			return nil, fmt.Errorf("sequencer checkpoint: %w", err)
		}
		from = batch + 1
	}
	next := map[int32]int64{}
	err := c.scanRecords(ctx, rev, from, true, func(rb *RecordBlocks, _ int64) (bool, error) {
		if rb.liveIn(t) {
			for _, e := range rb.Entries {
				if e.Topic == t.Name && (p < 0 || e.Partition == p) {
					next[e.Partition] = max(next[e.Partition], e.End())
				}
			}
		}
		return len(next) < want, nil
	})
	if err != nil || len(next) >= want || head == nil {
		return next, err
	}
	cp, err := c.checkpointNexts(ctx, rev, head, t)
	if err != nil {
		return nil, err
	}
	for i, n := range cp {
		if _, ok := next[int32(i)]; !ok && n > 0 && (p < 0 || int32(i) == p) {
			next[int32(i)] = n
		}
	}
	return next, nil
}

// recordOps are the gets a linearizable read adds to its transaction to
// read the records after it at the same revision: the topic (for its id),
// the checkpoint head, and whether any record exists.
func recordOps(topic string) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(topicKey(topic)),
		clientv3.OpGet(keys.SeqCheckpoint()),
		clientv3.OpGet(keys.SeqRecordsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	}
}

// recordView reads what recordOps returned: the topic and the checkpoint
// head; t is nil when records have nothing for this read (no decoder, no
// topic, neither records nor a checkpoint), which then costs nothing more.
func recordView(rs []*etcdserverpb.ResponseOp) (t *Topic, head []byte, err error) {
	if recordDecoder == nil || len(rs) < 3 {
		return nil, nil, nil
	}
	tkvs := rs[0].GetResponseRange().Kvs
	if len(tkvs) == 0 {
		return nil, nil, nil
	}
	if kvs := rs[1].GetResponseRange().Kvs; len(kvs) > 0 {
		head = kvs[0].Value
	}
	if head == nil && rs[2].GetResponseRange().Count == 0 {
		return nil, nil, nil
	}
	t, err = decodeTopic(tkvs[0].Value)
	return t, head, err
}

// decodeTopic decodes a topic key's value (nil kvs: no topic).
func decodeTopic(v []byte) (*Topic, error) {
	t := new(Topic)
	if err := json.Unmarshal(v, t); err != nil {
		return nil, fmt.Errorf("decode topic: %w", err)
	}
	return t, nil
}
