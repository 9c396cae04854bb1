package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

// TestFreshBlocksServedFromMemory: a node with the ingest and fetch roles
// caches the blocks it writes once they are stored, before their commit
// makes them visible, so consumers tailing its partitions never read a
// fresh block from the bucket (no GET), however fast they follow.
func TestFreshBlocksServedFromMemory(t *testing.T) {
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	rec := tier.NewRecorder(st)
	n := startNodeWith(t, node.RoleIngest, testenv.StartEtcd(t), rec, func(cfg *node.Config) {
		cfg.Roles = []string{node.RoleIngest, node.RoleFetch, node.RoleSequence}
	})
	const partitions, batches, per = 2, 20, 30
	createTopic(t, newClients(n.Addr()), "fresh", partitions)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, partitions)
	for p := range int32(partitions) {
		go func() { errs <- consume(ctx, newClients(n.Addr()), "fresh", p, 0, batches*per, 1<<20) }()
	}
	produceBatches(t, n, "fresh", partitions, batches, per, 0)
	for range partitions {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if puts := rec.Count(tier.OpPut); puts == 0 {
		t.Fatal("no segment stored")
	}
	if gets := rec.Count(tier.OpGet); gets != 0 {
		t.Fatalf("tailing consumers read %d fresh blocks from the bucket, want 0 (%d PUTs)", gets, rec.Count(tier.OpPut))
	}
}
