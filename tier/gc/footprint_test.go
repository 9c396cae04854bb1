package gc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/gc"
)

// BenchmarkFootprint measures what storage Varve keeps per GiB ingested:
// objects in the bucket, etcd keys and etcd database bytes, after N MiB and
// after 10×N MiB more, each before and after etcd revision compaction plus
// defragmentation. "forever" keeps every record; "retention" trims each
// partition to retention_bytes and collects the orphans, so the footprint
// stays flat as data grows. N is $VARVE_FOOTPRINT_MIB (default 16).
//
//	go test -run '^$' -bench Footprint -benchtime 1x ./tier/gc/
func BenchmarkFootprint(b *testing.B) {
	mib := 16
	if v := os.Getenv("VARVE_FOOTPRINT_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("VARVE_FOOTPRINT_MIB=%q: want a positive number of MiB", v)
		}
		mib = n
	}
	for _, variant := range []struct {
		name string
		cfg  *varvev1.TopicConfig
	}{
		{"forever", &varvev1.TopicConfig{RetentionMs: -1}},
		{"retention", &varvev1.TopicConfig{RetentionMs: -1, RetentionBytes: int64(mib) << 20 / footprintPartitions}},
	} {
		b.Run(variant.name, func(b *testing.B) {
			for range b.N {
				footprint(b, mib, variant.cfg)
			}
		})
	}
}

const footprintPartitions = 16

func footprint(b *testing.B, mib int, cfg *varvev1.TopicConfig) {
	ctx := context.Background()
	etcd := testenv.StartEtcd(b)
	meta, err := metadata.Connect(ctx, metadata.Config{Endpoints: etcd})
	if err != nil {
		b.Fatal(err)
	}
	defer meta.Close()
	fs, err := tier.NewFS(filepath.Join(b.TempDir(), "objects"))
	if err != nil {
		b.Fatal(err)
	}
	ncfg := node.DefaultConfig()
	ncfg.Roles = []string{node.RoleIngest}
	ncfg.Listen = "127.0.0.1:0"
	ncfg.EtcdEndpoints = etcd
	ncfg.Store = "fs:/unused"
	n, err := node.New(ctx, ncfg, node.Options{Store: fs})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	c := sdk.New(n.Addr())
	defer c.Close()
	if _, err := c.CreateTopic(ctx, "fp", footprintPartitions, cfg); err != nil {
		b.Fatal(err)
	}
	clk := &clock{}
	j, err := gc.New(gc.Config{NodeID: "bench", Grace: time.Minute, Now: clk.Now}, fs, meta, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	trim := cfg.RetentionBytes > 0

	var ingested int64
	b.ResetTimer()
	for step, size := range []int{mib, 10 * mib} {
		ingested += produceMiB(b, c, size)
		if trim {
			if _, err := j.Retention(ctx); err != nil {
				b.Fatal(err)
			}
			// Two passes a grace period apart collect the dropped objects.
			if _, err := j.CollectOrphans(ctx); err != nil {
				b.Fatal(err)
			}
			clk.Advance(time.Minute + time.Second)
			if _, err := j.CollectOrphans(ctx); err != nil {
				b.Fatal(err)
			}
		}
		objects, objBytes := countObjects(b, fs)
		before, err := meta.StorageStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := meta.CompactHistory(ctx, before.Revision); err != nil {
			b.Fatal(err)
		}
		if err := meta.Defragment(ctx); err != nil {
			b.Fatal(err)
		}
		after, err := meta.StorageStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		gib := float64(ingested) / (1 << 30)
		name := fmt.Sprintf("step%d", step+1)
		b.Logf("%s: ingested %.0f MiB: %d objects (%.1f MiB); etcd %d keys, db %d B (in use %d) before compaction, %d keys, db %d B (in use %d) after compaction+defrag; per GiB: %.0f objects, %.0f keys, %.0f db B before, %.0f db B after",
			name, float64(ingested)/(1<<20), objects, float64(objBytes)/(1<<20),
			before.Keys, before.DBSize, before.DBSizeInUse, after.Keys, after.DBSize, after.DBSizeInUse,
			float64(objects)/gib, float64(after.Keys)/gib, float64(before.DBSize)/gib, float64(after.DBSize)/gib)
		b.ReportMetric(float64(objects)/gib, name+"-objects/GiB")
		b.ReportMetric(float64(after.Keys)/gib, name+"-etcd-keys/GiB")
		b.ReportMetric(float64(before.DBSize)/gib, name+"-etcd-db-B-uncompacted/GiB")
		b.ReportMetric(float64(after.DBSize)/gib, name+"-etcd-db-B/GiB")
		b.ReportMetric(float64(after.Keys), name+"-etcd-keys")
		b.ReportMetric(float64(after.DBSize), name+"-etcd-db-B")
		b.ReportMetric(float64(objects), name+"-objects")
		// COMPACTION SPOT: when tier/compact lands, run one compaction pass
		// here (and collect its replaced objects) to report the footprint
		// with L0→L1 compaction as a third variant.
	}
}

// produceMiB produces about size MiB of 1 KiB incompressible records
// spread over every partition, from 4 concurrent producers, and returns
// the bytes of values acknowledged.
func produceMiB(b *testing.B, c *sdk.Client, size int) int64 {
	const recSize, perReq, workers = 1024, 256, 4
	total := size << 20 / (recSize * perReq)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var acked int64
	reqs := make(chan struct{}, total)
	for range total {
		reqs <- struct{}{}
	}
	close(reqs)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			recs := make([]sdk.Record, perReq)
			for range reqs {
				for i := range recs {
					v := make([]byte, recSize)
					for k := 0; k < recSize; k += 8 {
						u := rng.Uint64()
						for s := range 8 {
							v[k+s] = byte(u >> (8 * s))
						}
					}
					recs[i] = sdk.Record{Partition: int32(i % footprintPartitions), Value: v}
				}
				if _, err := c.Produce(context.Background(), "fp", recs); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				acked += recSize * perReq
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return acked
}

func countObjects(b *testing.B, s tier.Store) (int, int64) {
	n, size := 0, int64(0)
	if err := s.List(context.Background(), "", func(o tier.ObjectInfo) error {
		n++
		size += o.Size
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return n, size
}
