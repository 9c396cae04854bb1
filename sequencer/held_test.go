package sequencer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// heldEnv is a sequencer leader, a topic "idem" of one partition and a
// way to start ingest nodes that commit through it, each with a memory of
// producer states of its own.
type heldEnv struct {
	t      *testing.T
	meta   *metadata.Client
	client *Client
	store  tier.Store
	topics *metadata.Cache
	seq    *Sequencer
}

func newHeldEnv(t *testing.T) *heldEnv {
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "idem", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	s := cl.start(Config{ID: "a"})
	waitLeading(t, s)
	store, err := tier.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	topics, err := meta.NewCache(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topics.Close)
	return &heldEnv{t: t, meta: meta, client: cl.client(), store: store, topics: topics, seq: s}
}

func (e *heldEnv) ingestNode(id string) *ingest.Ingester {
	in, err := ingest.New(ingest.Config{NodeID: id, Linger: time.Millisecond}, e.store, e.client, e.topics, nil, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { in.Close(context.Background()) })
	return in
}

// waitExpired waits until etcd deleted prod (its state TTL ran out).
func (e *heldEnv) waitExpired(prod metadata.Producer) {
	e.t.Helper()
	if !testenv.Eventually(30*time.Second, func() bool {
		v, err := e.meta.ReadProducer(context.Background(), prod.ID, prod.Epoch, true, "idem", []int32{0})
		if err != nil {
			return false
		}
		_, known := v.Epoch()
		return !known
	}) {
		e.t.Fatal("the producer never expired in etcd")
	}
}

func produce(ctx context.Context, in *ingest.Ingester, id int64, epoch, seq int32, n int) ([]ingest.Result, error) {
	recs := make([]ingest.Record, n)
	for i := range recs {
		recs[i] = ingest.Record{Partition: 0, Record: segment.Record{Value: []byte("v")}}
	}
	return in.ProduceIdempotent(ctx, "idem", recs, ingest.Idempotence{ProducerID: id, Epoch: epoch, Sequences: map[int32]int32{0: seq}})
}

// TestHeldIdentityNeverAcksAFencedRetry: a producer's epoch-0 batch is
// committed, then InitProducer fences epoch 0 with epoch 1 while the leader
// still holds epoch 0. The old instance's retry of that batch, sent to
// another ingest node (no states of its own), must be refused as fenced,
// as a read of etcd says — not answered as a duplicate from the leader's
// stale identity without any commit.
func TestHeldIdentityNeverAcksAFencedRetry(t *testing.T) {
	ctx := context.Background()
	e := newHeldEnv(t)
	prod, err := e.client.InitProducer(ctx, 0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := produce(ctx, e.ingestNode("in-1"), prod.ID, prod.Epoch, 0, 2); err != nil {
		t.Fatal(err)
	}
	if p, err := e.client.InitProducer(ctx, prod.ID, time.Hour); err != nil || p.Epoch != prod.Epoch+1 {
		t.Fatalf("InitProducer again: %+v, %v; want epoch %d", p, err, prod.Epoch+1)
	}
	res, err := produce(ctx, e.ingestNode("in-2"), prod.ID, prod.Epoch, 0, 2)
	if !errors.Is(err, metadata.ErrProducerFenced) {
		t.Fatalf("the fenced epoch's retry: %v, %v; want %v", res, err, metadata.ErrProducerFenced)
	}
}

// TestHeldIdentityNeverAcceptsAnExpiredProducer: a producer whose state
// TTL ran out since its last batch (etcd deleted it) is unknown; the
// leader, which cannot see a deletion, must not answer from the identity
// it holds, so the next batch is refused as from an unknown producer, as
// on the direct path.
func TestHeldIdentityNeverAcceptsAnExpiredProducer(t *testing.T) {
	ctx := context.Background()
	e := newHeldEnv(t)
	prod, err := e.client.InitProducer(ctx, 0, 2*time.Second) // the shortest producer_state_ttl
	if err != nil {
		t.Fatal(err)
	}
	if _, err := produce(ctx, e.ingestNode("in-1"), prod.ID, prod.Epoch, 0, 2); err != nil {
		t.Fatal(err)
	}
	e.waitExpired(prod)
	res, err := produce(ctx, e.ingestNode("in-2"), prod.ID, prod.Epoch, 2, 1)
	if !errors.Is(err, metadata.ErrUnknownProducer) {
		t.Fatalf("the expired producer's next batch: %v, %v; want %v", res, err, metadata.ErrUnknownProducer)
	}
}

// TestExpiredProducerRefusedThroughItsOwnNode: as above, but the next
// batch goes to the ingest node that wrote the producer's last one and
// remembers its state, so it reaches the commit without a ReadProducer.
// The leader, whose identity of the producer is seconds old, must read it
// again (no batch of it refreshed its lease within half its TTL) and
// refuse the batch as from an unknown producer, as the direct path does.
func TestExpiredProducerRefusedThroughItsOwnNode(t *testing.T) {
	ctx := context.Background()
	e := newHeldEnv(t)
	prod, err := e.client.InitProducer(ctx, 0, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	in := e.ingestNode("in-1")
	if _, err := produce(ctx, in, prod.ID, prod.Epoch, 0, 2); err != nil {
		t.Fatal(err)
	}
	e.waitExpired(prod)
	res, err := produce(ctx, in, prod.ID, prod.Epoch, 2, 1)
	if !errors.Is(err, metadata.ErrUnknownProducer) {
		t.Fatalf("the expired producer's next batch through the node that remembers it: %v, %v; want %v", res, err, metadata.ErrUnknownProducer)
	}
}
