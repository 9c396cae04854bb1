package metadata

import (
	"fmt"
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
	ca := &Cache{topics: map[string]Topic{}, parts: map[topicPartition]*partCache{}, revCh: make(chan struct{}), rev: 10}
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
// before (compaction prunes records as fast as they come).
func BenchmarkCacheApplyRecords(b *testing.B) {
	for _, writers := range []int{1, 4} {
		b.Run(fmt.Sprintf("parts=1000/writers=%d", writers), func(b *testing.B) {
			benchApplyRecords(b, 1000, writers)
		})
	}
}

func benchApplyRecords(b *testing.B, parts, writers int) {
	const live = 60
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
	ca := &Cache{withEntries: true, topics: map[string]Topic{"big": {Name: "big", ID: "id1", Partitions: int32(parts)}},
		parts: map[topicPartition]*partCache{}, records: map[uint64][]topicPartition{}, revCh: make(chan struct{})}
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
		event(mvccpb.PUT, n+live)
		event(mvccpb.DELETE, n)
	}
}
