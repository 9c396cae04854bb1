package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Compaction state in etcd (docs/compaction.md):
//
//	compaction/paused                    present: compactors start no new work
//	claims/compact/<topic>/<p>           node id of the compactor working on
//	                                     the partition, bound to its lease
//
// Both sort before index/, outside the watched cache's range.

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

// Swap replaces a contiguous run of a partition's index entries with
// entries that point at compacted objects and cover exactly the same
// offsets.
type Swap struct {
	Topic     string
	Partition int32
	// Old are the replaced entries in offset order, each with the ModRev it
	// was read with; Old[i].End() == Old[i+1].Base.
	Old []IndexEntry
	// New tile [Old[0].Base, Old[len-1].End()): New[0].Base == Old[0].Base,
	// New[i].End() == New[i+1].Base, and the last ends where Old ends. Each
	// holds at least one record. At most MaxSwapEntries.
	New []IndexEntry
	// DropPrefix allows New to be empty: the whole run held no record worth
	// keeping (a compacted topic whose prefix is all expired tombstones).
	// Old must then start the partition's index, and the log start offset
	// moves to the run's end.
	DropPrefix bool
}

func (s *Swap) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: swap %s/%d: %s", ErrInvalidArgument, s.Topic, s.Partition, fmt.Sprintf(format, args...))
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
	first := indexKey(s.Topic, s.Partition, s.Old[0].Base)
	last := indexKey(s.Topic, s.Partition, s.Old[len(s.Old)-1].Base)
	rangeEnd := last + "\x00"
	pk := partitionKey(s.Topic, s.Partition)
	prefix := indexPartitionPrefix(s.Topic, s.Partition)
	end := s.Old[len(s.Old)-1].End()

	var oldBytes, newBytes int64
	for _, e := range s.Old {
		oldBytes += e.Len
	}
	var puts []clientv3.Op
	for i, e := range s.New {
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		k := indexKey(s.Topic, s.Partition, e.Base)
		puts = append(puts, clientv3.OpPut(k, string(v)))
		// Delete the old keys between this new key and the next (a put and
		// a delete of the same key in one transaction is refused).
		to := rangeEnd
		if i+1 < len(s.New) {
			to = indexKey(s.Topic, s.Partition, s.New[i+1].Base)
		}
		puts = append(puts, clientv3.OpDelete(k+"\x00", clientv3.WithRange(to)))
		newBytes += e.Len
	}
	if len(s.New) == 0 {
		puts = append(puts, clientv3.OpDelete(first, clientv3.WithRange(rangeEnd)))
	}

	backoff := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		reads := []clientv3.Op{
			clientv3.OpGet(pk),
			clientv3.OpGet(first, clientv3.WithRange(rangeEnd), clientv3.WithKeysOnly()),
		}
		if s.DropPrefix {
			reads = append(reads, clientv3.OpGet(prefix, clientv3.WithRange(first), clientv3.WithCountOnly()))
		}
		rresp, err := c.cli.Txn(ctx).Then(reads...).Commit()
		if err != nil {
			return fmt.Errorf("swap %s/%d [%d,%d): read: %w", s.Topic, s.Partition, s.Old[0].Base, end, err)
		}
		pkv := rresp.Responses[0].GetResponseRange().Kvs
		if len(pkv) == 0 {
			return fmt.Errorf("swap %s/%d: partition state is gone (topic deleted?): %w", s.Topic, s.Partition, ErrSwapConflict)
		}
		kvs := rresp.Responses[1].GetResponseRange().Kvs
		if len(kvs) != len(s.Old) {
			return fmt.Errorf("swap %s/%d [%d,%d): %d entries now, %d planned: %w", s.Topic, s.Partition, s.Old[0].Base, end, len(kvs), len(s.Old), ErrSwapConflict)
		}
		for i, kv := range kvs {
			if string(kv.Key) != indexKey(s.Topic, s.Partition, s.Old[i].Base) || kv.ModRevision != s.Old[i].ModRev {
				return fmt.Errorf("swap %s/%d: entry %s changed: %w", s.Topic, s.Partition, kv.Key, ErrSwapConflict)
			}
		}
		if s.DropPrefix && rresp.Responses[2].GetResponseRange().Count != 0 {
			return fmt.Errorf("swap %s/%d: entries before %d: the dropped run must start the index: %w", s.Topic, s.Partition, s.Old[0].Base, ErrSwapConflict)
		}
		var st PartitionState
		if err := json.Unmarshal(pkv[0].Value, &st); err != nil {
			return fmt.Errorf("decode partition %s/%d: %w", s.Topic, s.Partition, err)
		}
		st.Bytes = max(st.Bytes+newBytes-oldBytes, 0)
		st.Segments = max(st.Segments+int64(len(s.New)-len(s.Old)), 0)
		if s.DropPrefix && len(s.New) == 0 {
			st.Start = max(st.Start, end)
		}
		sv, _ := json.Marshal(st)

		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(pk), "=", pkv[0].ModRevision),
			// Nothing in the run changed or appeared since the read...
			clientv3.Compare(clientv3.ModRevision(first), "<", rresp.Header.Revision+1).WithRange(rangeEnd),
			// ...and its ends are still there.
			clientv3.Compare(clientv3.ModRevision(first), "=", s.Old[0].ModRev),
			clientv3.Compare(clientv3.ModRevision(last), "=", s.Old[len(s.Old)-1].ModRev),
		}
		if s.DropPrefix {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(prefix), "=", 0).WithRange(first))
		}
		ops := append(append([]clientv3.Op(nil), puts...), clientv3.OpPut(pk, string(sv)))
		tresp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("swap %s/%d [%d,%d): %w", s.Topic, s.Partition, s.Old[0].Base, end, err)
		}
		if tresp.Succeeded {
			return nil
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

// IndexEntries reads a partition's index entries (with their ModRev) and
// state with one linearizable read.
func (c *Client) IndexEntries(ctx context.Context, topic string, p int32) ([]IndexEntry, PartitionState, error) {
	prefix := indexPartitionPrefix(topic, p)
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(partitionKey(topic, p)),
		clientv3.OpGet(prefix, clientv3.WithRange(prefixEnd(prefix))),
	).Commit()
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
	return out, st, nil
}

// SetCompactionPaused pauses (or resumes) compaction cluster-wide:
// compactors start no new partition while the key exists and finish or
// abandon the one in progress before its swap.
func (c *Client) SetCompactionPaused(ctx context.Context, paused bool) error {
	var err error
	if paused {
		_, err = c.cli.Put(ctx, compactionPausedKey(), time.Now().UTC().Format(time.RFC3339))
	} else {
		_, err = c.cli.Delete(ctx, compactionPausedKey())
	}
	if err != nil {
		return fmt.Errorf("set compaction paused=%v: %w", paused, err)
	}
	return nil
}

// CompactionPaused reports whether compaction is paused.
func (c *Client) CompactionPaused(ctx context.Context) (bool, error) {
	resp, err := c.cli.Get(ctx, compactionPausedKey(), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("read compaction pause: %w", err)
	}
	return resp.Count > 0, nil
}

// WatchCompactionPaused calls fn with the pause state now and at every
// change until ctx ends. It returns once the first state is known.
func (c *Client) WatchCompactionPaused(ctx context.Context, fn func(paused bool)) error {
	resp, err := c.cli.Get(ctx, compactionPausedKey(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("read compaction pause: %w", err)
	}
	fn(resp.Count > 0)
	go func() {
		rev := resp.Header.Revision
		for ctx.Err() == nil {
			wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), compactionPausedKey(), clientv3.WithRev(rev+1))
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				for _, ev := range wr.Events {
					fn(ev.Type == clientv3.EventTypePut)
					rev = ev.Kv.ModRevision
				}
			}
			if ctx.Err() != nil {
				return
			}
			// Watch lost (compacted history, leader change): re-read.
			if r, err := c.cli.Get(ctx, compactionPausedKey(), clientv3.WithCountOnly()); err == nil {
				fn(r.Count > 0)
				rev = r.Header.Revision
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return nil
}

// PartitionBacklog is what compaction has left to do on one partition:
// the level-0 entries (blocks ingest wrote, not compacted yet).
type PartitionBacklog struct {
	Topic     string
	Partition int32
	Entries   int64 // all index entries
	L0Entries int64
	L0Bytes   int64
}

// CompactionBacklog reads every index entry (paginated, at one revision)
// and counts, per partition, the entries and the level-0 entries and bytes.
func (c *Client) CompactionBacklog(ctx context.Context) ([]PartitionBacklog, error) {
	from, to := indexPrefix(), prefixEnd(indexPrefix())
	byTP := map[TopicPartition]*PartitionBacklog{}
	var order []TopicPartition
	key, rev := from, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(to), clientv3.WithLimit(5000)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := c.cli.Get(ctx, key, opts...)
		if err != nil {
			return nil, fmt.Errorf("read compaction backlog: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			k, ok := parseKey(string(kv.Key))
			if !ok || k.kind != "index" {
				continue
			}
			var e IndexEntry
			if json.Unmarshal(kv.Value, &e) != nil {
				continue
			}
			tp := TopicPartition{k.topic, k.partition}
			b := byTP[tp]
			if b == nil {
				b = &PartitionBacklog{Topic: tp.Topic, Partition: tp.Partition}
				byTP[tp] = b
				order = append(order, tp)
			}
			b.Entries++
			if e.Level == 0 {
				b.L0Entries++
				b.L0Bytes += e.Len
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	out := make([]PartitionBacklog, 0, len(order))
	for _, tp := range order {
		out = append(out, *byTP[tp])
	}
	return out, nil
}

// Claimer takes per-partition compaction claims bound to one lease, so
// that several compactors never work on the same partition at once. If the
// process dies the lease expires and the claims with it.
type Claimer struct {
	c     *Client
	owner string
	lease clientv3.LeaseID
	stop  context.CancelFunc

	mu   sync.Mutex
	lost bool
}

// NewClaimer grants a lease of ttl and keeps it alive until Close.
func (c *Client) NewClaimer(ctx context.Context, owner string, ttl time.Duration) (*Claimer, error) {
	resp, err := c.cli.Grant(ctx, max(int64(ttl/time.Second), 2))
	if err != nil {
		return nil, fmt.Errorf("grant compaction claim lease for %s: %w", owner, err)
	}
	kctx, cancel := context.WithCancel(context.Background())
	ka, err := c.cli.KeepAlive(kctx, resp.ID)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("keep compaction claim lease of %s alive: %w", owner, err)
	}
	cl := &Claimer{c: c, owner: owner, lease: resp.ID, stop: cancel}
	go func() {
		for range ka {
		}
		cl.mu.Lock()
		cl.lost = true
		cl.mu.Unlock()
	}()
	return cl, nil
}

// Lost reports that the lease could not be kept alive: claims may have
// expired. The caller should make a new Claimer.
func (cl *Claimer) Lost() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.lost
}

// Claim takes the partition's claim if nobody holds it. ok is false when
// another owner holds it.
func (cl *Claimer) Claim(ctx context.Context, topic string, p int32) (ok bool, err error) {
	k := claimKey(topic, p)
	resp, err := cl.c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, cl.owner, clientv3.WithLease(cl.lease))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("claim %s/%d for compaction: %w", topic, p, err)
	}
	return resp.Succeeded, nil
}

// Release gives the claim back (only if this owner holds it).
func (cl *Claimer) Release(ctx context.Context, topic string, p int32) error {
	k := claimKey(topic, p)
	_, err := cl.c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(k), "=", cl.owner), clientv3.Compare(clientv3.LeaseValue(k), "=", cl.lease)).
		Then(clientv3.OpDelete(k)).
		Commit()
	if err != nil {
		return fmt.Errorf("release compaction claim %s/%d: %w", topic, p, err)
	}
	return nil
}

// Close revokes the lease: every claim of this Claimer goes at once.
func (cl *Claimer) Close(ctx context.Context) error {
	cl.stop()
	if _, err := cl.c.cli.Revoke(ctx, cl.lease); err != nil {
		return fmt.Errorf("revoke compaction claim lease: %w", err)
	}
	return nil
}
