package metadata

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/varve-io/varve/metadata/internal/keys"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// During catch-up etcd stamps every batch with the store's latest revision;
// the cache must count only what it applied, or a watch restarted between
// batches would resume past events it never saw.
func TestCacheCountsAppliedRevisionNotHeader(t *testing.T) {
	ca := &Cache{topics: map[string]Topic{}, topicRevs: map[string]keyRevs{}, parts: map[topicPartition]*partCache{}, revCh: make(chan struct{}), rev: 10}
	batch := clientv3.WatchResponse{
		Header: &etcdserverpb.ResponseHeader{Revision: 2501},
		Events: []*clientv3.Event{
			{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(indexKey("t", 0, 0)), Value: []byte(`{"o":"a","n":1}`), ModRevision: 11}},
			{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(indexKey("t", 0, 1)), Value: []byte(`{"o":"b","n":1}`), ModRevision: 1001}},
		},
	}
	ca.apply(batch)
	if got := ca.Revision(); got != 1001 {
		t.Fatalf("revision after a catch-up batch = %d, want 1001 (the last event), not the header's 2501", got)
	}
	// A progress notification carries no events: its header is applied.
	ca.apply(clientv3.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: 3000}})
	if got := ca.Revision(); got != 3000 {
		t.Fatalf("revision after progress notify = %d, want 3000", got)
	}
}

// stubDecoder hands out records made from templates: the value is the
// batch number as text, and the batch's blocks start where the previous
// batch's ended. The benchmark below measures the cache, not decoding.
type stubDecoder struct {
	templates []*RecordBlocks
	writers   int
}

func (d stubDecoder) DecodeBlocks(v []byte) (*RecordBlocks, error) {
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return nil, err
	}
	rb := d.templates[n%uint64(len(d.templates))]
	rb.Batch = n
	for i := range rb.Entries {
		e := &rb.Entries[i]
		e.Record = n
		e.Base = (int64(n)*int64(d.writers) + int64(i/(len(rb.Entries)/d.writers))) * 5
	}
	return rb, nil
}
func (stubDecoder) CheckpointHead([]byte) (uint64, int, error)   { return 0, 0, nil }
func (stubDecoder) CheckpointNexts([]byte) ([]TopicNexts, error) { return nil, nil }

// BenchmarkCacheApplyRecords measures a fetch node's cache in the steady
// state of one or four ingest nodes on a 1,000-partition topic: each op
// applies one sequencer record holding a block of every partition from
// each node's object, and the deletion of the record applied `live` ops
// before: live=60 is 6 s of records at a 100 ms linger, live=2000 is what
// a fetch node holds in the steady state (the pruner keeps records
// RecordGrace, 3 min, and runs every minute: 3 to 4 min of them).
func BenchmarkCacheApplyRecords(b *testing.B) {
	for _, live := range []int{60, 2000} {
		for _, writers := range []int{1, 4} {
			b.Run(fmt.Sprintf("parts=1000/writers=%d/live=%d", writers, live), func(b *testing.B) {
				benchApplyRecords(b, 1000, writers, live)
			})
		}
	}
}

func benchApplyRecords(b *testing.B, parts, writers, live int) {
	dec := stubDecoder{writers: writers}
	for r := range 4 {
		rb := &RecordBlocks{TopicIDs: map[string]string{"big": "id1"}}
		for w := range writers {
			obj := fmt.Sprintf("objects/%d-%d.vseg", r, w)
			rb.Objects = append(rb.Objects, obj)
			for p := range parts {
				rb.Entries = append(rb.Entries, IndexEntry{Topic: "big", Partition: int32(p), Object: obj, Off: int64(p) * 100, Len: 100, Records: 5, RawBytes: 500})
			}
		}
		dec.templates = append(dec.templates, rb)
	}
	old := recordDecoder
	recordDecoder = dec
	b.Cleanup(func() { recordDecoder = old })
	ca := &Cache{withEntries: true, topicRevs: map[string]keyRevs{}, topics: map[string]Topic{"big": {Name: "big", ID: "id1", Partitions: int32(parts)}},
		parts: map[topicPartition]*partCache{}, records: map[uint64][]recordSpan{}, revCh: make(chan struct{})}
	rev := int64(1)
	event := func(typ mvccpb.Event_EventType, batch uint64) {
		rev++
		kv := &mvccpb.KeyValue{Key: []byte(keys.SeqRecord(batch)), ModRevision: rev}
		if typ == mvccpb.PUT {
			kv.Value = []byte(strconv.FormatUint(batch, 10))
		}
		ca.apply(clientv3.WatchResponse{Header: &etcdserverpb.ResponseHeader{Revision: rev}, Events: []*clientv3.Event{{Type: typ, Kv: kv}}})
	}
	for n := range uint64(live) {
		event(mvccpb.PUT, n+1)
	}
	b.ReportAllocs()
	for n := uint64(1); b.Loop(); n++ {
		event(mvccpb.PUT, n+uint64(live))
		event(mvccpb.DELETE, n)
	}
}

// A partition's lists under records applied and pruned (mostly oldest
// first, as compaction does, sometimes out of order) and key entries
// written and deleted, against a model that recomputes them from scratch:
// pruning a record slices it off the front or moves the rest, and adding
// one reuses the room in front; the lists never differ from the model.
func TestPartitionListsMatchModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pc := &partCache{changed: make(chan struct{})}
	type rec struct {
		batch     uint64
		base, end int64
	}
	var live []rec                 // records applied and not pruned
	keys := map[int64]IndexEntry{} // key entries by base
	next, batch := int64(0), uint64(0)
	check := func(step int) {
		t.Helper()
		var recs []IndexEntry
		for _, r := range live {
			for b := r.base; b < r.end; b += 5 {
				recs = append(recs, IndexEntry{Base: b, Records: 5, Record: r.batch, Object: fmt.Sprint("o", r.batch)})
			}
		}
		var entries []IndexEntry
		for _, k := range keys {
			entries = append(entries, k)
		}
		for _, e := range recs {
			shadowed := false
			for _, k := range keys {
				if k.Base < e.End() && e.Base < k.End() {
					shadowed = true
				}
			}
			if !shadowed {
				entries = append(entries, e)
			}
		}
		slices.SortFunc(entries, func(a, b IndexEntry) int { return cmp.Compare(a.Base, b.Base) })
		if !slices.Equal(pc.recs, recs) {
			t.Fatalf("step %d: recs = %v, want %v", step, pc.recs, recs)
		}
		if !slices.Equal(pc.entries, entries) {
			t.Fatalf("step %d: entries = %v, want %v", step, pc.entries, entries)
		}
	}
	for step := range 5000 {
		switch op := rng.IntN(100); {
		case op < 48 || len(live) == 0: // a record with 1 to 4 blocks
			batch++
			r := rec{batch: batch, base: next}
			for range 1 + rng.IntN(4) {
				pc.addRecord(IndexEntry{Base: next, Records: 5, Record: batch, Object: fmt.Sprint("o", batch)})
				next += 5
			}
			r.end = next
			live = append(live, r)
		case op < 90: // prune the oldest record
			pc.dropRecord(live[0].batch, live[0].base, live[0].end)
			live = live[1:]
		case op < 95: // prune another one
			i := rng.IntN(len(live))
			pc.dropRecord(live[i].batch, live[i].base, live[i].end)
			live = slices.Delete(live, i, i+1)
		case op < 98: // a key entry over some live record's range
			r := live[rng.IntN(len(live))]
			overlaps := false
			for _, k := range keys {
				if k.Base < r.end && r.base < k.End() {
					overlaps = true
				}
			}
			if !overlaps {
				k := IndexEntry{Base: r.base, Records: r.end - r.base, Object: "key"}
				keys[k.Base] = k
				pc.insertKey(k)
			}
		default: // delete a key entry
			for b := range keys {
				delete(keys, b)
				pc.deleteKey(b)
				break
			}
		}
		check(step)
	}
	if cap(pc.recs) > 4*max(len(pc.recs), 64) {
		t.Fatalf("recs hold %d entries in an array of %d", len(pc.recs), cap(pc.recs))
	}
}

// BenchmarkCacheEntriesTail measures what a tailing consumer's poll asks
// of the index for each partition: the entries from an offset in the last
// block (or past it), in a cache holding live records of every partition
// of a 1,000-partition topic. One op is one Entries call per partition.
//
//	go test ./metadata -run '^$' -bench CacheEntriesTail -count 5
func BenchmarkCacheEntriesTail(b *testing.B) {
	const parts, live = 1000, 2000
	ca := &Cache{parts: map[topicPartition]*partCache{}}
	for p := range int32(parts) {
		pc := &partCache{changed: make(chan struct{})}
		for i := range int64(live) {
			pc.entries = append(pc.entries, IndexEntry{Topic: "big", Partition: p, Base: 5 * i, Object: "o", Records: 5})
		}
		ca.parts[topicPartition{"big", p}] = pc
	}
	for _, at := range []struct {
		name   string
		offset int64
	}{{"in-last-block", 5*live - 3}, {"past-the-end", 5 * live}} {
		b.Run(at.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for p := range int32(parts) {
					_ = ca.Entries("big", p, at.offset, 16)
				}
			}
		})
	}
}

// Entries answers from the last blocks without a search as a search
// would: every offset of a partition's index (a compacted span among
// them), before it and past it, against a scan.
func TestEntriesFromTheTail(t *testing.T) {
	for n := range 5 {
		pc := &partCache{changed: make(chan struct{})}
		base := int64(10)
		for i := range n {
			e := IndexEntry{Topic: "t", Base: base, Object: fmt.Sprint(i), Records: 3}
			if i == 1 {
				e.Span = 7 // a compacted range with gaps
			}
			pc.entries = append(pc.entries, e)
			base = e.End()
		}
		ca := &Cache{parts: map[topicPartition]*partCache{{"t", 0}: pc}}
		for offset := int64(0); offset <= base+2; offset++ {
			var want []IndexEntry
			for _, e := range pc.entries {
				if e.End() > offset {
					want = append(want, e)
				}
			}
			got := ca.Entries("t", 0, offset, 0)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("%d entries, offset %d: got %v, want %v", n, offset, got, want)
			}
			if lim := ca.Entries("t", 0, offset, 1); len(want) > 0 && (len(lim) != 1 || lim[0] != want[0]) {
				t.Fatalf("%d entries, offset %d, limit 1: got %v", n, offset, lim)
			}
		}
	}
}
