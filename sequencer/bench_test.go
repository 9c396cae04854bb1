package sequencer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/metadata"
)

// BenchmarkCommit compares the direct commit path with the sequencer:
// N committers (ingest nodes) each commit flushes (in process, or over
// the SequencerService on loopback HTTP) holding one block on
// every one of 1,000 partitions, over a real embedded etcd. It reports
// commits/s, etcd write transactions/s (revision delta) and transactions
// per commit. One op is one flush.
//
//	go test -run '^$' -bench BenchmarkCommit -benchtime 40x ./sequencer/
func BenchmarkCommit(b *testing.B) {
	const partitions = 1000
	for _, impl := range []string{"direct", "sequencer", "sequencer-rpc"} {
		for _, n := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("%s/committers=%d", impl, n), func(b *testing.B) {
				ctx := context.Background()
				meta := connectEtcd(b)
				if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "big", Partitions: partitions}); err != nil {
					b.Fatal(err)
				}
				var c ingest.Committer = meta
				if impl != "direct" {
					cl := newCluster(b, meta)
					cl.rpc = impl == "sequencer-rpc"
					waitLeading(b, cl.start(Config{ID: "a"}))
					c = cl.client()
				}
				parts := allParts(partitions)
				rev0 := revision(b, meta)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for w := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := w; i < b.N; i += n {
							id := fmt.Sprintf("objects/%d-%d.vseg", w, i)
							if _, err := c.Commit(ctx, id, flush("big", id, parts, func(int32) int64 { return 10 })); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				el := time.Since(start).Seconds()
				b.StopTimer()
				txns := float64(revision(b, meta) - rev0)
				b.ReportMetric(float64(b.N)/el, "commits/s")
				b.ReportMetric(txns/el, "etcd-txns/s")
				b.ReportMetric(txns/float64(b.N), "txns/commit")
			})
		}
	}
}
