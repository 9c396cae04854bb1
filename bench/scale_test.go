package bench_test

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/bench"
)

// TestScaleProfilePlan: the scale profile is what issue 14 asks for,
// without running it: a keyed, rate-limited JSON load of 4 producers and
// 4 consumers at 8 and 1,000 partitions (the 8-partition baseline in the
// same run), on Varve over MinIO with one, two and four ingest nodes;
// 10,000 partitions in full and with --partitions 10000; every Varve
// target commits through the sequencer but varve-minio-1-direct, which the
// scale profile runs too for the comparison.
func TestScaleProfilePlan(t *testing.T) {
	profs := bench.Profiles()
	p, ok := profs["scale"]
	if !ok {
		t.Fatal("no scale profile")
	}
	if got := strings.Join(p.Targets, ","); got != "varve-minio-1,varve-minio-2,varve-minio-4,varve-minio-tiered-1,varve-minio-tiered-2,varve-minio-tiered-4,varve-minio-1-direct" {
		t.Errorf("scale targets %s", got)
	}
	check := func(w bench.Workload, parts int) {
		t.Helper()
		if err := w.Validate(); err != nil {
			t.Error(err)
		}
		if w.Partitions != parts || w.Payload != bench.PayloadJSON || w.Producers != 4 || w.Consumers != 4 ||
			w.Rate != bench.ScaleRate || w.Keys < parts || w.Name != "scale-"+strconv.Itoa(parts)+"p" {
			t.Errorf("workload %+v: want %d partitions, json, 4 producers, 4 consumers, %d rec/s, keyed", w, parts, bench.ScaleRate)
		}
	}
	if len(p.Workloads) != 2 {
		t.Fatalf("scale workloads %+v: want 8 and 1,000 partitions", p.Workloads)
	}
	check(p.Workloads[0], 8)
	check(p.Workloads[1], 1000)
	if p.StartupRounds != 0 || p.FlushBytes <= 0 {
		t.Errorf("scale settings %+v", p)
	}

	// --partitions 10000 keeps the baseline and moves the scale workload.
	big := p.WithPartitions(10000)
	if len(big.Workloads) != 2 {
		t.Fatalf("with 10000 partitions: %+v", big.Workloads)
	}
	check(big.Workloads[0], 8)
	check(big.Workloads[1], 10000)
	if big.Workloads[1].Duration != p.Workloads[1].Duration || p.Workloads[1].Partitions != 1000 {
		t.Errorf("WithPartitions changed durations or the original profile")
	}
	if eight := p.WithPartitions(8); len(eight.Workloads) != 1 {
		t.Errorf("--partitions 8 on scale: %d workloads, want the baseline only", len(eight.Workloads))
	}
	// Other profiles: every workload gets the partitions.
	for _, w := range profs["quick"].WithPartitions(3).Workloads {
		if w.Partitions != 3 {
			t.Errorf("quick with 3 partitions: %+v", w)
		}
	}

	// full has the 10,000-partition scale workload.
	found := false
	for _, w := range profs["full"].Workloads {
		if w.Partitions == 10000 {
			check(w, 10000)
			found = true
		}
	}
	if !found {
		t.Error("full profile has no 10,000-partition workload")
	}

	// Every target is known; only -direct commits directly.
	for name, wantNodes := range map[string]int{"varve-minio-1": 1, "varve-minio-2": 2, "varve-minio-4": 4,
		"varve-minio-tiered-1": 1, "varve-minio-tiered-2": 2, "varve-minio-tiered-4": 4, "varve-minio-1-direct": 1} {
		tg, err := bench.NewTarget(name)
		if err != nil {
			t.Fatal(err)
		}
		m, ok := tg.(*bench.VarveMinIO)
		if !ok || m.Nodes != wantNodes || tg.Name() != name || m.Tiered != strings.Contains(name, "tiered") {
			t.Errorf("%s: %T %+v named %s", name, tg, tg, tg.Name())
			continue
		}
		direct := strings.HasSuffix(name, "-direct")
		if direct != (m.CommitPath == bench.CommitPathDirect) || m.Sequenced() == direct {
			t.Errorf("%s: commit path %q, sequenced %v", name, m.CommitPath, m.Sequenced())
		}
	}
	for _, old := range []string{"varve-minio-1-seq", "varve-minio-2-seq", "varve-minio-4-seq"} {
		if _, err := bench.NewTarget(old); err == nil {
			t.Errorf("%s: the sequencer is the default now; the -seq targets are gone", old)
		}
	}
	if _, err := bench.NewTarget("varve-minio-3"); err == nil || !strings.Contains(err.Error(), "varve-minio-1-direct") {
		t.Errorf("unknown target: %v", err)
	}
}

// TestHistQuantile: bucket interpolation as Prometheus's
// histogram_quantile, and the difference of two scrapes.
func TestHistQuantile(t *testing.T) {
	before := bench.Hist{Count: 10, Sum: 1, Bounds: []float64{0.01, 0.1, 1}, Counts: []float64{10, 10, 10}}
	after := bench.Hist{Count: 110, Sum: 21, Bounds: []float64{0.01, 0.1, 1}, Counts: []float64{10, 60, 110}}
	d := after.Sub(before)
	if d.Count != 100 || d.Sum != 20 || d.Counts[0] != 0 || d.Counts[1] != 50 || d.Counts[2] != 100 {
		t.Fatalf("sub %+v", d)
	}
	// Half the observations are in (0.01, 0.1], half in (0.1, 1].
	for q, want := range map[float64]float64{0.5: 0.1, 0.25: 0.055, 0.99: 0.982} {
		if got := d.Quantile(q); math.Abs(got-want) > 1e-9 {
			t.Errorf("q%.2f = %g, want %g", q, got, want)
		}
	}
	// Past the last finite bucket: the last bound.
	over := bench.Hist{Count: 10, Bounds: []float64{1}, Counts: []float64{5}}
	if got := over.Quantile(0.99); got != 1 {
		t.Errorf("q0.99 past the buckets = %g, want 1", got)
	}
	if !math.IsNaN(bench.Hist{}.Quantile(0.5)) {
		t.Error("quantile of an empty histogram: want NaN")
	}
}

// TestScaleMarkdown: the report's scale section has every Varve run's
// row and the comparisons of partitions and of nodes.
func TestScaleMarkdown(t *testing.T) {
	res := func(target string, parts int, p99, cpu float64) *bench.WorkloadResult {
		return &bench.WorkloadResult{Target: target, Workload: bench.ScaleWorkload(parts), RecordsPerS: 5000, AchievedRecordsPerS: 5000,
			Ack: bench.Latency{P50: p99 / 2, P99: p99}, CPUPerMiB: cpu,
			Processes: []bench.ProcStats{{Name: "varve-serve-node-0", CPUSeconds: 3}, {Name: "minio", CPUSeconds: 1}, {Name: bench.SelfName, CPUSeconds: 9}},
			Varve: &bench.VarveFigures{EtcdTxnsPerS: 10, Commit: bench.CommitLatency{Commits: 5, P50: 20, P99: 10000, P99Beyond: true},
				Put: bench.CommitLatency{Commits: 5, P50: 30, P99: 42}}}
	}
	failing := res("varve-minio-2", 1000, 300, 0.6)
	failing.Errors, failing.FirstError = 7, "internal: too many operations in txn request"
	failing.Ack.Max = 412
	failing.SlowAcks = []bench.SlowAcks{{Second: 0, Count: 3}, {Second: 9, Count: 120}}
	ms := []float64{0.1, 0.25, 0.5}
	failing.Varve.Counters = bench.Counters{
		Flush:     bench.Hist{Count: 100, Sum: 12, Bounds: ms, Counts: []float64{90, 99, 100}},
		Commit:    bench.Hist{Count: 100, Sum: 1, Bounds: ms, Counts: []float64{100, 100, 100}},
		Put:       bench.Hist{Count: 10, Sum: 3, Bounds: ms, Counts: []float64{0, 8, 9}},
		PutHedges: 3, PutHedgesWon: 2,
		SeqBatches: 200, EtcdTxns: 212,
		EtcdTxnsBy: map[string]float64{"sequencer": 201, "compaction": 5, "/varve.v1.ProducerService/InitProducer": 4},
	}
	failing.ProduceRPCs = &bench.ProduceRPCs{Latency: bench.Latency{P99: 380, Max: 402.5}, Failed: 2, Codes: map[string]int64{"unavailable": 1, "aborted": 1}}
	failing.Varve.Put = bench.CommitLatency{} // no PUT figures (an older report)
	failing.Processes[1].CPUSeconds = 3       // MinIO half the servers' CPU: Varve + etcd 0.3 s/MiB against 0.225
	rep := &bench.Report{Profile: "scale", Results: []*bench.WorkloadResult{
		res("varve-minio-1", 8, 100, 0.2), res("varve-minio-1", 1000, 150, 0.3),
		res("varve-minio-2", 8, 120, 0.25), failing,
		res("varve-minio-tiered-1", 8, 100, 0.2), res("varve-minio-tiered-2", 8, 110, 0.26),
	}}
	reportHas(t, rep,
		"| varve-minio-2 | scale-1000p | 5000 | 5000 | 7 | 150.0 | 300.0 | 5 | 20.0 | ≥ 10000 | — |",
		"| varve-minio-1 | scale-8p | 5000 | 5000 | 0 | 50.0 | 100.0 | 5 | 20.0 | ≥ 10000 | 42.0 |",
		"- varve-minio-2 scale-1000p: 7 failed; first error: internal: too many operations in txn request",
		"| varve-minio-2 | scale-1000p | 300.0 | 412.0 | 0: 3, 9: 120 | ≤ 500 | > 500 | 3 (2) | ≤ 100 | 380.0 | 402.5 | 2 (aborted 1, unavailable 1) |",
		"| varve-minio-1 | scale-8p | 100.0 | 0.0 | 0 | — | — | 0 (0) | — | — | — | — |",
		"| varve-minio-2 | scale-1000p | 200 | 212 | 1.060 | 201 | 1.005 | compaction 5, ProducerService/InitProducer 4, not from a node 2 |",
		"| varve-minio-1 | scale-1000p ÷ scale-8p | 1.50 | 1.00 |",
		"| scale-1000p | varve-minio-2 ÷ varve-minio-1 | 2.00 | 2.00 | 1.33 | 1.00 |",
		"| scale-8p | varve-minio-tiered-2 ÷ varve-minio-tiered-1 | 1.10 | 1.30 |")
}

// reportHas fails t unless rep's Markdown holds every line.
func reportHas(t *testing.T, rep *bench.Report, lines ...string) {
	t.Helper()
	var buf bytes.Buffer
	rep.Markdown(&buf, nil)
	md := buf.String()
	for _, want := range lines {
		if !strings.Contains(md, want) {
			t.Errorf("report has no %q:\n%s", want, md)
		}
	}
}

// TestScaleMarkdownRounds: with several rounds, each multi-node result is
// divided by the one-node result of its own round, and the rounds' ratios
// are summed up as a median with their range, and pooled (the rounds' CPU
// seconds over their MiB).
func TestScaleMarkdownRounds(t *testing.T) {
	res := func(target string, round int, p99, node float64) *bench.WorkloadResult {
		return &bench.WorkloadResult{Target: target, Round: round, Workload: bench.ScaleWorkload(1000), RecordsPerS: 5000, AchievedRecordsPerS: 5000,
			Ack: bench.Latency{P50: p99 / 2, P99: p99}, CPUPerMiB: node,
			Processes: []bench.ProcStats{{Name: "varve-serve-node-0", CPUSeconds: node}},
			Varve:     &bench.VarveFigures{EtcdTxnsPerS: 10}}
	}
	rep := &bench.Report{Profile: "scale", Rounds: 3, Results: []*bench.WorkloadResult{
		res("varve-minio-1", 0, 100, 1), res("varve-minio-2", 0, 110, 1.5),
		res("varve-minio-1", 2, 100, 2), res("varve-minio-2", 2, 100, 2.2),
		res("varve-minio-1", 3, 100, 1), res("varve-minio-2", 3, 120, 1.2),
	}}
	reportHas(t, rep,
		"| varve-minio-2 #2 | scale-1000p | 5000 | 5000 | 0 |",
		"| scale-1000p | varve-minio-2 ÷ varve-minio-1 | 1.10 | 1.50 | 1.50 | 1.00 |",
		"| scale-1000p | varve-minio-2 #2 ÷ varve-minio-1 #2 | 1.00 | 1.10 | 1.10 | 1.00 |",
		"| scale-1000p | varve-minio-2 #3 ÷ varve-minio-1 #3 | 1.20 | 1.20 | 1.20 | 1.00 |",
		// Pooled: (1.5 + 2.2 + 1.2) s over 3 MiB against (1 + 2 + 1) s over 3 MiB.
		"| scale-1000p | varve-minio-2 ÷ varve-minio-1 | 3 | 1.10 (1.00–1.20) | 1.20 (1.10–1.50) | 1.20 (1.10–1.50) | 1.225 | 1.00 (1.00–1.00) |")
}

// TestScaleCountersMinIO: on a real MinIO target with etcd as its own
// process, a produce shows in every scale counter: the nodes' commit
// histogram, etcd's Txn RPCs, writes, keys written and CPU, and MinIO's
// PUTs.
func TestScaleCountersMinIO(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tg := &bench.VarveMinIO{Nodes: 1}
	if err := tg.Start(ctx, bench.Env{VarveBin: varveBin, Dir: t.TempDir(), FlushBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	before, err := tg.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := tiny()
	w.Duration, w.Warmup = time.Second, 0
	r, err := bench.RunWorkload(ctx, tg, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	after, err := tg.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := after.Sub(before)
	if d.Commit.Count < 1 || d.Commit.Sum <= 0 || len(d.Commit.Bounds) == 0 {
		t.Errorf("commit histogram %+v", d.Commit)
	}
	if d.EtcdTxns < d.Commit.Count || d.EtcdProposals < 1 || d.EtcdPuts < d.Commit.Count || d.EtcdCPU <= 0 {
		t.Errorf("etcd: %v txns, %v proposals, %v puts, %v CPU s over %v commits", d.EtcdTxns, d.EtcdProposals, d.EtcdPuts, d.EtcdCPU, d.Commit.Count)
	}
	if d.Flush.Count < 1 || d.Flush.Sum <= 0 {
		t.Errorf("flush histogram %+v", d.Flush)
	}
	// The nodes name their etcd transactions: the sequencer's batches (at
	// least one per batch), and none of them unnamed; every one etcd
	// answered was sent by a node (the bench's own reads are not Txns).
	var byNodes float64
	for _, n := range d.EtcdTxnsBy {
		byNodes += n
	}
	t.Logf("etcd Txns by caller %v over %v batches; etcd answered %v", d.EtcdTxnsBy, d.SeqBatches, d.EtcdTxns)
	if d.SeqBatches < 1 || d.EtcdTxnsBy["sequencer"] < d.SeqBatches || d.EtcdTxnsBy["other"] != 0 || byNodes < d.EtcdTxns {
		t.Errorf("etcd Txns by caller %v over %v batches; etcd answered %v", d.EtcdTxnsBy, d.SeqBatches, d.EtcdTxns)
	}
	if p := r.ProduceRPCs; p == nil || p.Latency.Count < 1 || p.Latency.Max <= 0 || p.Failed != 0 {
		t.Errorf("producers' RPCs %+v", p)
	}
	if !d.StoreMetrics || d.StorePuts < d.Puts || d.Puts < 1 {
		t.Errorf("store: metrics %v, %v PUTs counted by MinIO, %v flushes", d.StoreMetrics, d.StorePuts, d.Puts)
	}
	if r.AchievedRecordsPerS <= 0 || r.AchievedRecordsPerS > 1.5*float64(w.Rate) {
		t.Errorf("achieved %.0f rec/s of %d offered", r.AchievedRecordsPerS, w.Rate)
	}
	v := r.Varve
	if v == nil || v.Commit.Commits < 1 || v.Commit.P50 <= 0 || v.EtcdTxnsPerS <= 0 || v.EtcdKeysEnd <= 0 ||
		v.EtcdDBBytesEnd <= 0 || v.StorePutsPerGiB <= 0 || r.CPUPerMiB <= 0 {
		t.Errorf("figures %+v, CPU s/MiB %v", v, r.CPUPerMiB)
	}
}

// TestThroughputProfilePlan: the throughput profile is issue 15's
// comparison in one run: both payloads at max rate (and json at a fixed
// rate), 8 partitions, 2 producers, against Redis Streams and NATS.
func TestThroughputProfilePlan(t *testing.T) {
	p := bench.Profiles()["throughput"]
	if strings.Join(p.Targets, ",") != "varve-minio-1,redis-streams,nats-jetstream" {
		t.Fatalf("targets %v", p.Targets)
	}
	got := map[string]bench.Workload{}
	for _, w := range p.Workloads {
		got[w.Name] = w
		if w.Partitions != 8 || w.Producers != 2 {
			t.Fatalf("%s: %d partitions, %d producers", w.Name, w.Partitions, w.Producers)
		}
	}
	if w := got["json-max"]; w.Rate != 0 || w.Payload != bench.PayloadJSON {
		t.Fatalf("json-max: %+v", w)
	}
	if w := got["random-1k-max"]; w.Rate != 0 || w.Payload != bench.PayloadRandom || w.MessageBytes != 1024 {
		t.Fatalf("random-1k-max: %+v", w)
	}
	if w := got["json-rate"]; w.Rate != 2000 {
		t.Fatalf("json-rate: %+v", w)
	}
}

// TestTieredMinIO: the tiered target runs its nodes as an ingest tier
// (roles ingest,sequence) that the producers write to and one fetch node
// the consumers read from, and a workload runs through them.
func TestTieredMinIO(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tg := &bench.VarveMinIO{Nodes: 2, Tiered: true}
	if err := tg.Start(ctx, bench.Env{VarveBin: varveBin, Dir: t.TempDir(), FlushBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	all, produce, consume := tg.NodeAddrs()
	if len(all) != 3 || !slices.Equal(produce, all[:2]) || !slices.Equal(consume, all[2:]) {
		t.Fatalf("nodes %v, producers' %v, consumers' %v", all, produce, consume)
	}
	w := tiny()
	w.Duration, w.Warmup = time.Second, 0
	r, err := bench.RunWorkload(ctx, tg, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 0 || r.AchievedRecordsPerS <= 0 || r.Consumed < r.Records || r.CatchUpMiB <= 0 {
		t.Errorf("workload: %d failed, %.0f rec/s achieved, %d of %d consumed, catch-up %.2f MiB/s", r.Errors, r.AchievedRecordsPerS, r.Consumed, r.Records, r.CatchUpMiB)
	}
	for i, a := range all {
		resp, err := http.Get(a + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := string(b)
		roles, ingested := "ingest,sequence", true
		if i == 2 {
			roles, ingested = "fetch", false
		}
		if !strings.Contains(page, `varve_roles="`+roles+`"`) {
			t.Errorf("node %d: not roles %s", i, roles)
		}
		if got := strings.Contains(page, "\nvarve_ingest_records_total "); got != ingested {
			t.Errorf("node %d: ingest counters %v, want %v", i, got, ingested)
		}
	}
}
