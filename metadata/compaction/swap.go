package compaction

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
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
	// then on shadow them; the records themselves are left to the record
	// pruner. Any number of records.
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
	// Seen, when set, is the view of the watched index the run was planned
	// from (metadata.Cache.SnapshotSeen, the whole partition at one
	// revision): the first attempt then writes without a read, fenced on
	// it, and only if that fails reads and checks as below. Ignored with
	// DropPrefix.
	Seen *metadata.Seen
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
// With s.Seen it first writes fenced on that view (no read); otherwise,
// or when that fails, it reads the partition and checks that its index keys in the run are
// exactly the planned ones and that no key before the run reaches into it
// (or, with DropPrefix, that there is none), then writes fenced on that
// read: no index key of the partition put since, the first and last
// replaced keys still there, the partition state and the topic as read.
// It fails with ErrSwapConflict when the run changed, and retries when
// only the partition state or the topic moved on (a commit at the head).
// Objects are not touched: the replaced ones are left to garbage
// collection. docs/compaction.md, "The swap transaction", says why this
// needs no comparison of the sequencer records the run comes from.
func (c *Client) SwapIndex(ctx context.Context, s Swap) error {
	if err := s.validate(); err != nil {
		return err
	}
	return c.swap(ctx, []Swap{s})
}

// swap prepares the writes of validated swaps and applies them in one
// transaction, retrying while only partition states or topics moved.
func (c *Client) swap(ctx context.Context, swaps []Swap) error {
	w, err := prepare(swaps)
	if err != nil {
		return err
	}
	if seenAll(swaps) {
		cmps, ops, ok, err := seenWrite(swaps, w)
		if err != nil {
			return fmt.Errorf("%s: %w", describe(swaps), err)
		}
		if ok {
			resp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
			if err != nil {
				return fmt.Errorf("%s: %w", describe(swaps), err)
			}
			if resp.Succeeded {
				return nil
			}
		}
	}
	return c.swapRead(ctx, swaps, w)
}

// prepare returns the writes of swaps.
func prepare(swaps []Swap) ([]swapWrites, error) {
	w := make([]swapWrites, len(swaps))
	for i := range swaps {
		var err error
		if w[i], err = swaps[i].writes(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// describe names swaps in errors.
func describe(swaps []Swap) string {
	if len(swaps) == 1 {
		s := &swaps[0]
		return fmt.Sprintf("swap %s/%d [%d,%d)", s.Topic, s.Partition, s.Old[0].Base, s.Old[len(s.Old)-1].End())
	}
	return fmt.Sprintf("swap %d partitions", len(swaps))
}

// swapRead applies swaps with writes w fenced on reads (trySwap),
// retrying while only partition states or topics moved.
func (c *Client) swapRead(ctx context.Context, swaps []Swap, w []swapWrites) error {
	// Errors of trySwap name the swap they are about.
	prefix, what := describe(swaps), ""
	if len(swaps) == 1 {
		prefix, what = "swap", strings.TrimPrefix(describe(swaps), "swap")
	}
	backoff := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		done, err := c.trySwap(ctx, swaps, w)
		if err != nil {
			return fmt.Errorf("%s: %w", prefix, err)
		}
		if done {
			return nil
		}
		// Lost to a concurrent write; the next read says whether it touched
		// a run (a conflict) or only partition states (retry).
		if attempt+1 >= swapAttempts {
			return fmt.Errorf("%s%s: %d attempts lost to concurrent commits: %w", prefix, what, attempt+1, ErrSwapConflict)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s%s: %w", prefix, what, ctx.Err())
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// swapKeys are the keys a swap reads and fences: its run [first, runEnd)
// (runEnd is the key of the offset the run ends at, so keys reaching into
// the run's last entry are in it), the partition state and the
// partition's index [prefix, prefixEnd).
type swapKeys struct {
	first, runEnd, partition, prefix, prefixEnd string
}

func (s *Swap) keys() swapKeys {
	prefix := keys.IndexPartitionPrefix(s.Topic, s.Partition)
	return swapKeys{
		first:     keys.Index(s.Topic, s.Partition, s.Old[0].Base),
		runEnd:    keys.Index(s.Topic, s.Partition, s.Old[len(s.Old)-1].End()),
		partition: keys.Partition(s.Topic, s.Partition),
		prefix:    prefix,
		prefixEnd: keys.PrefixEnd(prefix),
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

// swapWrites are a swap's puts of the new entries and deletes of the old
// ones, and how many bytes the partition gains (negative: loses).
type swapWrites struct {
	ops   []clientv3.Op
	delta int64
}

func (s *Swap) writes() (swapWrites, error) {
	k := s.keys()
	var w swapWrites
	for _, e := range s.keyed() {
		w.delta -= e.Len
	}
	for i, e := range s.New {
		v, err := json.Marshal(e)
		if err != nil {
			return w, err
		}
		key := keys.Index(s.Topic, s.Partition, e.Base)
		w.ops = append(w.ops, clientv3.OpPut(key, string(v)))
		// Delete the old keys between this new key and the next (a put and
		// a delete of the same key in one transaction is refused).
		to := k.runEnd
		if i+1 < len(s.New) {
			to = keys.Index(s.Topic, s.Partition, s.New[i+1].Base)
		}
		w.ops = append(w.ops, clientv3.OpDelete(key+"\x00", clientv3.WithRange(to)))
		w.delta += e.Len
	}
	if len(s.New) == 0 {
		w.ops = append(w.ops, clientv3.OpDelete(k.first, clientv3.WithRange(k.runEnd)))
	}
	return w, nil
}

// reads are the swap's reads: the partition state, the index keys of its
// run, and the last index key before it (with its value).
func (s *Swap) reads() []clientv3.Op {
	k := s.keys()
	return []clientv3.Op{
		clientv3.OpGet(k.partition),
		clientv3.OpGet(k.first, clientv3.WithRange(k.runEnd), clientv3.WithKeysOnly()),
		clientv3.OpGet(k.prefix, clientv3.WithRange(k.first), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
	}
}

// checkRead checks the responses to reads() against the plan: the run's
// index keys are exactly the planned key entries with their ModRevs, no
// key before the run reaches into it (with DropPrefix: there is none), and
// no record the run comes from predates the topic tkv. It returns the
// partition state (nil: none, a partition written only through the
// sequencer).
func (s *Swap) checkRead(rs []*etcdserverpb.ResponseOp, tkv *mvccpb.KeyValue) (pkv *mvccpb.KeyValue, err error) {
	where := fmt.Sprintf("%s/%d [%d,%d)", s.Topic, s.Partition, s.Old[0].Base, s.Old[len(s.Old)-1].End())
	if kvs := rs[0].GetResponseRange().Kvs; len(kvs) > 0 {
		pkv = kvs[0]
	}
	keyed := s.keyed()
	kvs := rs[1].GetResponseRange().Kvs
	if len(kvs) != len(keyed) {
		return nil, fmt.Errorf("%s: %d index keys now, %d planned: %w", where, len(kvs), len(keyed), ErrSwapConflict)
	}
	for i, kv := range kvs {
		if string(kv.Key) != keys.Index(s.Topic, s.Partition, keyed[i].Base) || kv.ModRevision != keyed[i].ModRev {
			return nil, fmt.Errorf("%s: entry %s changed: %w", where, kv.Key, ErrSwapConflict)
		}
	}
	if prev := rs[2].GetResponseRange().Kvs; len(prev) > 0 {
		if s.DropPrefix {
			return nil, fmt.Errorf("%s: entries before it: a dropped run must start the index: %w", where, ErrSwapConflict)
		}
		pk, ok := keys.Parse(string(prev[0].Key))
		var e metadata.IndexEntry
		if !ok || json.Unmarshal(prev[0].Value, &e) != nil {
			return nil, fmt.Errorf("%s: undecodable index key %s before it", where, prev[0].Key)
		}
		e.Base = pk.Base
		if e.End() > s.Old[0].Base {
			// Another swap put a key over the run's record entries.
			return nil, fmt.Errorf("%s: index key %s reaches to %d, into the run: %w", where, prev[0].Key, e.End(), ErrSwapConflict)
		}
	}
	if r := s.recordBefore(tkv.CreateRevision); r != 0 {
		return nil, fmt.Errorf("%s: sequencer record %d predates the topic: %w", where, r, ErrSwapConflict)
	}
	return pkv, nil
}

// recordBefore returns the batch of the first old record entry not newer
// than the topic created at createRev (0: none): such a record holds
// blocks of a deleted topic of the same name.
func (s *Swap) recordBefore(createRev int64) uint64 {
	for _, e := range s.Old {
		if e.Record != 0 && e.ModRev <= createRev {
			return e.Record
		}
	}
	return 0
}

// seenAll reports whether every swap can first be tried fenced on what
// its planner saw.
func seenAll(swaps []Swap) bool {
	for i := range swaps {
		if sn := swaps[i].Seen; sn == nil || sn.Rev <= 0 || sn.TopicModRev <= 0 || swaps[i].DropPrefix {
			return false
		}
	}
	return true
}

// seenWrite returns the write that tries swaps without a read: each swap
// fenced as fence does, on the revision its planner saw (Swap.Seen) rather
// than on a read, and the topics on their revisions there. At that
// revision the watched index served exactly the planned entries of the
// run, no key before it reaching into it, which is what checkRead checks
// of a read. If its comparisons fail, something changed since: the caller
// then reads and checks. ok is false when there is no such write (the
// views disagree on a topic, a record predates the topic).
func seenWrite(swaps []Swap, w []swapWrites) (cmps []clientv3.Cmp, ops []clientv3.Op, ok bool, err error) {
	topicRev := map[string]int64{}
	for i := range swaps {
		s := &swaps[i]
		sn := s.Seen
		if rev, seen := topicRev[s.Topic]; !seen {
			topicRev[s.Topic] = sn.TopicModRev
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.Topic(s.Topic)), "=", sn.TopicModRev))
		} else if rev != sn.TopicModRev {
			return nil, nil, false, nil
		}
		if s.recordBefore(sn.TopicCreateRev) != 0 {
			return nil, nil, false, nil
		}
		var pkv *mvccpb.KeyValue
		if sn.PartitionModRev > 0 {
			v, err := json.Marshal(sn.Partition)
			if err != nil {
				return nil, nil, false, err
			}
			pkv = &mvccpb.KeyValue{Key: []byte(keys.Partition(s.Topic, s.Partition)), Value: v, ModRevision: sn.PartitionModRev}
		}
		sc, so, err := s.fence(sn.Rev, pkv, w[i])
		if err != nil {
			return nil, nil, false, err
		}
		cmps = append(cmps, sc...)
		ops = append(ops, so...)
	}
	return cmps, ops, true, nil
}

// fence returns the comparisons and writes of a swap whose read at rev
// passed checkRead: no index key of the partition put since rev, the first
// and last replaced keys still there, the partition state as read (or
// still absent), and the partition state's new bytes and segments (and
// log start, for a dropped prefix).
func (s *Swap) fence(rev int64, pkv *mvccpb.KeyValue, w swapWrites) ([]clientv3.Cmp, []clientv3.Op, error) {
	k := s.keys()
	keyed := s.keyed()
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k.prefix), "<", rev+1).WithRange(k.prefixEnd)}
	cmps = append(cmps, s.keyEnds(keyed)...)
	ops := append([]clientv3.Op(nil), w.ops...)
	var st metadata.PartitionState
	if pkv != nil {
		if err := json.Unmarshal(pkv.Value, &st); err != nil {
			return nil, nil, fmt.Errorf("decode partition %s/%d: %w", s.Topic, s.Partition, err)
		}
		st.Bytes = max(st.Bytes+w.delta, 0)
		st.Segments = max(st.Segments+int64(len(s.New)-len(keyed)), 0)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k.partition), "=", pkv.ModRevision))
	} else {
		// Blocks committed only through the sequencer: no partition key.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k.partition), "=", 0))
	}
	dropped := s.DropPrefix && len(s.New) == 0
	if dropped {
		st.Start = max(st.Start, s.Old[len(s.Old)-1].End())
	}
	if pkv != nil || dropped {
		sv, _ := json.Marshal(st)
		ops = append(ops, clientv3.OpPut(k.partition, string(sv)))
	}
	return cmps, ops, nil
}

// MaxGroupOps bounds the operations and the comparisons of SwapMany's
// transactions (etcd's default limit is 128 per transaction).
const MaxGroupOps = 128

// GroupCost returns the etcd operations SwapMany's write transaction needs
// for swaps: the larger of its operations (each swap's puts and delete
// ranges, and its partition state's put unless the view it was planned
// from saw no partition key) and its comparisons (each swap's index range
// and partition state, the first and last replaced index keys if any, and
// each topic's key). The reads are split over as many read transactions
// as they need. A planner checks it against MaxGroupOps before adding a
// swap: a level-0 run of sequencer records with one new entry costs two,
// so 63 such swaps of one topic fit in a transaction (31 of direct-path
// partitions with index keys and a partition state).
func GroupCost(swaps []Swap) int {
	topics := map[string]bool{}
	ops, cmps := 0, 0
	for i := range swaps {
		s := &swaps[i]
		if !topics[s.Topic] {
			topics[s.Topic] = true
			cmps++
		}
		ops += max(2*len(s.New), 1)
		if s.WritesState() {
			ops++
		}
		cmps += 2
		if len(s.keyed()) > 0 {
			cmps += 2
		}
	}
	return max(ops, cmps)
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
	if err := validateGroup(swaps, MaxGroupOps, map[metadata.TopicPartition]bool{}, false); err != nil {
		return err
	}
	return c.swap(ctx, swaps)
}

// WritesState reports whether the swap's fenced write on its view would
// put the partition state: unless it was planned from a view without a
// partition key (and drops no prefix). Its write from a read may still,
// if one has been written since.
func (s *Swap) WritesState() bool {
	return s.DropPrefix || s.Seen == nil || s.Seen.PartitionModRev != 0
}

// validateGroup checks the swaps of one transaction (or nested
// transaction) with at most limit operations; seen holds the partitions
// of other swaps of the same request (whether one writes its state), and
// gets this group's only if it is valid. With shared, a partition may have
// several swaps if none writes its state (WritesState).
func validateGroup(swaps []Swap, limit int, seen map[metadata.TopicPartition]bool, shared bool) error {
	mine := map[metadata.TopicPartition]bool{}
	for i := range swaps {
		s := &swaps[i]
		if err := s.validate(); err != nil {
			return err
		}
		if s.DropPrefix {
			return fmt.Errorf("%w: swap %s/%d: a grouped swap may not drop a prefix", metadata.ErrInvalidArgument, s.Topic, s.Partition)
		}
		tp := metadata.TopicPartition{Topic: s.Topic, Partition: s.Partition}
		if _, twice := mine[tp]; twice {
			return fmt.Errorf("%w: two grouped swaps of %s/%d", metadata.ErrInvalidArgument, s.Topic, s.Partition)
		}
		if writes, ok := seen[tp]; ok && (!shared || writes || s.WritesState()) {
			return fmt.Errorf("%w: two grouped swaps of %s/%d", metadata.ErrInvalidArgument, s.Topic, s.Partition)
		}
		mine[tp] = s.WritesState()
	}
	if cost := GroupCost(swaps); cost > limit {
		return fmt.Errorf("%w: %d grouped swaps need %d etcd operations in one transaction, the limit is %d", metadata.ErrInvalidArgument, len(swaps), cost, limit)
	}
	for tp, w := range mine {
		seen[tp] = seen[tp] || w
	}
	return nil
}

// MaxNestedGroups bounds the groups SwapGroups writes in one etcd
// transaction. etcd allows each nested transaction what the outer one
// leaves of its operations, so a group of SwapGroups may cost at most
// NestedGroupOps (GroupCost): 55 level-0 runs of sequencer records with
// one new entry each.
const (
	MaxNestedGroups = 16
	NestedGroupOps  = MaxGroupOps - MaxNestedGroups
)

// SwapGroups applies groups of swaps, each as SwapMany would (all of the
// group's swaps or none, each checked as SwapIndex does), and returns
// each group's error. The groups whose swaps were all planned from the
// watched index (Seen) are first written together: one etcd transaction
// holds up to MaxNestedGroups of them, each a nested transaction fenced on
// its own views, so that one group's failed comparisons fail only that
// group. A compaction pass's swaps then cost one transaction per
// MaxNestedGroups groups (about 880 partitions), not one per group. A
// group whose write failed, or without views, goes on as SwapMany does
// (a read, a write fenced on it, retries). Each group must fit
// NestedGroupOps. A partition may have swaps of disjoint runs in several
// groups if none writes its state (WritesState: planned from views of a
// partition without a partition key, as one written only through the
// sequencer is): etcd checks every comparison of a transaction, nested
// ones included, before its first write, so both are fenced on the state
// their views saw; otherwise a partition may be in one swap only.
func (c *Client) SwapGroups(ctx context.Context, groups [][]Swap) []error {
	errs := make([]error, len(groups))
	writes := make([][]swapWrites, len(groups))
	seen := map[metadata.TopicPartition]bool{}
	type nested struct {
		g  int
		op clientv3.Op
	}
	var pending []nested
	for g, swaps := range groups {
		if len(swaps) == 0 {
			continue
		}
		if errs[g] = validateGroup(swaps, NestedGroupOps, seen, true); errs[g] != nil {
			continue
		}
		if writes[g], errs[g] = prepare(swaps); errs[g] != nil || !seenAll(swaps) {
			continue
		}
		cmps, ops, ok, err := seenWrite(swaps, writes[g])
		if errs[g] = err; err == nil && ok {
			pending = append(pending, nested{g, clientv3.OpTxn(cmps, ops, nil)})
		}
	}
	done := make([]bool, len(groups))
	// wrote holds the partitions an earlier transaction of this call
	// swapped without writing their state, at its revision: a later
	// group's swap of another run of one of them is fenced on that
	// revision instead of its view's (refence).
	wrote := map[metadata.TopicPartition]int64{}
	for len(pending) > 0 {
		part := pending[:min(len(pending), MaxNestedGroups)]
		pending = pending[len(part):]
		ops := make([]clientv3.Op, len(part))
		for i, n := range part {
			ops[i] = n.op
			if len(wrote) > 0 {
				if op, ok, err := refence(groups[n.g], writes[n.g], wrote); err == nil && ok {
					ops[i] = op
				}
			}
		}
		resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
		for i, n := range part {
			switch {
			case err != nil:
				errs[n.g] = fmt.Errorf("%s: %w", describe(groups[n.g]), err)
			default:
				done[n.g] = resp.Responses[i].GetResponseTxn().GetSucceeded()
			}
			if done[n.g] {
				for _, s := range groups[n.g] {
					if !s.WritesState() {
						wrote[metadata.TopicPartition{Topic: s.Topic, Partition: s.Partition}] = resp.Header.Revision
					}
				}
			}
		}
	}
	for g, swaps := range groups {
		if len(swaps) == 0 || done[g] || errs[g] != nil {
			continue
		}
		errs[g] = c.swapRead(ctx, swaps, writes[g])
	}
	return errs
}

// refence returns the nested transaction of a group whose swaps of
// partitions in wrote are fenced on the revision there rather than on
// their view's, and whether any was. A group of swaps planned together
// can hold a partition whose other run an earlier transaction of the same
// call swapped (etcd's 16 nested transactions a request do not take every
// group of a pass batch): its index keys then moved since the view, by
// that swap only, which was itself fenced on the view and wrote no
// partition state, so the partition as of that revision is the view plus
// that swap, and a fence on that revision is as strong as the view's was.
// Swaps that write their partition state are left as they are.
func refence(swaps []Swap, w []swapWrites, wrote map[metadata.TopicPartition]int64) (clientv3.Op, bool, error) {
	var out []Swap
	for i := range swaps {
		s := &swaps[i]
		rev, ok := wrote[metadata.TopicPartition{Topic: s.Topic, Partition: s.Partition}]
		if !ok || s.WritesState() || rev <= s.Seen.Rev {
			continue
		}
		if out == nil {
			out = slices.Clone(swaps)
		}
		sn := *s.Seen
		sn.Rev = rev
		out[i].Seen = &sn
	}
	if out == nil {
		return clientv3.Op{}, false, nil
	}
	cmps, ops, ok, err := seenWrite(out, w)
	if err != nil || !ok {
		return clientv3.Op{}, false, err
	}
	return clientv3.OpTxn(cmps, ops, nil), true, nil
}

// trySwap makes one attempt: a read of every swap's partition state, run
// and preceding key and of their topics (in as many read-only
// transactions as etcd's operation limit needs, each swap checked and
// fenced on the revision of the one that read it); one write fenced on
// those reads. done is false when a concurrent write got in between.
func (c *Client) trySwap(ctx context.Context, swaps []Swap, w []swapWrites) (done bool, err error) {
	var topics []string
	topicAt := map[string]int{}
	var reads []clientv3.Op
	for i := range swaps {
		if _, ok := topicAt[swaps[i].Topic]; !ok {
			topicAt[swaps[i].Topic] = len(topics)
			topics = append(topics, swaps[i].Topic)
			reads = append(reads, clientv3.OpGet(keys.Topic(swaps[i].Topic), clientv3.WithKeysOnly()))
		}
	}
	const perSwap = 3 // Swap.reads
	rs := make([][]*etcdserverpb.ResponseOp, len(swaps))
	revs := make([]int64, len(swaps))
	var cmps []clientv3.Cmp
	tkvs := make([]*mvccpb.KeyValue, len(topics))
	for i := 0; i < len(swaps); {
		j := i
		for ; j < len(swaps) && len(reads)+perSwap <= MaxGroupOps; j++ {
			reads = append(reads, swaps[j].reads()...)
		}
		rresp, err := c.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			return false, fmt.Errorf("read: %w", err)
		}
		resp := rresp.Responses
		if i == 0 {
			for k, t := range topics {
				kvs := resp[k].GetResponseRange().Kvs
				if len(kvs) == 0 {
					return false, fmt.Errorf("topic %s is gone: %w", t, ErrSwapConflict)
				}
				tkvs[k] = kvs[0]
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.Topic(t)), "=", kvs[0].ModRevision))
			}
			resp = resp[len(topics):]
		}
		for k := i; k < j; k++ {
			rs[k], revs[k] = resp[perSwap*(k-i):perSwap*(k-i+1)], rresp.Header.Revision
		}
		reads, i = nil, j
	}
	var ops []clientv3.Op
	for i := range swaps {
		s := &swaps[i]
		pkv, err := s.checkRead(rs[i], tkvs[topicAt[s.Topic]])
		if err != nil {
			return false, err
		}
		sc, so, err := s.fence(revs[i], pkv, w[i])
		if err != nil {
			return false, err
		}
		cmps = append(cmps, sc...)
		ops = append(ops, so...)
	}
	if len(ops) > MaxGroupOps || len(cmps) > MaxGroupOps {
		// GroupCost counted no partition state for a swap planned from a
		// view without one, and one has been written since (retention).
		return false, fmt.Errorf("%d operations and %d comparisons, over etcd's limit of %d: a partition state written since the plan: %w", len(ops), len(cmps), MaxGroupOps, ErrSwapConflict)
	}
	tresp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return tresp.Succeeded, nil
}
