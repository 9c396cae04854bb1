package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/varve-io/varve/bench"
)

// TestKafkaMinIO runs a tiny workload through the Kafka target: one
// `varve serve` on MinIO with its Kafka listener, franz-go producers and
// consumers. Every record is acknowledged and consumed, the Produce
// requests are counted through franz-go's hooks, and Varve's counters and
// the node's CPU are reported as for the Connect target.
func TestKafkaMinIO(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tg, err := bench.NewTarget(bench.TargetVarveMinIO1Kafka)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name() != bench.TargetVarveMinIO1Kafka {
		t.Fatalf("name %q", tg.Name())
	}
	if err := tg.Start(ctx, bench.Env{VarveBin: varveBin, Dir: t.TempDir(), FlushBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	w := tiny()
	w.Duration, w.Warmup = time.Second, 200*time.Millisecond
	r, err := bench.RunWorkload(ctx, tg, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 0 || r.Records < 300 || r.Consumed < r.Records || r.Ack.Count != r.Records || r.EndToEnd.Count == 0 || r.CatchUpMiB <= 0 {
		t.Fatalf("errors %d (%s), records %d, consumed %d, ack samples %d, e2e samples %d, catch-up %.2f MiB/s",
			r.Errors, r.FirstError, r.Records, r.Consumed, r.Ack.Count, r.EndToEnd.Count, r.CatchUpMiB)
	}
	if p := r.ProduceRPCs; p == nil || p.Latency.Count == 0 || p.InflightMean < 1 || p.InflightMax < 1 {
		t.Fatalf("produce requests %+v: want franz-go's Produce requests counted", p)
	}
	if v := r.Varve; v == nil || v.Counters.Records < float64(r.Records) || v.PutsPerGiB <= 0 {
		t.Fatalf("varve figures %+v: want the node's counters of the records produced through Kafka", v)
	}
	if r.CPUPerMiB <= 0 {
		t.Fatalf("CPU s/MiB %.3f", r.CPUPerMiB)
	}
	names := map[string]bool{}
	for _, p := range r.Processes {
		names[p.Name] = true
	}
	if !names["varve-serve-node-0"] || !names["etcd"] || !names["minio"] {
		t.Fatalf("processes %v: want the node, etcd and minio", names)
	}
}
