package compaction

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// ErrSwapConflict: the index entries a swap was planned on changed (another
// compactor, retention or a topic deletion got there first). Nothing was
// written; plan again from a fresh view.
var ErrSwapConflict = errors.New("index changed since the compaction was planned")

// MaxSwapEntries bounds the new entries of one swap: each costs a put and a
// delete range, within etcd's 128 operations per transaction.
const MaxSwapEntries = 48

// MaxSwapRecords bounds the sequencer batch records the replaced entries
// of one swap come from: each costs a compare of the record key's
// ModRevision, within etcd's 128 compares per transaction.
const MaxSwapRecords = 96

// swapAttempts bounds how often a swap retries after losing only to a
// commit that touched the partition state (not the swapped entries).
const swapAttempts = 30

// Swap replaces a contiguous run of a partition's index entries with
// entries that point at compacted objects and cover exactly the same
// offsets.
type Swap struct {
	Topic     string
	Partition int32
	// Old are the replaced entries in offset order, each with the ModRev it
	// was read with; Old[i].End() == Old[i+1].Base. An entry may be an
	// index key's or a sequencer record's (Record set, ModRev the record
	// key's): the swap puts index keys over the record entries, which from
	// then on shadow them, and checks that each record still exists as
	// read; the records themselves are left to the record pruner. At most
	// MaxSwapRecords distinct records.
	Old []metadata.IndexEntry
	// New tile [Old[0].Base, Old[len-1].End()): New[0].Base == Old[0].Base,
	// New[i].End() == New[i+1].Base, and the last ends where Old ends. Each
	// holds at least one record. At most MaxSwapEntries.
	New []metadata.IndexEntry
	// DropPrefix allows New to be empty: the whole run held no record worth
	// keeping (a compacted topic whose prefix is all expired tombstones).
	// Old must then start the partition's index, and the log start offset
	// moves to the run's end.
	DropPrefix bool
}

func (s *Swap) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: swap %s/%d: %s", metadata.ErrInvalidArgument, s.Topic, s.Partition, fmt.Sprintf(format, args...))
	}
	if len(s.Old) == 0 {
		return bad("no entries to replace")
	}
	for i := 1; i < len(s.Old); i++ {
		if s.Old[i-1].End() != s.Old[i].Base {
			return bad("old entries are not contiguous: %d ends at %d, the next starts at %d", i-1, s.Old[i-1].End(), s.Old[i].Base)
		}
	}
	for i, e := range s.Old {
		if e.ModRev <= 0 {
			return bad("old entry %d (base %d) has no ModRev", i, e.Base)
		}
	}
	if n := len(s.records()); n > MaxSwapRecords {
		return bad("old entries from %d sequencer records, the limit is %d", n, MaxSwapRecords)
	}
	start, end := s.Old[0].Base, s.Old[len(s.Old)-1].End()
	if len(s.New) == 0 {
		if !s.DropPrefix {
			return bad("no new entries")
		}
		return nil
	}
	if len(s.New) > MaxSwapEntries {
		return bad("%d new entries, the limit is %d", len(s.New), MaxSwapEntries)
	}
	at := start
	for i, e := range s.New {
		switch {
		case e.Base != at:
			return bad("new entry %d starts at %d, want %d (new entries tile the old range)", i, e.Base, at)
		case e.Records <= 0:
			return bad("new entry %d holds no records", i)
		case e.Span != 0 && e.Span < e.Records:
			return bad("new entry %d spans %d offsets for %d records", i, e.Span, e.Records)
		case e.Object == "" || e.Len <= 0:
			return bad("new entry %d has no object range", i)
		}
		at = e.End()
	}
	if at != end {
		return bad("new entries end at %d, the old ones at %d", at, end)
	}
	return nil
}

// SwapIndex replaces s.Old with s.New in one etcd transaction, so a reader
// sees either the old entries or the new ones, never a gap or an overlap.
// The transaction verifies that the old entries are unchanged (same keys,
// same ModRevisions, nothing added between them) and updates the
// partition's byte and segment counts; it fails with ErrSwapConflict when
// they changed, and retries when only the partition state moved on (a
// commit at the head). Objects are not touched: the replaced ones are left
// to garbage collection.
func (c *Client) SwapIndex(ctx context.Context, s Swap) error {
	if err := s.validate(); err != nil {
		return err
	}
	puts, byteDelta, err := s.writes()
	if err != nil {
		return err
	}
	end := s.Old[len(s.Old)-1].End()
	backoff := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		done, err := c.trySwap(ctx, s, puts, byteDelta)
		if done || err != nil {
			return err
		}
		// Lost to a concurrent write; the next read says whether it touched
		// the run (a conflict) or only the partition state (retry).
		if attempt+1 >= swapAttempts {
			return fmt.Errorf("swap %s/%d [%d,%d): %d attempts lost to concurrent commits: %w", s.Topic, s.Partition, s.Old[0].Base, end, attempt+1, ErrSwapConflict)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("swap %s/%d: %w", s.Topic, s.Partition, ctx.Err())
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// swapKeys are the keys a swap reads and fences: its run of index entries
// [first, rangeEnd), the partition state, and the partition's index.
type swapKeys struct {
	first, last, rangeEnd, partition, prefix string
}

func (s *Swap) keys() swapKeys {
	last := keys.Index(s.Topic, s.Partition, s.Old[len(s.Old)-1].Base)
	return swapKeys{
		first:     keys.Index(s.Topic, s.Partition, s.Old[0].Base),
		last:      last,
		rangeEnd:  last + "\x00",
		partition: keys.Partition(s.Topic, s.Partition),
		prefix:    keys.IndexPartitionPrefix(s.Topic, s.Partition),
	}
}

// keyEnds compares the first and last of keyed (the old entries under
// index keys) with their revisions as read: none when keyed is empty.
func (s *Swap) keyEnds(keyed []metadata.IndexEntry) []clientv3.Cmp {
	if len(keyed) == 0 {
		return nil
	}
	first, last := keyed[0], keyed[len(keyed)-1]
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(keys.Index(s.Topic, s.Partition, first.Base)), "=", first.ModRev),
		clientv3.Compare(clientv3.ModRevision(keys.Index(s.Topic, s.Partition, last.Base)), "=", last.ModRev),
	}
}

// keyed returns the old entries under index keys.
func (s *Swap) keyed() []metadata.IndexEntry {
	var out []metadata.IndexEntry
	for _, e := range s.Old {
		if e.Record == 0 {
			out = append(out, e)
		}
	}
	return out
}

// swapRecord is a sequencer record some old entries come from.
type swapRecord struct {
	batch  uint64
	modRev int64
}

// records returns the distinct records of the old entries, in order.
func (s *Swap) records() []swapRecord {
	var out []swapRecord
	seen := map[uint64]bool{}
	for _, e := range s.Old {
		if e.Record != 0 && !seen[e.Record] {
			seen[e.Record] = true
			out = append(out, swapRecord{e.Record, e.ModRev})
		}
	}
	return out
}

// writes returns the puts of the new entries and the deletes of the old
// ones, and how many bytes the partition gains (negative: loses).
func (s *Swap) writes() ([]clientv3.Op, int64, error) {
	k := s.keys()
	var delta int64
	for _, e := range s.keyed() {
		delta -= e.Len
	}
	var puts []clientv3.Op
	for i, e := range s.New {
		v, err := json.Marshal(e)
		if err != nil {
			return nil, 0, err
		}
		key := keys.Index(s.Topic, s.Partition, e.Base)
		puts = append(puts, clientv3.OpPut(key, string(v)))
		// Delete the old keys between this new key and the next (a put and
		// a delete of the same key in one transaction is refused).
		to := k.rangeEnd
		if i+1 < len(s.New) {
			to = keys.Index(s.Topic, s.Partition, s.New[i+1].Base)
		}
		puts = append(puts, clientv3.OpDelete(key+"\x00", clientv3.WithRange(to)))
		delta += e.Len
	}
	if len(s.New) == 0 {
		puts = append(puts, clientv3.OpDelete(k.first, clientv3.WithRange(k.rangeEnd)))
	}
	return puts, delta, nil
}

// trySwap reads the run and the partition state, checks that the run is
// as planned, and writes puts with the updated state, fenced on what it
// read. done is false when a concurrent write got in between.
func (c *Client) trySwap(ctx context.Context, s Swap, puts []clientv3.Op, byteDelta int64) (done bool, err error) {
	k := s.keys()
	end := s.Old[len(s.Old)-1].End()
	recs := s.records()
	reads := []clientv3.Op{
		clientv3.OpGet(k.partition),
		clientv3.OpGet(k.first, clientv3.WithRange(k.rangeEnd), clientv3.WithKeysOnly()),
		clientv3.OpGet(keys.Topic(s.Topic), clientv3.WithKeysOnly()),
	}
	if s.DropPrefix {
		reads = append(reads, clientv3.OpGet(k.prefix, clientv3.WithRange(k.first), clientv3.WithCountOnly()))
	}
	for _, r := range recs {
		reads = append(reads, clientv3.OpGet(keys.SeqRecord(r.batch), clientv3.WithKeysOnly()))
	}
	rresp, err := c.cli.Txn(ctx).Then(reads...).Commit()
	if err != nil {
		return false, fmt.Errorf("swap %s/%d [%d,%d): read: %w", s.Topic, s.Partition, s.Old[0].Base, end, err)
	}
	pkv, tkv, err := s.checkRead(rresp, recs)
	if err != nil {
		return false, err
	}
	keyed := s.keyed()
	var st metadata.PartitionState
	if pkv != nil {
		if err := json.Unmarshal(pkv.Value, &st); err != nil {
			return false, fmt.Errorf("decode partition %s/%d: %w", s.Topic, s.Partition, err)
		}
		st.Bytes = max(st.Bytes+byteDelta, 0)
		st.Segments = max(st.Segments+int64(len(s.New)-len(keyed)), 0)
	}
	dropped := s.DropPrefix && len(s.New) == 0
	if dropped {
		st.Start = max(st.Start, end)
	}
	sv, _ := json.Marshal(st)

	cmps := []clientv3.Cmp{
		// Nothing in the run changed or appeared since the read...
		clientv3.Compare(clientv3.ModRevision(k.first), "<", rresp.Header.Revision+1).WithRange(k.rangeEnd),
	}
	if pkv != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.partition), "=", pkv.ModRevision))
	} else {
		// Blocks committed only through the sequencer: no partition key.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k.partition), "=", 0))
	}
	// ...and the ends of its keys are still there.
	cmps = append(cmps, s.keyEnds(keyed)...)
	if len(recs) > 0 || pkv == nil {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.Topic(s.Topic)), "=", tkv.ModRevision))
	}
	if len(recs) > 0 {
		// The records still exist as read (a record is never rewritten;
		// the pruner deletes it only once index keys cover it), under the
		// topic they were read for.
		for _, r := range recs {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.SeqRecord(r.batch)), "=", r.modRev))
		}
	}
	if s.DropPrefix {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k.prefix), "=", 0).WithRange(k.first))
	}
	ops := append([]clientv3.Op(nil), puts...)
	if pkv != nil || dropped {
		ops = append(ops, clientv3.OpPut(k.partition, string(sv)))
	}
	tresp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("swap %s/%d [%d,%d): %w", s.Topic, s.Partition, s.Old[0].Base, end, err)
	}
	return tresp.Succeeded, nil
}

// checkRead checks trySwap's read: the partition state (absent for a
// partition written only through the sequencer), the run's index keys
// are exactly the planned key entries with their ModRevs, the topic exists
// and is older than the records, and with DropPrefix nothing comes before
// the run. It returns the partition state (nil: none) and the topic key.
func (s *Swap) checkRead(rresp *clientv3.TxnResponse, recs []swapRecord) (pkv, tkv *mvccpb.KeyValue, err error) {
	end := s.Old[len(s.Old)-1].End()
	if kvs := rresp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		pkv = kvs[0]
	}
	keyed := s.keyed()
	kvs := rresp.Responses[1].GetResponseRange().Kvs
	if len(kvs) != len(keyed) {
		return nil, nil, fmt.Errorf("swap %s/%d [%d,%d): %d index keys now, %d planned: %w", s.Topic, s.Partition, s.Old[0].Base, end, len(kvs), len(keyed), ErrSwapConflict)
	}
	for i, kv := range kvs {
		if string(kv.Key) != keys.Index(s.Topic, s.Partition, keyed[i].Base) || kv.ModRevision != keyed[i].ModRev {
			return nil, nil, fmt.Errorf("swap %s/%d: entry %s changed: %w", s.Topic, s.Partition, kv.Key, ErrSwapConflict)
		}
	}
	tkvs := rresp.Responses[2].GetResponseRange().Kvs
	if len(tkvs) == 0 {
		return nil, nil, fmt.Errorf("swap %s/%d: topic is gone: %w", s.Topic, s.Partition, ErrSwapConflict)
	}
	// A partition written only through the sequencer has no partition
	// key; the topic key fences the swap then.
	tkv = tkvs[0]
	for _, r := range recs {
		// A record older than the topic holds blocks of a deleted
		// topic of the same name.
		if r.modRev <= tkv.CreateRevision {
			return nil, nil, fmt.Errorf("swap %s/%d: sequencer record %d predates the topic: %w", s.Topic, s.Partition, r.batch, ErrSwapConflict)
		}
	}
	n := 3
	if s.DropPrefix {
		if rresp.Responses[n].GetResponseRange().Count != 0 {
			return nil, nil, fmt.Errorf("swap %s/%d: entries before %d: the dropped run must start the index: %w", s.Topic, s.Partition, s.Old[0].Base, ErrSwapConflict)
		}
		n++
	}
	for i, r := range recs {
		rkvs := rresp.Responses[n+i].GetResponseRange().Kvs
		if len(rkvs) == 0 || rkvs[0].ModRevision != r.modRev {
			return nil, nil, fmt.Errorf("swap %s/%d: sequencer record %d is gone or changed: %w", s.Topic, s.Partition, r.batch, ErrSwapConflict)
		}
	}
	return pkv, tkv, nil
}

// MaxGroupOps bounds the operations and the comparisons of SwapMany's
// transactions (etcd's default limit is 128 per transaction).
const MaxGroupOps = 128

// GroupCost returns the etcd operations SwapMany's read and write
// transactions would need for swaps with the given number of new entries
// in total, distinct topics and distinct sequencer records: the largest
// of the read's operations, the write's operations and its comparisons.
// A planner checks it against MaxGroupOps before adding a swap.
func GroupCost(swaps, newEntries, topics, records int) int {
	reads := 2*swaps + topics + records
	ops := 2*newEntries + swaps
	cmps := 4*swaps + topics + records
	return max(reads, ops, cmps)
}

// SwapMany applies several swaps, of different partitions, in one etcd
// transaction: all of them or none. It checks every swap as SwapIndex
// does (each reader sees either all the old entries or all the new ones),
// and retries when only a partition state moved. Compaction writes the
// small runs of many partitions into one object and swaps them together:
// one transaction instead of one per partition. Swaps may not drop a
// prefix, two may not name the same partition, and the transactions must
// fit within MaxGroupOps (GroupCost).
func (c *Client) SwapMany(ctx context.Context, swaps []Swap) error {
	if len(swaps) == 0 {
		return nil
	}
	seen := map[metadata.TopicPartition]bool{}
	topics := map[string]bool{}
	recs := map[uint64]int64{}
	newEntries := 0
	for i := range swaps {
		s := &swaps[i]
		if err := s.validate(); err != nil {
			return err
		}
		if s.DropPrefix {
			return fmt.Errorf("%w: swap %s/%d: a grouped swap may not drop a prefix", metadata.ErrInvalidArgument, s.Topic, s.Partition)
		}
		tp := metadata.TopicPartition{Topic: s.Topic, Partition: s.Partition}
		if seen[tp] {
			return fmt.Errorf("%w: two grouped swaps of %s/%d", metadata.ErrInvalidArgument, s.Topic, s.Partition)
		}
		seen[tp] = true
		topics[s.Topic] = true
		for _, r := range s.records() {
			if m, ok := recs[r.batch]; ok && m != r.modRev {
				return fmt.Errorf("%w: sequencer record %d read at two ModRevisions", metadata.ErrInvalidArgument, r.batch)
			}
			recs[r.batch] = r.modRev
		}
		newEntries += len(s.New)
	}
	if cost := GroupCost(len(swaps), newEntries, len(topics), len(recs)); cost > MaxGroupOps {
		return fmt.Errorf("%w: %d grouped swaps need %d etcd operations in one transaction, the limit is %d", metadata.ErrInvalidArgument, len(swaps), cost, MaxGroupOps)
	}
	type prepared struct {
		puts  []clientv3.Op
		delta int64
	}
	prep := make([]prepared, len(swaps))
	for i := range swaps {
		puts, delta, err := swaps[i].writes()
		if err != nil {
			return err
		}
		prep[i] = prepared{puts, delta}
	}
	backoff := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		done, err := c.trySwapMany(ctx, swaps, nil, func(i int) ([]clientv3.Op, int64) { return prep[i].puts, prep[i].delta })
		if done || err != nil {
			return err
		}
		if attempt+1 >= swapAttempts {
			return fmt.Errorf("swap %d partitions: %d attempts lost to concurrent commits: %w", len(swaps), attempt+1, ErrSwapConflict)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("swap %d partitions: %w", len(swaps), ctx.Err())
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// trySwapMany is trySwap for a group: one read of every swap's partition
// state and run, the topics and the records; one fenced write.
func (c *Client) trySwapMany(ctx context.Context, swaps []Swap, ops []clientv3.Op, writes func(int) ([]clientv3.Op, int64)) (done bool, err error) {
	var reads []clientv3.Op
	for i := range swaps {
		k := swaps[i].keys()
		reads = append(reads,
			clientv3.OpGet(k.partition),
			clientv3.OpGet(k.first, clientv3.WithRange(k.rangeEnd), clientv3.WithKeysOnly()))
	}
	var topics []string
	topicAt := map[string]int{}
	var recs []swapRecord
	recAt := map[uint64]int{}
	for i := range swaps {
		if _, ok := topicAt[swaps[i].Topic]; !ok {
			topicAt[swaps[i].Topic] = len(topics)
			topics = append(topics, swaps[i].Topic)
		}
		for _, r := range swaps[i].records() {
			if _, ok := recAt[r.batch]; !ok {
				recAt[r.batch] = len(recs)
				recs = append(recs, r)
			}
		}
	}
	for _, t := range topics {
		reads = append(reads, clientv3.OpGet(keys.Topic(t), clientv3.WithKeysOnly()))
	}
	for _, r := range recs {
		reads = append(reads, clientv3.OpGet(keys.SeqRecord(r.batch), clientv3.WithKeysOnly()))
	}
	rresp, err := c.cli.Txn(ctx).Then(reads...).Commit()
	if err != nil {
		return false, fmt.Errorf("swap %d partitions: read: %w", len(swaps), err)
	}
	rs := rresp.Responses
	nt := 2 * len(swaps)
	nr := nt + len(topics)
	var cmps []clientv3.Cmp
	tkvs := make([]*mvccpb.KeyValue, len(topics))
	for i, t := range topics {
		kvs := rs[nt+i].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return false, fmt.Errorf("swap %s: topic is gone: %w", t, ErrSwapConflict)
		}
		tkvs[i] = kvs[0]
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.Topic(t)), "=", kvs[0].ModRevision))
	}
	for i, r := range recs {
		kvs := rs[nr+i].GetResponseRange().Kvs
		if len(kvs) == 0 || kvs[0].ModRevision != r.modRev {
			return false, fmt.Errorf("swap: sequencer record %d is gone or changed: %w", r.batch, ErrSwapConflict)
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.SeqRecord(r.batch)), "=", r.modRev))
	}
	for i := range swaps {
		s := &swaps[i]
		k := s.keys()
		end := s.Old[len(s.Old)-1].End()
		tkv := tkvs[topicAt[s.Topic]]
		for _, r := range s.records() {
			if r.modRev <= tkv.CreateRevision {
				return false, fmt.Errorf("swap %s/%d: sequencer record %d predates the topic: %w", s.Topic, s.Partition, r.batch, ErrSwapConflict)
			}
		}
		var pkv *mvccpb.KeyValue
		if kvs := rs[2*i].GetResponseRange().Kvs; len(kvs) > 0 {
			pkv = kvs[0]
		}
		keyed := s.keyed()
		kvs := rs[2*i+1].GetResponseRange().Kvs
		if len(kvs) != len(keyed) {
			return false, fmt.Errorf("swap %s/%d [%d,%d): %d index keys now, %d planned: %w", s.Topic, s.Partition, s.Old[0].Base, end, len(kvs), len(keyed), ErrSwapConflict)
		}
		for j, kv := range kvs {
			if string(kv.Key) != keys.Index(s.Topic, s.Partition, keyed[j].Base) || kv.ModRevision != keyed[j].ModRev {
				return false, fmt.Errorf("swap %s/%d: entry %s changed: %w", s.Topic, s.Partition, kv.Key, ErrSwapConflict)
			}
		}
		puts, delta := writes(i)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.first), "<", rresp.Header.Revision+1).WithRange(k.rangeEnd))
		if pkv != nil {
			var st metadata.PartitionState
			if err := json.Unmarshal(pkv.Value, &st); err != nil {
				return false, fmt.Errorf("decode partition %s/%d: %w", s.Topic, s.Partition, err)
			}
			st.Bytes = max(st.Bytes+delta, 0)
			st.Segments = max(st.Segments+int64(len(s.New)-len(keyed)), 0)
			sv, _ := json.Marshal(st)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.partition), "=", pkv.ModRevision))
			ops = append(ops, clientv3.OpPut(k.partition, string(sv)))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k.partition), "=", 0))
		}
		cmps = append(cmps, s.keyEnds(keyed)...)
		ops = append(ops, puts...)
	}
	tresp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("swap %d partitions: %w", len(swaps), err)
	}
	return tresp.Succeeded, nil
}
