package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/protobuf/proto"

	"github.com/varve-io/varve/bench"
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

func benchNode(b *testing.B, store string, linger time.Duration, cacheBytes int64) (*node.Node, tier.Store) {
	b.Helper()
	ctx := context.Background()
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = testenv.StartEtcd(b)
	cfg.Linger = linger
	if cacheBytes > 0 {
		cfg.CacheBytes = cacheBytes
	}
	var st tier.Store
	var err error
	switch store {
	case "fs":
		dir := filepath.Join(b.TempDir(), "objects")
		cfg.Store = "fs:" + dir
		st, err = tier.NewFS(dir)
	case "minio":
		m := testenv.MinIO(b)
		cfg.Store = "s3://" + m.NewBucket(b)
		st, err = tier.NewS3(ctx, m.S3Config(cfg.Store[len("s3://"):]))
	}
	if err != nil {
		b.Fatal(err)
	}
	n, err := node.New(ctx, cfg, node.Options{Store: st})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Shutdown(context.Background()) })
	return n, st
}

// BenchmarkProduce measures produce throughput and ack latency (stored in
// the bucket and committed in etcd) through the Connect API with 16
// concurrent producers sending batches of 100 JSON events to 8 partitions.
func BenchmarkProduce(b *testing.B) {
	for _, store := range []string{"fs", "minio"} {
		for _, linger := range []time.Duration{5 * time.Millisecond, 100 * time.Millisecond} {
			b.Run(fmt.Sprintf("store=%s/linger=%v", store, linger), func(b *testing.B) {
				n, _ := benchNode(b, store, linger, 0)
				c := newClients(n.Addr())
				ctx := context.Background()
				if _, err := c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "bench", Partitions: 8})); err != nil {
					b.Fatal(err)
				}
				const producers, batch = 16, 100
				r := rand.New(rand.NewPCG(1, 2))
				reqs := make([]*varvev1.ProduceRequest, 64)
				var reqBytes int64
				for i := range reqs {
					req := &varvev1.ProduceRequest{Topic: "bench"}
					for j := range batch {
						v := bench.JSONEvent(r, j)
						reqBytes += int64(len(v))
						req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(-1), Record: &varvev1.Record{Key: fmt.Appendf(nil, "user-%d", r.IntN(10000)), Value: v}})
					}
					reqs[i] = req
				}
				avgReq := reqBytes / int64(len(reqs))
				hist := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
				var mu sync.Mutex
				var next int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for w := range producers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						local := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
						for {
							mu.Lock()
							i := next
							next++
							mu.Unlock()
							if i >= int64(b.N) {
								break
							}
							t0 := time.Now()
							if _, err := c.produce.Produce(ctx, connect.NewRequest(reqs[(int(i)+w)%len(reqs)])); err != nil {
								b.Error(err)
								return
							}
							_ = local.RecordValue(time.Since(t0).Microseconds())
						}
						mu.Lock()
						hist.Merge(local)
						mu.Unlock()
					}()
				}
				wg.Wait()
				el := time.Since(start).Seconds()
				b.StopTimer()
				b.SetBytes(avgReq)
				b.ReportMetric(float64(b.N*batch)/el, "records/s")
				b.ReportMetric(float64(int64(b.N)*avgReq)/el/(1<<20), "MiB/s")
				b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "p50-ms")
				b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "p99-ms")
			})
		}
	}
}

// BenchmarkFetchRecent measures fetching 100 records of a block written a
// moment ago: from the node that wrote it (the block is in its cache) and
// from a fetch-only node without a cache (one ranged GET per fetch).
func BenchmarkFetchRecent(b *testing.B) {
	for _, store := range []string{"fs", "minio"} {
		for _, cached := range []bool{true, false} {
			b.Run(fmt.Sprintf("store=%s/cached=%v", store, cached), func(b *testing.B) {
				n, st := benchNode(b, store, 5*time.Millisecond, 0)
				ctx := context.Background()
				c := newClients(n.Addr())
				if _, err := c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "f", Partitions: 1})); err != nil {
					b.Fatal(err)
				}
				r := rand.New(rand.NewPCG(3, 4))
				req := &varvev1.ProduceRequest{Topic: "f"}
				for j := range 1000 {
					req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(0), Record: &varvev1.Record{Value: bench.JSONEvent(r, j)}})
				}
				if _, err := c.produce.Produce(ctx, connect.NewRequest(req)); err != nil {
					b.Fatal(err)
				}
				reader := c
				if !cached {
					cfg := node.DefaultConfig()
					cfg.Listen = "127.0.0.1:0"
					cfg.Roles = []string{node.RoleFetch}
					cfg.EtcdEndpoints = n.Meta().Endpoints()
					cfg.Store = "fs:unused"
					cfg.CacheBytes = 1 // nothing fits: every fetch reads the bucket
					fn, err := node.New(ctx, cfg, node.Options{Store: st})
					if err != nil {
						b.Fatal(err)
					}
					defer fn.Shutdown(ctx)
					reader = newClients(fn.Addr())
				}
				hist := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
				b.ResetTimer()
				for i := range b.N {
					t0 := time.Now()
					resp, err := reader.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "f", Partition: 0, Offset: int64(i % 900), MaxBytes: 100 * 400}))
					if err != nil || len(resp.Msg.Records) == 0 {
						b.Fatal(err)
					}
					_ = hist.RecordValue(time.Since(t0).Microseconds())
				}
				b.StopTimer()
				b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "p50-ms")
				b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "p99-ms")
			})
		}
	}
}

// BenchmarkProduceIdempotence compares produce throughput with idempotence
// off and on, on one node (fs store, linger 5ms): 16 concurrent producers,
// each waiting for its answer, send batches of 100 JSON events spread over
// 8 partitions. With idempotence every producer has its own producer id
// and numbers its batches per partition; the node checks each batch
// before buffering it (against the states its own commits wrote, reading
// etcd only for what it does not remember) and the commit transaction
// checks and advances the producers' state. Compare a build from before a
// change with -test.run '^$' -test.bench BenchmarkProduceIdempotence
// -test.benchtime 2000x, old and new binaries alternately.
func BenchmarkProduceIdempotence(b *testing.B) {
	n, _ := benchNode(b, "fs", 5*time.Millisecond, 0)
	c := newClients(n.Addr())
	ctx := context.Background()
	if _, err := c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "bench", Partitions: 8})); err != nil {
		b.Fatal(err)
	}
	const producers, batch, partitions = 16, 100, 8
	r := rand.New(rand.NewPCG(1, 2))
	templates := make([][]*varvev1.ProduceRecord, 64)
	var reqBytes int64
	for i := range templates {
		for j := range batch {
			v := bench.JSONEvent(r, j)
			reqBytes += int64(len(v))
			templates[i] = append(templates[i], &varvev1.ProduceRecord{Partition: proto.Int32(int32(j % partitions)), Record: &varvev1.Record{Key: fmt.Appendf(nil, "user-%d", r.IntN(10000)), Value: v}})
		}
	}
	avgReq := reqBytes / int64(len(templates))
	for _, idem := range []bool{false, true} {
		b.Run(fmt.Sprintf("idempotence=%v", idem), func(b *testing.B) {
			ids := make([]int64, producers)
			if idem {
				for w := range ids {
					res, err := c.produce.InitProducer(ctx, connect.NewRequest(&varvev1.InitProducerRequest{}))
					if err != nil {
						b.Fatal(err)
					}
					ids[w] = res.Msg.GetProducerId()
				}
			}
			hist := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
			var mu sync.Mutex
			var next int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for w := range producers {
				wg.Go(func() {
					local := hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)
					seqs := make([]int32, partitions)
					for {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						if i >= int64(b.N) {
							break
						}
						req := &varvev1.ProduceRequest{Topic: "bench", Records: templates[(int(i)+w)%len(templates)]}
						if idem {
							req.ProducerId = ids[w]
							var counts [partitions]int32
							for _, r := range req.Records {
								counts[r.GetPartition()]++
							}
							for p := range int32(partitions) {
								req.Sequences = append(req.Sequences, &varvev1.PartitionSequence{Partition: p, FirstSequence: seqs[p]})
								seqs[p] += counts[p]
							}
						}
						t0 := time.Now()
						if _, err := c.produce.Produce(ctx, connect.NewRequest(req)); err != nil {
							b.Error(err)
							return
						}
						_ = local.RecordValue(time.Since(t0).Microseconds())
					}
					mu.Lock()
					hist.Merge(local)
					mu.Unlock()
				})
			}
			wg.Wait()
			el := time.Since(start).Seconds()
			b.StopTimer()
			b.SetBytes(avgReq)
			b.ReportMetric(float64(b.N*batch)/el, "records/s")
			b.ReportMetric(float64(int64(b.N)*avgReq)/el/(1<<20), "MiB/s")
			b.ReportMetric(float64(hist.ValueAtQuantile(50))/1000, "p50-ms")
			b.ReportMetric(float64(hist.ValueAtQuantile(99))/1000, "p99-ms")
		})
	}
}
