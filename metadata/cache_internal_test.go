package metadata

import (
	"testing"

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
