package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/varve-io/varve/metadata/internal/keys"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cache is an in-memory copy of topics and, optionally, partition state and
// the segment index, kept current by one etcd watch. Waiters on a partition
// are woken as soon as its state changes: tailing readers never poll.
type Cache struct {
	c           *Client
	withEntries bool
	from, to    string

	mu     sync.RWMutex
	topics map[string]Topic
	// topicRevs are the topic keys' revisions (Seen).
	topicRevs map[string]keyRevs
	parts     map[topicPartition]*partCache
	rev       int64
	revCh     chan struct{} // closed when rev advances
	err       error         // set when the watch stopped for good

	// records maps each applied sequencer batch record to the
	// partitions it added entries to, and where.
	records map[uint64][]recordSpan

	catchUp catchUp // CatchUp's rounds (catchup.go)

	cancel context.CancelFunc
	done   chan struct{}
}

// keyRevs are a key's create and mod revisions.
type keyRevs struct{ create, mod int64 }

type topicPartition struct {
	topic string
	p     int32
}

// recordSpan is the range of offsets [base, end) a sequencer record's
// blocks hold in one partition: the sequencer gives a batch's blocks of a
// partition consecutive offsets, so its entries there are found by a
// binary search and removed without visiting the partition's others.
type recordSpan struct {
	tp        topicPartition
	base, end int64
}

type partCache struct {
	state  PartitionState // direct with Next raised to recNext and keyNext
	direct PartitionState // as its partition key holds it
	// directRev is the partition key's ModRevision (0: no key).
	directRev int64
	// recNext is the end of its last record entry, served or shadowed; a
	// pruned record does not lower it (its offsets are covered by index
	// keys or below the log start). keyNext is the end of its last index
	// key entry.
	recNext, keyNext int64
	// entries are the served entries, sorted by Base: every index key
	// entry and the record entries no key entry overlaps (key entries
	// shadow record entries, docs/metadata.md "Reading the records").
	entries []IndexEntry
	// recs are every record entry of the partition, served or shadowed,
	// sorted by Base: a deleted key entry uncovers those it shadowed.
	recs []IndexEntry
	// entriesAll and recsAll are the arrays entries and recs live in,
	// from their first element: dropRange removes a prefix by slicing it
	// off, and putSorted moves the list back to the front of its array
	// rather than growing it (see frontOf).
	entriesAll, recsAll []IndexEntry
	changed             chan struct{}
	// lastRecord is 1 + the batch of the last record applied to it (0:
	// none yet), and lastSpan the index of its span in that record's
	// list.
	lastRecord uint64
	lastSpan   int
}

// refresh recomputes state from the partition key, the record entries and
// the key entries: the high watermark never goes back when a record
// shadowed by keys, or below the log start, is pruned.
func (pc *partCache) refresh() {
	pc.state = pc.direct
	pc.state.Next = max(pc.direct.Next, pc.direct.Start, pc.recNext, pc.keyNext)
}

// NewCache loads the current state and starts watching. withEntries also
// keeps partition state and every index entry (the read path needs them; the
// write path needs topics only).
func (c *Client) NewCache(ctx context.Context, withEntries bool) (*Cache, error) {
	ca := &Cache{c: c, withEntries: withEntries, done: make(chan struct{}), revCh: make(chan struct{})}
	if withEntries {
		// index/, nodes/, partitions/ and topics/ sort together, after guards/.
		ca.from, ca.to = indexPrefix(), prefixEnd(topicsPrefix())
	} else {
		ca.from, ca.to = topicsPrefix(), prefixEnd(topicsPrefix())
	}
	if err := ca.load(ctx); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(WithCaller(context.Background(), CallerCache))
	ca.cancel = cancel
	go ca.run(wctx)
	return ca, nil
}

// Close stops the watch.
func (ca *Cache) Close() {
	ca.cancel()
	<-ca.done
}

func (ca *Cache) load(ctx context.Context) error {
	topics := map[string]Topic{}
	trevs := map[string]keyRevs{}
	parts := map[topicPartition]*partCache{}
	records := map[uint64][]recordSpan{}
	// Sequencer records are read apart, in small pages (each is up to
	// about 1.25 MiB), and applied once the topics are known; checkpoints
	// (seq/checkpoint*) are skipped. Every read is at the first one's
	// revision.
	type span struct {
		from, to string
		page     int64
	}
	spans := []span{{ca.from, ca.to, 10000}}
	if ca.withEntries {
		recs := keys.SeqRecordsPrefix()
		spans = []span{
			{ca.from, keys.SeqCheckpoint(), 10000},
			{prefixEnd(keys.SeqCheckpointChunksPrefix()), recs, 10000},
			{prefixEnd(recs), ca.to, 10000},
		}
		if recordDecoder != nil {
			spans = append(spans, span{recs, prefixEnd(recs), recordPage})
		}
	}
	var recKVs []*mvccpb.KeyValue
	rev := int64(0)
	for _, sp := range spans {
		key := sp.from
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(sp.to), clientv3.WithLimit(sp.page)}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			resp, err := ca.c.cli.Get(ctx, key, opts...)
			if err != nil {
				return fmt.Errorf("load metadata cache: %w", err)
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			for _, kv := range resp.Kvs {
				if _, ok := keys.ParseSeqRecord(string(kv.Key)); ok {
					recKVs = append(recKVs, kv)
					continue
				}
				applyPut(topics, trevs, parts, kv)
			}
			if !resp.More || len(resp.Kvs) == 0 {
				break
			}
			key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	for _, pc := range parts {
		sort.Slice(pc.entries, func(i, j int) bool { return pc.entries[i].Base < pc.entries[j].Base })
	}
	for _, kv := range recKVs {
		ca.applyRecord(topics, parts, records, kv, nil)
	}
	ca.mu.Lock()
	old := ca.parts
	ca.topics, ca.topicRevs, ca.parts, ca.records = topics, trevs, parts, records
	for tp, pc := range parts {
		pc.changed = make(chan struct{})
		_ = tp
	}
	ca.setRevLocked(rev)
	ca.mu.Unlock()
	// Wake everyone who waited on the old copy.
	for _, pc := range old {
		close(pc.changed)
	}
	return nil
}

func (ca *Cache) setRevLocked(rev int64) {
	if rev > ca.rev {
		ca.rev = rev
		close(ca.revCh)
		ca.revCh = make(chan struct{})
	}
}

func (ca *Cache) run(ctx context.Context) {
	defer close(ca.done)
	for ctx.Err() == nil {
		ca.mu.RLock()
		rev := ca.rev
		ca.mu.RUnlock()
		wch := ca.c.cli.Watch(clientv3.WithRequireLeader(ctx), ca.from,
			clientv3.WithRange(ca.to), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					ca.c.log.Warn("metadata watch compacted, reloading", "rev", rev)
					ca.reload(ctx)
				}
				break
			}
			ca.apply(wr)
		}
		if ctx.Err() != nil {
			return
		}
		// The watch ended (leader lost, connection reset): restart from the
		// last applied revision after a short pause.
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (ca *Cache) reload(ctx context.Context) {
	for ctx.Err() == nil {
		if err := ca.load(ctx); err == nil {
			return
		} else {
			ca.c.log.Warn("metadata cache reload failed", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (ca *Cache) apply(wr clientv3.WatchResponse) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	changed := map[topicPartition]bool{}
	for _, ev := range wr.Events {
		if batch, ok := keys.ParseSeqRecord(string(ev.Kv.Key)); ok {
			if ca.withEntries {
				// A record is never rewritten; a put over one replaces it.
				ca.removeRecord(batch, changed)
				if ev.Type != mvccpb.DELETE && recordDecoder != nil {
					ca.applyRecord(ca.topics, ca.parts, ca.records, ev.Kv, changed)
				}
			}
			continue
		}
		k, ok := parseKey(string(ev.Kv.Key))
		if !ok {
			continue
		}
		tp := topicPartition{k.topic, k.partition}
		if k.kind == "topics" && ca.withEntries {
			// A topic deleted, or created again under a new id, no
			// longer has the blocks records hold for its old id.
			if old, ok := ca.topics[k.topic]; ok && (ev.Type == mvccpb.DELETE || !sameTopicID(old, ev.Kv.Value)) {
				ca.dropRecordEntries(k.topic, changed)
			}
		}
		if ev.Type == mvccpb.DELETE {
			switch k.kind {
			case "topics":
				delete(ca.topics, k.topic)
				delete(ca.topicRevs, k.topic)
			case "partitions":
				if pc := ca.parts[tp]; pc != nil {
					delete(ca.parts, tp)
					close(pc.changed)
				}
			case "index":
				if pc := ca.parts[tp]; pc != nil {
					pc.deleteKey(k.base)
					changed[tp] = true
				}
			}
			continue
		}
		if k.kind != "topics" {
			if _, ok := ca.parts[tp]; !ok {
				ca.parts[tp] = &partCache{changed: make(chan struct{})}
			}
			changed[tp] = true
		}
		applyPut(ca.topics, ca.topicRevs, ca.parts, ev.Kv)
	}
	for tp := range changed {
		if pc := ca.parts[tp]; pc != nil {
			close(pc.changed)
			pc.changed = make(chan struct{})
		}
	}
	// During catch-up etcd sends events in batches that all carry the
	// latest store revision in their header; only the last event's revision
	// is what this cache has applied. A progress notification has no events
	// and its header revision is applied by definition.
	rev := wr.Header.Revision
	if n := len(wr.Events); n > 0 {
		rev = wr.Events[n-1].Kv.ModRevision
	}
	ca.setRevLocked(rev)
}

// applyPut records one key-value pair; index entries arrive in base order
// within a partition except across compaction swaps, so insertion keeps order.
func applyPut(topics map[string]Topic, trevs map[string]keyRevs, parts map[topicPartition]*partCache, kv *mvccpb.KeyValue) {
	k, ok := parseKey(string(kv.Key))
	if !ok {
		return
	}
	if k.kind == "topics" {
		var t Topic
		if json.Unmarshal(kv.Value, &t) == nil {
			topics[k.topic] = t
			trevs[k.topic] = keyRevs{create: kv.CreateRevision, mod: kv.ModRevision}
		}
		return
	}
	tp := topicPartition{k.topic, k.partition}
	pc := parts[tp]
	if pc == nil {
		pc = &partCache{changed: make(chan struct{})}
		parts[tp] = pc
	}
	switch k.kind {
	case "partitions":
		var st PartitionState
		if json.Unmarshal(kv.Value, &st) == nil {
			pc.direct, pc.directRev = st, kv.ModRevision
			pc.refresh()
			pc.hideExpiredRecords()
		}
	case "index":
		var e IndexEntry
		if json.Unmarshal(kv.Value, &e) != nil {
			return
		}
		e.Topic, e.Partition, e.Base, e.ModRev = k.topic, k.partition, k.base, kv.ModRevision
		pc.insertKey(e)
	}
}

// hideExpiredRecords stops serving the record entries that end at or
// below the log start.
func (pc *partCache) hideExpiredRecords() {
	if pc.direct.Start == 0 || len(pc.recs) == 0 {
		return
	}
	pc.entries = keepEntries(pc.entries, func(e IndexEntry) bool {
		return e.Record == 0 || e.End() > pc.direct.Start
	})
}

// keepEntries filters es in place, keeping the entries keep selects, and
// clears the tail it no longer uses (so its object names can be freed).
// Every reader copies entries under the cache's lock, so reusing the
// backing array is safe.
func keepEntries(es []IndexEntry, keep func(IndexEntry) bool) []IndexEntry {
	kept := es[:0]
	for _, e := range es {
		if keep(e) {
			kept = append(kept, e)
		}
	}
	clear(es[len(kept):])
	return kept
}

// overlapping returns the range [i, j) of es (sorted by Base, not
// overlapping each other) that overlaps [base, end).
func overlapping(es []IndexEntry, base, end int64) (int, int) {
	i := sort.Search(len(es), func(i int) bool { return es[i].End() > base })
	j := i
	for j < len(es) && es[j].Base < end {
		j++
	}
	return i, j
}

// insertKey adds an index key entry; the record entries it overlaps are
// no longer served.
func (pc *partCache) insertKey(e IndexEntry) {
	i, j := overlapping(pc.entries, e.Base, e.End())
	kept := pc.entries[:i]
	for _, x := range pc.entries[i:j] {
		if x.Record == 0 {
			kept = append(kept, x)
		}
	}
	if len(kept) < j {
		pc.entries = append(kept, pc.entries[j:]...)
	}
	pc.insert(e)
	if e.End() > pc.keyNext {
		pc.keyNext = e.End()
		pc.refresh()
	}
}

// deleteKey removes the index key entry at base, and serves again the
// record entries it shadowed that no other key entry overlaps.
func (pc *partCache) deleteKey(base int64) {
	i := sort.Search(len(pc.entries), func(i int) bool { return pc.entries[i].Base >= base })
	if i >= len(pc.entries) || pc.entries[i].Base != base || pc.entries[i].Record != 0 {
		return
	}
	end := pc.entries[i].End()
	pc.entries = append(pc.entries[:i:i], pc.entries[i+1:]...)
	ri, rj := overlapping(pc.recs, base, end)
	for _, r := range pc.recs[ri:rj] {
		pc.serveRecord(r)
	}
}

// shadowed reports whether an index key entry overlaps [base, end).
func (pc *partCache) shadowed(base, end int64) bool {
	if n := len(pc.entries); n == 0 || pc.entries[n-1].End() <= base {
		return false // the common case: a block after every entry
	}
	i, j := overlapping(pc.entries, base, end)
	for _, x := range pc.entries[i:j] {
		if x.Record == 0 {
			return true
		}
	}
	return false
}

// serveRecord serves a record entry unless a key entry shadows it or it
// ends at or below the log start (expired).
func (pc *partCache) serveRecord(e IndexEntry) {
	if e.End() > pc.direct.Start && !pc.shadowed(e.Base, e.End()) {
		pc.insert(e)
	}
}

// addRecord adds a record entry to recs and, unless shadowed, to entries.
func (pc *partCache) addRecord(e IndexEntry) {
	pc.recs = putSorted(pc.recs, &pc.recsAll, e)
	pc.serveRecord(e)
}

// insert adds e in base order, replacing an entry with the same base.
func (pc *partCache) insert(e IndexEntry) {
	pc.entries = putSorted(pc.entries, &pc.entriesAll, e)
}

// putSorted puts e into es (sorted by Base) in order, replacing an entry
// with the same base; almost always it goes last. When es is full and the
// array it lives in (*all) has room before it that dropRange left, of at
// least a quarter of es, the entries move to the front of the array
// instead of into a new, larger one: pruning the oldest records and
// adding new ones then allocates nothing.
func putSorted(es []IndexEntry, all *[]IndexEntry, e IndexEntry) []IndexEntry {
	n := len(es)
	i := n
	if n > 0 && es[n-1].Base >= e.Base {
		i = sort.Search(n, func(i int) bool { return es[i].Base >= e.Base })
		if i < n && es[i].Base == e.Base {
			es[i] = e
			return es
		}
	}
	if n == cap(es) {
		if f := frontOf(*all, es); f > 0 && f >= n/4 {
			full := (*all)[:cap(*all)]
			copy(full, es)
			clear(full[n : f+n])
			es = full[:n]
		}
	}
	es = append(es, IndexEntry{})
	copy(es[i+1:], es[i:])
	es[i] = e
	if frontOf(*all, es) < 0 {
		*all = es // a new array
	}
	return es
}

// frontOf returns how many elements of the array all starts lie before
// es[0], or -1 if es does not live in that array.
func frontOf(all, es []IndexEntry) int {
	if cap(es) == 0 || cap(all) < cap(es) {
		return -1
	}
	full := all[:cap(all)]
	f := cap(full) - cap(es)
	if &full[f] != &es[:1][0] {
		return -1
	}
	return f
}

// applyRecord adds the committed blocks of a sequencer batch record whose
// topic still has the id they were committed under, and raises their
// partitions' high watermarks, in the same step. changed (nil while
// loading) collects the partitions to wake.
func (ca *Cache) applyRecord(topics map[string]Topic, parts map[topicPartition]*partCache, records map[uint64][]recordSpan, kv *mvccpb.KeyValue, changed map[topicPartition]bool) {
	rb, err := recordDecoder.DecodeBlocks(kv.Value)
	if err != nil {
		ca.c.log.Error("metadata cache: undecodable sequencer record; its blocks are not readable", "key", string(kv.Key), "err", err)
		return
	}
	// About one block per partition per writer's object.
	touched := make([]recordSpan, 0, len(rb.Entries)/max(1, len(rb.Objects)))
	// A record's entries come by commit, each mostly of one topic: its
	// liveness is looked up once per run of entries of a topic.
	lastTopic, live := "", false
	for _, e := range rb.Entries {
		if e.Topic != lastTopic || lastTopic == "" {
			t, ok := topics[e.Topic]
			lastTopic, live = e.Topic, ok && rb.liveIn(&t)
		}
		if !live {
			continue
		}
		tp := topicPartition{e.Topic, e.Partition}
		pc := parts[tp]
		if pc == nil {
			pc = &partCache{changed: make(chan struct{})}
			parts[tp] = pc
		}
		e.ModRev = kv.ModRevision
		pc.addRecord(e)
		pc.recNext = max(pc.recNext, e.End())
		pc.refresh()
		if pc.lastRecord != rb.Batch+1 {
			// Each partition once, though a record has a block of it
			// from every ingest node's object.
			pc.lastRecord, pc.lastSpan = rb.Batch+1, len(touched)
			touched = append(touched, recordSpan{tp, e.Base, e.End()})
		} else {
			sp := &touched[pc.lastSpan]
			sp.base, sp.end = min(sp.base, e.Base), max(sp.end, e.End())
		}
		if changed != nil {
			changed[tp] = true
		}
	}
	if len(touched) > 0 {
		records[rb.Batch] = touched
	}
}

// removeRecord drops the entries a record added (its key was deleted).
func (ca *Cache) removeRecord(batch uint64, changed map[topicPartition]bool) {
	for _, sp := range ca.records[batch] {
		if pc := ca.parts[sp.tp]; pc != nil {
			pc.dropRecord(batch, sp.base, sp.end)
			changed[sp.tp] = true
		}
	}
	delete(ca.records, batch)
}

// dropRecord removes the entries of record batch, which lie in [base,
// end): in the steady state compaction prunes the oldest records, at the
// front of the lists, so this costs the entries removed, not the
// partition's whole lists (docs/metadata.md). The high watermark stays.
func (pc *partCache) dropRecord(batch uint64, base, end int64) {
	pc.entries = dropRange(pc.entries, &pc.entriesAll, base, end, batch)
	pc.recs = dropRange(pc.recs, &pc.recsAll, base, end, batch)
}

// dropRange removes from es (sorted by Base, not overlapping) the entries
// of record batch in [base, end), keeping the order. A prefix is sliced
// off (putSorted reuses its room; *all keeps the array); anything else
// moves the entries after it.
func dropRange(es []IndexEntry, all *[]IndexEntry, base, end int64, batch uint64) []IndexEntry {
	i, j := overlapping(es, base, end)
	k := i
	for _, e := range es[i:j] {
		if e.Record != batch {
			es[k] = e
			k++
		}
	}
	if k == j {
		return es
	}
	if i == 0 && k == 0 {
		if frontOf(*all, es) < 0 {
			*all = es
		}
		clear(es[:j])
		return es[j:]
	}
	n := copy(es[k:], es[j:])
	clear(es[k+n:])
	return es[:k+n]
}

// dropRecordEntries drops every record entry of topic.
func (ca *Cache) dropRecordEntries(topic string, changed map[topicPartition]bool) {
	for tp, pc := range ca.parts {
		if tp.topic == topic && (pc.recNext > 0 || len(pc.recs) > 0) {
			pc.dropAllRecords()
			changed[tp] = true
		}
	}
}

// dropAllRecords removes every record entry, for a topic that is gone or
// has a new id, and recomputes the high watermark from the key entries
// left.
func (pc *partCache) dropAllRecords() {
	pc.entries = keepEntries(pc.entries, func(e IndexEntry) bool { return e.Record == 0 })
	pc.recs, pc.recsAll = nil, nil
	pc.recNext, pc.keyNext = 0, 0
	for _, e := range pc.entries {
		pc.keyNext = max(pc.keyNext, e.End())
	}
	pc.refresh()
}

// sameTopicID reports whether a topic key's new value keeps old's id.
func sameTopicID(old Topic, v []byte) bool {
	var t Topic
	return json.Unmarshal(v, &t) == nil && t.ID == old.ID
}

// Topic returns a topic from the cache.
func (ca *Cache) Topic(name string) (Topic, bool) {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	t, ok := ca.topics[name]
	return t, ok
}

// Topics returns every topic in the cache, sorted by name.
func (ca *Cache) Topics() []Topic {
	ca.mu.RLock()
	out := make([]Topic, 0, len(ca.topics))
	for _, t := range ca.topics {
		out = append(out, t)
	}
	ca.mu.RUnlock()
	slices.SortFunc(out, func(a, b Topic) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Revision is the etcd revision the cache reflects.
func (ca *Cache) Revision() int64 {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	return ca.rev
}

// WaitRevision waits until the cache reflects at least rev.
func (ca *Cache) WaitRevision(ctx context.Context, rev int64) error {
	for {
		ca.mu.RLock()
		cur, ch := ca.rev, ca.revCh
		ca.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// PartitionView is a consistent look at one partition.
type PartitionView struct {
	State PartitionState
	// Changed is closed at the partition's next change.
	Changed <-chan struct{}
}

// Partition returns the partition's state and a channel closed when it next
// changes. A partition with no commit yet has a zero state.
func (ca *Cache) Partition(topic string, p int32) PartitionView {
	tp := topicPartition{topic, p}
	ca.mu.RLock()
	pc := ca.parts[tp]
	if pc != nil {
		v := PartitionView{State: pc.state, Changed: pc.changed}
		ca.mu.RUnlock()
		return v
	}
	ca.mu.RUnlock()
	ca.mu.Lock()
	defer ca.mu.Unlock()
	pc = ca.parts[tp]
	if pc == nil {
		pc = &partCache{changed: make(chan struct{})}
		ca.parts[tp] = pc
	}
	return PartitionView{State: pc.state, Changed: pc.changed}
}

// Lookup returns the index entry holding offset, if the cache has it.
func (ca *Cache) Lookup(topic string, p int32, offset int64) (IndexEntry, bool) {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	pc := ca.parts[topicPartition{topic, p}]
	if pc == nil {
		return IndexEntry{}, false
	}
	i := sort.Search(len(pc.entries), func(i int) bool { return pc.entries[i].Base > offset }) - 1
	if i < 0 || offset >= pc.entries[i].End() {
		return IndexEntry{}, false
	}
	return pc.entries[i], true
}

// Entries returns a copy of the partition's index entries that end after
// offset, at most limit of them (limit <= 0: all).
func (ca *Cache) Entries(topic string, p int32, offset int64, limit int) []IndexEntry {
	ca.mu.RLock()
	defer ca.mu.RUnlock()
	pc := ca.parts[topicPartition{topic, p}]
	if pc == nil {
		return nil
	}
	es := pc.entries
	n := len(es)
	// A tailing consumer asks for an offset in the last block or past it:
	// look there before searching (End grows with the index, as the
	// search assumes).
	switch {
	case n == 0 || es[n-1].End() <= offset:
		return nil
	case n == 1 || es[n-2].End() <= offset:
		es = es[n-1:]
	default:
		es = es[sort.Search(n-1, func(i int) bool { return es[i].End() > offset }):]
	}
	if limit > 0 && len(es) > limit {
		es = es[:limit]
	}
	return append([]IndexEntry(nil), es...)
}
