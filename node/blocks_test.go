package node_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/protobuf/proto"

	"github.com/varve-io/varve/bench"
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

// cluster is an ingest node and fetch nodes on one etcd and one MinIO
// bucket, every node's store recorded by the same Recorder.
type cluster struct {
	endpoints []string
	rec       *tier.Recorder
	ingest    *node.Node
	fetch     []*node.Node
}

func startNodeWith(t testing.TB, role string, endpoints []string, st tier.Store, mutate func(*node.Config)) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Roles = []string{role}
	cfg.EtcdEndpoints = endpoints
	cfg.Store = "s3://unused" // the store is given below
	cfg.Linger = 5 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	n, err := node.New(context.Background(), cfg, node.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	return n
}

// startCluster starts etcd, a MinIO bucket, an ingest node (with the
// sequencer) and fetchNodes fetch nodes, all reading and writing through
// one recorder.
// The ingest node holds none of the objects it wrote (writer_cache_bytes
// off), so
// the fetch nodes read fresh objects through their own tier, as these
// tests measure (TestTailReadsFromAnIngestOnlyWriter has it hold them).
func startCluster(t testing.TB, fetchNodes int) *cluster {
	t.Helper()
	return startClusterWith(t, fetchNodes, func(cfg *node.Config) { cfg.WriterCacheBytes = node.OffBytes })
}

// startClusterWith is startCluster with the ingest node's settings changed
// by mutate (from the defaults: it holds the objects it wrote).
func startClusterWith(t testing.TB, fetchNodes int, mutate func(*node.Config)) *cluster {
	t.Helper()
	m := testenv.MinIO(t)
	bucket := m.NewBucket(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(bucket))
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{endpoints: testenv.StartEtcd(t), rec: tier.NewRecorder(st)}
	c.ingest = startNodeWith(t, node.RoleIngest, c.endpoints, c.rec, func(cfg *node.Config) {
		cfg.Roles = []string{node.RoleIngest, node.RoleSequence} // the sequencer runs with ingest
		if mutate != nil {
			mutate(cfg)
		}
	})
	for i := range fetchNodes {
		c.fetch = append(c.fetch, startNodeWith(t, node.RoleFetch, c.endpoints, c.rec, func(cfg *node.Config) {
			cfg.NodeID = fmt.Sprintf("fetch-%d", i)
		}))
	}
	c.waitMembers(t, c.fetch)
	return c
}

// waitMembers waits until every node in live sees exactly live as the
// fetch nodes.
func (c *cluster) waitMembers(t testing.TB, live []*node.Node) {
	t.Helper()
	if !testenv.Eventually(30*time.Second, func() bool {
		for _, n := range live {
			if len(n.BlockOwners().Peers()) != len(live) {
				return false
			}
		}
		return true
	}) {
		for _, n := range live {
			t.Logf("%s sees %v", n.BlockOwners().Self(), n.BlockOwners().Peers())
		}
		t.Fatalf("the fetch nodes never agreed on %d members", len(live))
	}
}

// produceBatches sends batches of perPartition records to every partition
// of topic, one produce (so one segment object) at a time; the record at
// offset o of partition p has the value "p-o" when from is that
// partition's next offset.
func produceBatches(t testing.TB, n *node.Node, topic string, partitions int32, batches, perPartition int, from int) {
	t.Helper()
	c := newClients(n.Addr())
	for b := range batches {
		req := &varvev1.ProduceRequest{Topic: topic}
		for p := range partitions {
			for i := range perPartition {
				seq := from + b*perPartition + i
				req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: fmt.Appendf(nil, "%d-%d", p, seq)}})
			}
		}
		if _, err := c.produce.Produce(context.Background(), connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
	}
}

// consume reads partition p of topic from offset from up to (excluding)
// to, checking every record, with fetches of about maxBytes.
func consume(ctx context.Context, c clients, topic string, p int32, from, to int64, maxBytes int32) error {
	for off := from; off < to; {
		resp, err := c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: p, Offset: off, MaxBytes: maxBytes, MaxWaitMs: 2000}))
		if err != nil {
			return fmt.Errorf("fetch %s/%d at %d: %w", topic, p, off, err)
		}
		for _, r := range resp.Msg.Records {
			if r.Offset != off || string(r.Value) != fmt.Sprintf("%d-%d", p, off) {
				return fmt.Errorf("fetch %s/%d: got offset %d value %q, want offset %d", topic, p, r.Offset, r.Value, off)
			}
			off++
		}
	}
	return nil
}

// getsPerBlock counts the recorded GETs of each block (object and offset).
func getsPerBlock(rec *tier.Recorder) map[string]int {
	out := map[string]int{}
	for _, c := range rec.Calls() {
		if c.Op == tier.OpGet {
			out[fmt.Sprintf("%s@%d", c.Key, c.Off)]++
		}
	}
	return out
}

func puts(rec *tier.Recorder) int { return rec.Count(tier.OpPut) }

// wholeGets checks that every recorded GET read a whole object, and
// returns how many GETs each object had.
func wholeGets(t testing.TB, rec *tier.Recorder) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, c := range rec.Calls() {
		if c.Op == tier.OpGet {
			if c.Off != 0 || c.Len >= 0 {
				t.Errorf("GET of %s bytes %d+%d: want whole objects only", c.Key, c.Off, c.Len)
			}
			out[c.Key]++
		}
	}
	return out
}

// TestOneGetPerObjectPerCluster: many consumers on three fetch nodes read
// the same partitions, written by a separate ingest node (so nothing is
// cached at flush): the bucket sees exactly one GET per object, of the
// whole object, whose owner serves every block of it.
func TestOneGetPerObjectPerCluster(t *testing.T) {
	c := startCluster(t, 3)
	const partitions, batches, per = 4, 6, 50
	createTopic(t, newClients(c.ingest.Addr()), "shared", partitions)
	produceBatches(t, c.ingest, "shared", partitions, batches, per, 0)
	objects := puts(c.rec)
	if objects != batches {
		t.Fatalf("%d produces made %d objects", batches, objects)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, n := range c.fetch {
		cl := newClients(n.Addr())
		for range 4 { // consumers per node, each reading every partition
			for p := range int32(partitions) {
				wg.Go(func() {
					if err := consume(ctx, cl, "shared", p, 0, batches*per, 300); err != nil {
						errs <- err
					}
				})
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	gets := wholeGets(t, c.rec)
	if len(gets) != objects {
		t.Errorf("%d objects were read from the bucket, want all %d", len(gets), objects)
	}
	for o, n := range gets {
		if n != 1 {
			t.Errorf("object %s: %d GETs, want 1", o, n)
		}
	}
	t.Logf("%d consumers on %d fetch nodes: %d GETs for %d objects of %d blocks", 3*4*partitions, len(c.fetch), c.rec.Count(tier.OpGet), objects, objects*partitions)
}

// TestReadsSurviveAFetchNodeKilled: consumers on two fetch nodes tail
// partitions while the third is shut down mid-read; they see no error and
// every record. Once its lease is gone the survivors agree on the owners
// again, and new objects are read from the bucket once each.
func TestReadsSurviveAFetchNodeKilled(t *testing.T) {
	c := startCluster(t, 3)
	const partitions, per = 3, 20
	const first, second = 10, 10
	createTopic(t, newClients(c.ingest.Addr()), "tail", partitions)
	victim, live := c.fetch[2], c.fetch[:2]
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, n := range live {
		cl := newClients(n.Addr())
		for range 2 {
			for p := range int32(partitions) {
				wg.Go(func() {
					if err := consume(ctx, cl, "tail", p, 0, (first+second)*per, 200); err != nil {
						errs <- err
					}
				})
			}
		}
	}
	// The victim serves consumers too until it dies.
	vctx, vcancel := context.WithCancel(ctx)
	var vwg sync.WaitGroup
	for p := range int32(partitions) {
		vwg.Go(func() { _ = consume(vctx, newClients(victim.Addr()), "tail", p, 0, (first+second)*per, 200) })
	}
	produceBatches(t, c.ingest, "tail", partitions, first, per, 0)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := victim.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	vcancel()
	vwg.Wait()
	// Objects written now are partly owned by the dead node until the
	// survivors learn it is gone.
	produceBatches(t, c.ingest, "tail", partitions, second, per, first*per)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for _, n := range live {
		t.Logf("%s: %s", n.BlockOwners().Self(), cacheMetrics(t, n))
	}
	// The lease of the dead node expires; ownership moves to the two others.
	c.waitMembers(t, live)
	c.rec.Reset()
	produceBatches(t, c.ingest, "tail", partitions, 4, per, (first+second)*per)
	var wg2 sync.WaitGroup
	errs2 := make(chan error, 100)
	for _, n := range live {
		cl := newClients(n.Addr())
		for p := range int32(partitions) {
			for range 3 {
				wg2.Go(func() {
					if err := consume(ctx, cl, "tail", p, (first+second)*per, (first+second+4)*per, 200); err != nil {
						errs2 <- err
					}
				})
			}
		}
	}
	wg2.Wait()
	close(errs2)
	for err := range errs2 {
		t.Error(err)
	}
	gets := wholeGets(t, c.rec)
	if want := puts(c.rec); len(gets) != want {
		t.Errorf("%d new objects read from the bucket, want %d", len(gets), want)
	}
	for o, n := range gets {
		if n != 1 {
			t.Errorf("object %s: %d GETs after the membership settled, want 1", o, n)
		}
	}
}

// TestDiskCacheAcrossRestart: a fetch node restarted on the same cache_dir
// serves the blocks it read before from disk, with no GET. (It read each
// object whole, once, and cached every block of it.)
func TestDiskCacheAcrossRestart(t *testing.T) {
	c := startCluster(t, 0)
	dir := t.TempDir()
	withDisk := func(cfg *node.Config) { cfg.NodeID = "disk"; cfg.CacheDir = dir; cfg.DiskCacheBytes = 64 << 20 }
	createTopic(t, newClients(c.ingest.Addr()), "d", 2)
	produceBatches(t, c.ingest, "d", 2, 3, 30, 0)
	ctx := context.Background()
	read := func(n *node.Node) {
		for p := range int32(2) {
			if err := consume(ctx, newClients(n.Addr()), "d", p, 0, 90, 1<<20); err != nil {
				t.Fatal(err)
			}
		}
	}
	n := startNodeWith(t, node.RoleFetch, c.endpoints, c.rec, withDisk)
	read(n)
	if got := c.rec.Count(tier.OpGet); got != 3 {
		t.Fatalf("first read: %d GETs for 3 objects of 2 blocks", got)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.rec.Reset()
	n = startNodeWith(t, node.RoleFetch, c.endpoints, c.rec, withDisk)
	if got := n.DiskCache().Len(); got != 6 {
		t.Fatalf("restarted node's disk cache has %d blocks, want 6", got)
	}
	read(n)
	if got := c.rec.Count(tier.OpGet); got != 0 {
		t.Fatalf("read after a restart: %d GETs, want 0", got)
	}
}

// TestBlockServiceRejectsBadRanges: the internal service answers malformed
// requests with INVALID_ARGUMENT and missing blocks with DATA_LOSS.
func TestBlockServiceRejectsBadRanges(t *testing.T) {
	c := startCluster(t, 1)
	cl := newBlockClient(c.fetch[0].Addr())
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  *varvev1.GetBlockRequest
		code connect.Code
	}{
		{"no object", &varvev1.GetBlockRequest{Offset: 8, Length: 100}, connect.CodeInvalidArgument},
		{"negative offset", &varvev1.GetBlockRequest{Object: "x", Offset: -1, Length: 100}, connect.CodeInvalidArgument},
		{"short", &varvev1.GetBlockRequest{Object: "x", Offset: 8, Length: 3}, connect.CodeInvalidArgument},
		{"huge", &varvev1.GetBlockRequest{Object: "x", Offset: 8, Length: 1 << 40}, connect.CodeInvalidArgument},
		{"missing object", &varvev1.GetBlockRequest{Object: "nope.vseg", Offset: 8, Length: 100}, connect.CodeDataLoss},
	} {
		_, err := cl.GetBlock(ctx, connect.NewRequest(tc.req))
		if connect.CodeOf(err) != tc.code {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.code)
		}
		var ce *connect.Error
		if errors.As(err, &ce) && ce.Message() == "" {
			t.Errorf("%s: error without a message", tc.name)
		}
	}
}

func newBlockClient(addr string) varvev1connect.BlockServiceClient {
	return varvev1connect.NewBlockServiceClient(http.DefaultClient, addr)
}

var otelScope = regexp.MustCompile(`otel_scope_[a-z_]+="[^"]*",?`)

// cacheMetrics returns the varve_cache_* lines of a node's /metrics page.
func cacheMetrics(t testing.TB, n *node.Node) string {
	t.Helper()
	page := metricsPage(t, n.Addr())
	var out []string
	for line := range strings.Lines(string(page)) {
		if strings.HasPrefix(line, "varve_cache_") {
			out = append(out, otelScope.ReplaceAllString(strings.TrimSpace(line), ""))
		}
	}
	return strings.Join(out, "; ")
}

// benchTopic writes batches produces of n JSON events to each of
// partitions partitions of a new topic and returns the index entries of the
// blocks, read from etcd.
func benchTopic(b *testing.B, c *cluster, topic string, partitions int32, batches, n int) []metadata.IndexEntry {
	b.Helper()
	ctx := context.Background()
	cl := newClients(c.ingest.Addr())
	if _, err := cl.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: topic, Partitions: partitions})); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range batches {
		req := &varvev1.ProduceRequest{Topic: topic}
		for p := range partitions {
			for j := range n {
				req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: bench.JSONEvent(r, j)}})
			}
		}
		if _, err := cl.produce.Produce(ctx, connect.NewRequest(req)); err != nil {
			b.Fatal(err)
		}
	}
	var out []metadata.IndexEntry
	for p := range partitions {
		for off := int64(0); off < int64(batches*n); {
			e, _, found, _, err := c.ingest.Meta().LookupIndex(ctx, topic, p, off)
			if err != nil || !found {
				b.Fatalf("look up %s/%d@%d: %v %v", topic, p, off, found, err)
			}
			out = append(out, e)
			off = e.End()
		}
	}
	return out
}

// BenchmarkCacheFetch measures the latency of a fetch of 100 records (about
// 40 KB) from a block of 1000 served by each tier: memory (hit), disk, the
// block's owner (peer) and MinIO (miss: one ranged GET per fetch). Figures:
// p50-ms and p99-ms.
func BenchmarkCacheFetch(b *testing.B) {
	for _, tr := range []string{"memory", "disk", "peer", "bucket"} {
		b.Run("tier="+tr, func(b *testing.B) {
			c := startCluster(b, 0)
			mutate := func(cfg *node.Config) {
				cfg.NodeID = "reader"
				switch tr {
				case "disk":
					cfg.CacheBytes = 1 // nothing stays in memory
					cfg.CacheDir, cfg.DiskCacheBytes = b.TempDir(), 1<<30
				case "peer", "bucket":
					cfg.CacheBytes = 1
				}
			}
			reader := startNodeWith(b, node.RoleFetch, c.endpoints, c.rec, mutate)
			live := []*node.Node{reader}
			if tr == "peer" {
				live = append(live, startNodeWith(b, node.RoleFetch, c.endpoints, c.rec, func(cfg *node.Config) { cfg.NodeID = "owner" }))
			}
			c.waitMembers(b, live)
			entries := benchTopic(b, c, "lat", 1, 16, 1000)
			// The blocks the tier serves: for peer, those the other node owns.
			var bases []int64
			for _, e := range entries {
				writer, _ := tier.FlushKeyNode(e.Object)
				if p, remote := reader.BlockOwners().ObjectOwner(e.Object, writer); tr != "peer" || (remote && p.ID == "owner") {
					bases = append(bases, e.Base)
				}
			}
			if len(bases) == 0 {
				b.Fatal("no block for this tier")
			}
			cl := newClients(reader.Addr())
			ctx := context.Background()
			fetch := func(i int) {
				off := bases[i%len(bases)] + int64(i*37%800)
				resp, err := cl.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "lat", Partition: 0, Offset: off, MaxBytes: 100 * 400}))
				if err != nil || len(resp.Msg.Records) == 0 {
					b.Fatal(err)
				}
			}
			for i := range bases { // warm every tier above the bucket
				fetch(i)
			}
			c.rec.Reset()
			hist := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
			b.ResetTimer()
			for i := range b.N {
				t0 := time.Now()
				fetch(i)
				_ = hist.RecordValue(time.Since(t0).Microseconds())
			}
			b.StopTimer()
			b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "p50-ms")
			b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "p99-ms")
			b.ReportMetric(float64(c.rec.Count(tier.OpGet))/float64(b.N), "GETs/fetch")
		})
	}
}

// BenchmarkCacheGetsPerGiB: 4 consumers on each of 1 or 3 fetch nodes read
// 8 partitions of 8 MiB-ish each (JSON events, written by a separate ingest
// node). Figures: bucket GETs per GiB delivered to consumers, GETs per
// block (1 per object of 8 blocks, 0.125, is the target), and the cache hit ratio (reads served without
// the bucket). Run with -benchtime=1x: each iteration writes a new topic.
func BenchmarkCacheGetsPerGiB(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("fetch-nodes=%d", nodes), func(b *testing.B) {
			c := startCluster(b, nodes)
			const partitions, batches, per = 8, 20, 1000
			var gets, blocks int
			var delivered int64
			for i := range b.N {
				topic := fmt.Sprintf("g%d", i)
				entries := benchTopic(b, c, topic, partitions, batches, per)
				blocks += len(entries)
				c.rec.Reset()
				b.StartTimer()
				var wg sync.WaitGroup
				var mu sync.Mutex
				for _, n := range c.fetch {
					cl := newClients(n.Addr())
					for range 4 {
						for p := range int32(partitions) {
							wg.Go(func() {
								var got int64
								for off := int64(0); off < batches*per; {
									resp, err := cl.fetch.Fetch(context.Background(), connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: p, Offset: off, MaxBytes: 256 << 10}))
									if err != nil {
										b.Error(err)
										return
									}
									for _, r := range resp.Msg.Records {
										got += int64(len(r.Value))
									}
									off = resp.Msg.NextOffset
								}
								mu.Lock()
								delivered += got
								mu.Unlock()
							})
						}
					}
				}
				wg.Wait()
				b.StopTimer()
				gets += c.rec.Count(tier.OpGet)
			}
			var hits, misses float64
			for _, n := range c.fetch {
				h, m := cacheHitMiss(b, n)
				hits, misses = hits+h, misses+m
			}
			b.ReportMetric(float64(gets)/(float64(delivered)/(1<<30)), "GETs/GiB")
			b.ReportMetric(float64(gets)/float64(blocks), "GETs/block")
			b.ReportMetric(hits/(hits+misses), "hit-ratio")
			b.ReportMetric(float64(delivered)/float64(b.N)/(1<<20), "MiB-read/op")
		})
	}
}

var cacheCounter = regexp.MustCompile(`(?m)^varve_fetch_cache_(hits|misses)_total(?:\{[^}]*\})? ([0-9.e+]+)$`)

// cacheHitMiss reads a node's block reads served without and with the
// bucket.
func cacheHitMiss(t testing.TB, n *node.Node) (hits, misses float64) {
	t.Helper()
	page := metricsPage(t, n.Addr())
	for _, m := range cacheCounter.FindAllStringSubmatch(string(page), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "hits" {
			hits += v
		} else {
			misses += v
		}
	}
	return hits, misses
}
