package metadata

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata/internal/keys"
)

// RecordMemo keeps the sequencer records that index reads of one pass
// over many partitions decoded (IndexEntriesWith), so that a pass decodes
// each live record once rather than once per partition: every record holds
// a block of most partitions, so retention over 1,000 partitions used to
// decode every record 1,000 times. A read still sees exactly the records
// live at its own revision: it lists their keys and modification revisions
// there and decodes only the ones the memo does not have (a record key is
// never rewritten with the same modification revision). It is safe for
// concurrent use; drop it after the pass, it keeps every record it read.
type RecordMemo struct {
	mu   sync.Mutex
	recs map[string]*memoRecord
}

type memoRecord struct {
	modRev int64
	rb     *RecordBlocks
	// order indexes rb.Entries by topic, then partition, then position:
	// a partition's blocks are one run of it.
	order []int32
}

// NewRecordMemo returns an empty memo.
func NewRecordMemo() *RecordMemo { return &RecordMemo{recs: map[string]*memoRecord{}} }

// memoKeyPage bounds the record keys one range read lists.
const memoKeyPage = 1000

// entries is recordEntries through the memo: topic t's blocks of
// partition p in the records live at rev, in base order, ModRev set.
func (m *RecordMemo) entries(ctx context.Context, c *Client, rev int64, t *Topic, p int32) ([]IndexEntry, error) {
	start, end := keys.SeqRecord(0), keys.PrefixEnd(keys.SeqRecordsPrefix())
	var out []IndexEntry
	for {
		resp, err := c.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithLimit(memoKeyPage), clientv3.WithRev(rev), clientv3.WithKeysOnly())
		if err != nil {
			return nil, fmt.Errorf("list sequencer records at revision %d: %w", rev, err)
		}
		for _, kv := range resp.Kvs {
			r, err := m.record(ctx, c, string(kv.Key), kv.ModRevision, rev)
			if err != nil {
				return nil, err
			}
			if !r.rb.liveIn(t) {
				continue
			}
			for _, i := range r.run(t.Name, p) {
				e := r.rb.Entries[i]
				e.ModRev = kv.ModRevision
				out = append(out, e)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// record returns the record at key with modification revision modRev,
// reading it at rev and decoding it when the memo does not have it.
func (m *RecordMemo) record(ctx context.Context, c *Client, key string, modRev, rev int64) (*memoRecord, error) {
	m.mu.Lock()
	r := m.recs[key]
	m.mu.Unlock()
	if r != nil && r.modRev == modRev {
		return r, nil
	}
	resp, err := c.cli.Get(ctx, key, clientv3.WithRev(rev))
	if err != nil {
		return nil, fmt.Errorf("read sequencer record %s at revision %d: %w", key, rev, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != modRev {
		return nil, fmt.Errorf("read sequencer record %s at revision %d: not the listed version %d", key, rev, modRev)
	}
	rb, err := recordDecoder.DecodeBlocks(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("sequencer record %s: %w", key, err)
	}
	r = &memoRecord{modRev: modRev, rb: rb, order: make([]int32, len(rb.Entries))}
	for i := range r.order {
		r.order[i] = int32(i)
	}
	slices.SortStableFunc(r.order, func(a, b int32) int { return r.cmpEntry(rb.Entries[a].Topic, rb.Entries[a].Partition, b) })
	m.mu.Lock()
	m.recs[key] = r
	m.mu.Unlock()
	return r, nil
}

// cmpEntry orders (topic, p) against entry i of the record.
func (r *memoRecord) cmpEntry(topic string, p int32, i int32) int {
	e := &r.rb.Entries[i]
	if c := cmp.Compare(topic, e.Topic); c != 0 {
		return c
	}
	return cmp.Compare(p, e.Partition)
}

// run returns the indexes of the record's entries of topic/p, in record
// order.
func (r *memoRecord) run(topic string, p int32) []int32 {
	i, _ := slices.BinarySearchFunc(r.order, 0, func(x int32, _ int) int { return -r.cmpEntry(topic, p, x) })
	j := i
	for j < len(r.order) && r.cmpEntry(topic, p, r.order[j]) == 0 {
		j++
	}
	return r.order[i:j]
}
