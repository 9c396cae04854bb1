package sequencer

import (
	"context"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

// TestRestartReclaimsTerm: a leader killed without resigning (kill -9:
// its etcd client closed, its election lease left to run out) and started
// again with the same id — a node restarted on its address — leads again
// at once instead of after the dead run's lease, and the offsets go on
// densely from what the dead run committed.
func TestRestartReclaimsTerm(t *testing.T) {
	ctx := context.Background()
	eps := testenv.StartEtcd(t)
	meta := dialEtcd(t, eps)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	cl := newCluster(t, meta)
	const ttl = 30 * time.Second // far longer than the wait below
	own := dialEtcd(t, eps)
	first := cl.startWith(own, Config{ID: "a", TTL: ttl})
	waitLeading(t, first)
	c := cl.client()
	commit := func(id string) int64 {
		t.Helper()
		res, err := c.Commit(ctx, id, []metadata.Append{blk("t", 0, 3)})
		if err != nil || res[0].Err != nil {
			t.Fatalf("commit %s: %v %v", id, res, err)
		}
		return res[0].Base
	}
	if base := commit("c1"); base != 0 {
		t.Fatalf("first commit at %d", base)
	}
	own.Close() // kill -9: no resign
	cl.kill("a")
	restarted := time.Now()
	again := cl.startWith(dialEtcd(t, eps), Config{ID: "a", TTL: ttl})
	if !testenv.Eventually(ttl/3, again.Leading) {
		t.Fatalf("the restarted candidate did not lead within %v: it waits for its dead run's %v lease", ttl/3, ttl)
	}
	t.Logf("restarted candidate led after %v", time.Since(restarted).Round(time.Millisecond))
	if base := commit("c2"); base != 3 {
		t.Fatalf("commit after the restart at %d, want 3", base)
	}
}
