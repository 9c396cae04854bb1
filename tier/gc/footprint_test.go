package gc_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/compact"
	"github.com/varve-io/varve/tier/gc"
)

// BenchmarkFootprint measures what storage Varve keeps per GiB ingested:
// objects in the bucket, etcd keys, live etcd bytes (keys and values) and
// etcd database bytes, after N MiB and after 10×N MiB more, each before and
// after etcd revision compaction plus defragmentation.
//
//   - "forever" keeps every record, uncompacted: one index key per
//     partition per flush, one object per flush.
//   - "retention" trims each partition to retention_bytes and collects the
//     orphans, so the footprint stays flat as data grows.
//   - "compaction" keeps every record but runs L0→L1(→L2) compaction
//     (tier/compact, default settings: 128 MiB objects of 8 MiB blocks)
//     after each step, then collects the replaced objects: index keys and
//     objects per GiB stay bounded by the data over the block and target
//     sizes, not by the number of flushes.
//   - "compaction+retention" does both: the whole footprint stays flat.
//
// N is $VARVE_FOOTPRINT_MIB (default 16).
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
	forever := &admin.TopicConfig{Retention: admin.Forever}
	retention := &admin.TopicConfig{Retention: admin.Forever, RetentionBytes: int64(mib) << 20 / footprintPartitions}
	for _, variant := range []struct {
		name    string
		cfg     *admin.TopicConfig
		compact bool
	}{
		{"forever", forever, false},
		{"retention", retention, false},
		{"compaction", forever, true},
		{"compaction+retention", retention, true},
	} {
		b.Run(variant.name, func(b *testing.B) {
			for range b.N {
				footprint(b, mib, variant.cfg, variant.compact)
			}
		})
	}
}

const footprintPartitions = 16

func footprint(b *testing.B, mib int, cfg *admin.TopicConfig, compaction bool) {
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
	ncfg.Roles = []string{node.RoleIngest, node.RoleSequence}
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
	if _, err := admin.NewFromClient(c).CreateTopic(ctx, "fp", footprintPartitions, cfg); err != nil {
		b.Fatal(err)
	}
	clk := &clock{}
	j, err := gc.New(gc.Config{NodeID: "bench", Grace: time.Minute, Now: clk.Now}, fs, meta, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	trim := cfg.RetentionBytes > 0
	var comp *compact.Compactor
	if compaction {
		// The default settings of a node's compact role. CompactPartition
		// plans from a linearizable read of etcd, so the cache is only the
		// constructor's requirement.
		cache, err := meta.NewCache(ctx, true)
		if err != nil {
			b.Fatal(err)
		}
		defer cache.Close()
		comp, err = compact.New(compact.Config{NodeID: "bench"}, fs, meta, cache, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer comp.Close()
	}

	var ingested int64
	b.ResetTimer()
	for step, size := range []int{mib, 10 * mib} {
		ingested += produceMiB(b, c, size)
		name := fmt.Sprintf("step%d", step+1)
		if comp != nil {
			st := compactAll(b, comp, "fp")
			b.Logf("%s: compaction: %d jobs, %d index entries → %d, %.1f MiB read, %.1f MiB written",
				name, st.Jobs, st.EntriesIn, st.EntriesOut, float64(st.BytesRead)/(1<<20), float64(st.BytesWritten)/(1<<20))
		}
		if trim {
			if _, err := j.Retention(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if trim || comp != nil {
			// Two passes a grace period apart collect the objects retention
			// dropped and compaction replaced.
			if _, err := j.CollectOrphans(ctx); err != nil {
				b.Fatal(err)
			}
			clk.Advance(time.Minute + time.Second)
			if _, err := j.CollectOrphans(ctx); err != nil {
				b.Fatal(err)
			}
		}
		objects, objBytes := countObjects(b, fs)
		b.Logf("%s: etcd keys by kind: %s", name, keysByKind(b, etcd))
		live, err := maintenance.New(meta).Footprint(ctx)
		if err != nil {
			b.Fatal(err)
		}
		before, err := maintenance.New(meta).StorageStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := maintenance.New(meta).CompactHistory(ctx, before.Revision); err != nil {
			b.Fatal(err)
		}
		if err := maintenance.New(meta).Defragment(ctx); err != nil {
			b.Fatal(err)
		}
		after, err := maintenance.New(meta).StorageStats(ctx)
		if err != nil {
			b.Fatal(err)
		}
		gib := float64(ingested) / (1 << 30)
		b.Logf("%s: ingested %.0f MiB: %d objects (%.1f MiB); etcd live %d keys, %d B; db %d B (in use %d) before history compaction, %d keys, db %d B (in use %d) after compaction+defrag; per GiB: %.0f objects, %.0f keys, %.0f live B, %.0f db B before, %.0f db B after",
			name, float64(ingested)/(1<<20), objects, float64(objBytes)/(1<<20), live.Keys, live.Bytes,
			before.DBSize, before.DBSizeInUse, after.Keys, after.DBSize, after.DBSizeInUse,
			float64(objects)/gib, float64(after.Keys)/gib, float64(live.Bytes)/gib, float64(before.DBSize)/gib, float64(after.DBSize)/gib)
		b.ReportMetric(float64(objects)/gib, name+"-objects/GiB")
		b.ReportMetric(float64(after.Keys)/gib, name+"-etcd-keys/GiB")
		b.ReportMetric(float64(live.Bytes)/gib, name+"-etcd-live-B/GiB")
		b.ReportMetric(float64(before.DBSize)/gib, name+"-etcd-db-B-uncompacted/GiB")
		b.ReportMetric(float64(after.DBSize)/gib, name+"-etcd-db-B/GiB")
		b.ReportMetric(float64(after.Keys), name+"-etcd-keys")
		b.ReportMetric(float64(after.DBSize), name+"-etcd-db-B")
		b.ReportMetric(float64(objects), name+"-objects")
		b.ReportMetric(float64(live.Bytes), name+"-etcd-live-B")
	}
}

// compactAll compacts every partition of topic until a pass over all of
// them does nothing (L0→L1, then small L1 objects into L2).
func compactAll(b *testing.B, c *compact.Compactor, topic string) compact.Stats {
	var total compact.Stats
	for range 10 {
		var pass compact.Stats
		for p := range int32(footprintPartitions) {
			st, err := c.CompactPartition(context.Background(), topic, p)
			if err != nil {
				b.Fatalf("compact %s/%d: %v", topic, p, err)
			}
			pass.Jobs += st.Jobs
			pass.Conflicts += st.Conflicts
			pass.EntriesIn += st.EntriesIn
			pass.EntriesOut += st.EntriesOut
			pass.BytesRead += st.BytesRead
			pass.BytesWritten += st.BytesWritten
		}
		if pass.Conflicts > 0 {
			b.Fatalf("compaction lost %d swaps with nothing else running", pass.Conflicts)
		}
		if pass.Jobs == 0 {
			return total
		}
		total.Jobs += pass.Jobs
		total.EntriesIn += pass.EntriesIn
		total.EntriesOut += pass.EntriesOut
		total.BytesRead += pass.BytesRead
		total.BytesWritten += pass.BytesWritten
	}
	b.Fatal("compaction never became idle")
	return total
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
					recs[i] = sdk.Record{Partition: int32(i % footprintPartitions), ExplicitPartition: true, Value: v}
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

// keysByKind counts the keys under /varve/ by their first path element
// (index, partitions, guards, …), to show which ones grow with data.
func keysByKind(b *testing.B, endpoints []string) string {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(context.Background(), "/varve/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		b.Fatal(err)
	}
	kinds := map[string]int{}
	for _, kv := range resp.Kvs {
		k, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), "/varve/"), "/")
		kinds[k]++
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		out = append(out, fmt.Sprintf("%s %d", k, kinds[k]))
	}
	return strings.Join(out, ", ")
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
