package sequencer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/varve-io/varve/metadata"
)

// TestClientKeepsTheLeader: a client reads the leader's id from etcd once
// for any number of commits, and again only when the leader it kept
// refuses (it stopped leading); every commit is answered.
func TestClientKeepsTheLeader(t *testing.T) {
	ctx := context.Background()
	meta := connectEtcd(t)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	cl.rpc = true
	a := cl.start(Config{ID: "a"})
	waitLeading(t, a)
	c := cl.client()
	var reads atomic.Int64
	read := c.leaderOf
	c.leaderOf = func(ctx context.Context) (string, error) {
		reads.Add(1)
		return read(ctx)
	}
	commit := func(i int) {
		t.Helper()
		id := fmt.Sprintf("objects/c%d.vseg", i)
		res, err := c.Commit(ctx, id, flush("t", id, []int32{0, 1, 2, 3}, func(int32) int64 { return 1 }))
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("commit %d: %v", i, r.Err)
			}
		}
	}
	for i := range 50 {
		commit(i)
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("50 commits read the leader %d times, want once", n)
	}
	// a stops leading (its server still answers, refusing); b takes over.
	cl.kill("a")
	b := cl.start(Config{ID: "b"})
	waitLeading(t, b)
	for i := 50; i < 100; i++ {
		commit(i)
	}
	if n := reads.Load(); n < 2 {
		t.Fatalf("the leader was read %d times across a failover, want again after a refused", n)
	}
	t.Logf("100 commits across a failover: %d leader reads", reads.Load())
}
