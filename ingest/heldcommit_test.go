package ingest_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/sequencer/seqtest"
)

// landedCommitter wraps the real Committer; while armed, a Commit applies
// in etcd, reports it on landed and returns only when release is closed:
// the state a commit of many partitions is in while its first chunks are
// committed and its last ones still run.
type landedCommitter struct {
	ingest.Committer
	mu      sync.Mutex
	armed   bool
	landed  chan struct{}
	release chan struct{}
}

func (c *landedCommitter) Commit(ctx context.Context, id string, appends []metadata.Append) ([]metadata.AppendResult, error) {
	res, err := c.Committer.Commit(ctx, id, appends)
	c.mu.Lock()
	armed := c.armed
	c.armed = false
	c.mu.Unlock()
	if armed {
		close(c.landed)
		<-c.release
	}
	return res, err
}

// TestRetryWhileLaterBatchesLand: a producer's batch 0 committed; its
// batches 1-4 are held by the node, whose commit of them has landed (in
// etcd, or in the sequencer's state) but not returned yet; the retry of
// batch 0 (its first attempt timed out on the client) is a duplicate,
// answered with its original offset, on both commit paths. The node used
// to count batches 1-4 twice (as read, and as held), which pushed batch 0
// out of the recent batches it can answer and refused the retry as out of
// order ("expected sequence 5, got 0"; issue 14's scale bench).
func TestRetryWhileLaterBatchesLand(t *testing.T) {
	for _, path := range []string{"direct", "sequencer"} {
		t.Run(path, func(t *testing.T) { testRetryWhileLaterBatchesLand(t, path) })
	}
}

func testRetryWhileLaterBatchesLand(t *testing.T, path string) {
	ctx := context.Background()
	meta, fs, cache := metaTopicFS(t, 2)
	var committer ingest.Committer = meta
	if path == "sequencer" {
		_, committer = seqtest.Start(t, meta, sequencer.Config{ID: "s"})
	}
	com := &landedCommitter{Committer: committer, landed: make(chan struct{}), release: make(chan struct{})}
	in, err := ingest.New(ingest.Config{NodeID: "a", Linger: time.Hour}, fs, com, cache, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	p, err := in.InitProducer(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	idem := func(seq int32) ingest.Idempotence {
		return ingest.Idempotence{ProducerID: p.ID, Epoch: p.Epoch, Sequences: map[int32]int32{0: seq}}
	}

	b0 := goProduce(in, recs(0, "r0"), idem(0))
	if !testenv.Eventually(10*time.Second, func() bool { _, n := in.Pending(); return n == 1 }) {
		t.Fatal("batch 0 never buffered")
	}
	if err := in.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-b0; r.err != nil || r.res[0].Offset != 0 {
		t.Fatalf("batch 0: %v %v", r.res, r.err)
	}

	// Batches 1-4, held in order in one file.
	var later []chan produced
	for seq := int32(1); seq <= 4; seq++ {
		later = append(later, goProduce(in, recs(0, "r"+string(rune('0'+seq))), idem(seq)))
		if !testenv.Eventually(10*time.Second, func() bool { _, n := in.Pending(); return n == int64(seq) }) {
			t.Fatalf("batch %d never buffered", seq)
		}
	}
	com.mu.Lock()
	com.armed = true
	com.mu.Unlock()
	flushed := make(chan error, 1)
	go func() { flushed <- in.Flush(ctx) }()
	select {
	case <-com.landed:
	case <-time.After(30 * time.Second):
		t.Fatal("the commit of batches 1-4 never landed")
	}

	// The retry of batch 0 while that commit has landed but not returned.
	res, err := in.ProduceIdempotent(ctx, "t", recs(0, "r0"), idem(0))
	close(com.release)
	if err != nil {
		t.Fatalf("retry of batch 0 while batches 1-4 land: %v", err)
	}
	if res[0].Offset != 0 {
		t.Fatalf("retry of batch 0 answered offset %d, want its original 0", res[0].Offset)
	}
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, ch := range later {
		r := <-ch
		if r.err != nil {
			t.Fatal(r.err)
		}
		got = append(got, r.res[0].Offset)
	}
	if !slices.Equal(got, []int64{1, 2, 3, 4}) {
		t.Fatalf("batches 1-4 at offsets %v", got)
	}
	// Nothing was stored twice: the next batch lands at offset 5.
	b5 := goProduce(in, recs(0, "r5"), idem(5))
	if !testenv.Eventually(10*time.Second, func() bool { _, n := in.Pending(); return n == 1 }) {
		t.Fatal("batch 5 never buffered")
	}
	if err := in.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-b5; r.err != nil || r.res[0].Offset != 5 {
		t.Fatalf("batch 5: %v %v, want offset 5", r.res, r.err)
	}
}
