package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/bench"
	"github.com/varve-io/varve/internal/testenv"
)

// varveBin is the varve binary built by TestMain: the targets run it as
// subprocesses, as `varve bench` does.
var varveBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "varve-bench-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	varveBin, err = testenv.BuildVarve(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	return m.Run()
}

func tiny() bench.Workload {
	return bench.Workload{Name: "tiny", Payload: bench.PayloadJSON, Partitions: 3, Producers: 2, Consumers: 2,
		Rate: 400, Duration: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond, Keys: 100, Linger: 5 * time.Millisecond}
}

// TestRunFS drives the whole pipeline on the fs target (a real `varve dev`
// subprocess): floor, an open-loop workload, a max-rate random workload,
// report files and plots, and the regression check of a run against itself.
func TestRunFS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rnd := tiny()
	rnd.Name, rnd.Payload, rnd.MessageBytes, rnd.Rate, rnd.Keys = "tiny-random-max", bench.PayloadRandom, 256, 0, 0
	rnd.Duration, rnd.Warmup = 700*time.Millisecond, 0
	prof := bench.Profile{Name: "test", Targets: []string{bench.TargetVarveFS}, Workloads: []bench.Workload{tiny(), rnd},
		FloorObjects: 2, FloorCommits: 10, FlushBytes: 1 << 20}
	rep, err := bench.Run(ctx, bench.Config{Profile: prof, VarveBin: varveBin, Dir: t.TempDir(), Command: "go test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("errors: %v", rep.Errors)
	}
	if len(rep.Results) != 2 || len(rep.Floors) != 1 {
		t.Fatalf("got %d results and %d floors, want 2 and 1", len(rep.Results), len(rep.Floors))
	}
	r := rep.Results[0]
	// 400 records/s for 1.5 s after warm-up: about 600 measured records.
	if r.Records < 400 || r.Records > 800 {
		t.Errorf("measured %d records, want about 600", r.Records)
	}
	if r.Consumed < r.Records || r.EndToEnd.Count == 0 || r.Ack.Count != r.Records {
		t.Errorf("consumed %d, e2e samples %d, ack samples %d, records %d", r.Consumed, r.EndToEnd.Count, r.Ack.Count, r.Records)
	}
	if r.Ack.P50 <= 0 || r.Ack.P99 < r.Ack.P50 || r.Ack.Max < r.Ack.P999 || r.EndToEnd.P50 <= 0 {
		t.Errorf("implausible latencies: ack %+v e2e %+v", r.Ack, r.EndToEnd)
	}
	if r.CatchUpMiB <= 0 || len(r.Processes) == 0 || r.Processes[0].PeakRSS == 0 || r.Processes[0].CPUSeconds <= 0 {
		t.Errorf("catch-up %.2f MiB/s, processes %+v", r.CatchUpMiB, r.Processes)
	}
	if v := r.Varve; v == nil || v.PutsPerGiB <= 0 || v.Compression <= 1 || v.EtcdKeysPerGiB <= 0 {
		t.Errorf("varve figures %+v", r.Varve)
	}
	if rr := rep.Results[1]; rr.Records == 0 || rr.Varve == nil || rr.Varve.Compression > 1.3 {
		t.Errorf("random max-rate: %d records, figures %+v (random values must barely compress)", rr.Records, rr.Varve)
	}
	f := rep.Floors[0]
	if f.ZstdCompressMiBs <= 0 || f.ZstdDecompressMiBs <= 0 || f.ZstdRatio <= 1 || f.PutMiBs <= 0 || f.Commit.Count != 10 || f.ObjectBytes != 1<<20 {
		t.Errorf("floor %+v", f)
	}
	q, ok := rep.Ratios["varve-fs/tiny"]
	if !ok || q.ThroughputVsZstd <= 0 || q.AckP50VsFloor <= 1 {
		t.Errorf("ratios %+v", rep.Ratios)
	}
	// Each payload has its own compression floor: random bytes barely
	// compress, JSON does.
	if len(f.Zstd) != 2 || f.Zstd[0].Payload != "json" || f.Zstd[1].Payload != "random-256" || f.Zstd[1].Ratio > 1.3 || f.Zstd[0].Ratio <= 1.3 {
		t.Errorf("per-payload floor %+v", f.Zstd)
	}

	out := t.TempDir()
	if err := rep.WriteFiles(out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"report.json", "report.md", "tiny-ack-latency-cdf.png", "tiny-e2e-latency-cdf.png", "tiny-throughput.png", "compare-throughput.png"} {
		if st, err := os.Stat(filepath.Join(out, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	if !bytes.Contains(md, []byte("| varve-fs | tiny |")) {
		t.Errorf("report.md has no summary row:\n%s", md)
	}
	back, err := bench.ReadReport(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	regs, err := bench.Check(&buf, back, rep, 0.01)
	if err != nil || len(regs) != 0 {
		t.Fatalf("a run checked against itself: %v %v\n%s", regs, err, buf.String())
	}
}

// TestCheckFlagsRegression: a throughput ratio halved and a latency ratio
// doubled are regressions; changes within the tolerance are not.
func TestCheckFlagsRegression(t *testing.T) {
	base := &bench.Report{Profile: "quick", Ratios: map[string]bench.Ratios{
		"varve-fs/w": {ThroughputVsZstd: 0.10, AckP50VsFloor: 10, E2EP50VsFloor: 10},
	}}
	cur := &bench.Report{Profile: "quick", Ratios: map[string]bench.Ratios{
		"varve-fs/w": {ThroughputVsZstd: 0.05, AckP50VsFloor: 20, E2EP50VsFloor: 11},
	}}
	var buf bytes.Buffer
	regs, err := bench.Check(&buf, base, cur, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range regs {
		got[r.Ratio] = true
	}
	if len(regs) != 2 || !got["throughput_vs_zstd"] || !got["ack_p50_vs_floor"] {
		t.Fatalf("regressions %+v\n%s", regs, buf.String())
	}
	if !strings.Contains(buf.String(), "REGRESSION") {
		t.Errorf("table does not say REGRESSION:\n%s", buf.String())
	}
	// Missing workloads are regressions too; nothing in common is an error.
	if regs, _ := bench.Check(&buf, base, &bench.Report{Ratios: map[string]bench.Ratios{}}, 0.25); len(regs) != 1 {
		t.Errorf("missing workload: %+v", regs)
	}
	if _, err := bench.Check(&buf, base, &bench.Report{Ratios: map[string]bench.Ratios{}}, 0.25); err == nil {
		t.Error("no common ratio: want an error")
	}
}

// TestCheckRounds: a baseline of three rounds against a run of one
// compares round 1 and does not count rounds 2 and 3 as missing; a run of
// three rounds that lacks round 2 does.
func TestCheckRounds(t *testing.T) {
	r := bench.Ratios{ThroughputVsZstd: 0.10, AckP50VsFloor: 10}
	base := &bench.Report{Profile: "scale", Rounds: 3, Ratios: map[string]bench.Ratios{
		"varve-minio-2/w": r, "varve-minio-2 #2/w": r, "varve-minio-2 #3/w": r,
	}}
	var buf bytes.Buffer
	one := &bench.Report{Profile: "scale", Ratios: map[string]bench.Ratios{"varve-minio-2/w": r}}
	regs, err := bench.Check(&buf, base, one, 0.25)
	if err != nil || len(regs) != 0 {
		t.Fatalf("one round against three: %v %+v\n%s", err, regs, buf.String())
	}
	if !strings.Contains(buf.String(), "round 3 not run (the current run has 1)") {
		t.Errorf("table does not say round 3 was not run:\n%s", buf.String())
	}
	three := &bench.Report{Profile: "scale", Rounds: 3, Ratios: map[string]bench.Ratios{"varve-minio-2/w": r, "varve-minio-2 #3/w": r}}
	regs, _ = bench.Check(&buf, base, three, 0.25)
	if len(regs) != 1 || regs[0].Key != "varve-minio-2 #2/w" || regs[0].Ratio != "missing" {
		t.Fatalf("round 2 missing from a three-round run: %+v", regs)
	}
}

// TestStartupMinIO measures start-to-first-ack and drain of an ingest-only
// `varve serve` on a real MinIO and etcd (one round).
func TestStartupMinIO(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tg := &bench.VarveMinIO{Nodes: 1}
	if err := tg.Start(ctx, bench.Env{VarveBin: varveBin, Dir: t.TempDir(), FlushBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	s, err := bench.MeasureStartup(ctx, tg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.FirstAckMs) != 1 || s.FirstAckMs[0] <= 0 || len(s.DrainMs) != 1 || s.DrainMs[0] <= 0 {
		t.Fatalf("startup %+v", s)
	}
	names := map[string]bool{}
	for _, p := range tg.Processes() {
		names[p.Name] = true
	}
	if !names["minio"] || !names["varve-serve-node-0"] || !names["etcd"] {
		t.Errorf("processes %v: want etcd, minio and the node", names)
	}
}

// TestRunRoundsMinIO: with two rounds the MinIO target is started twice,
// each time afresh (its bucket and etcd not found again), and the second
// round's result, ratios and report rows say their round.
func TestRunRoundsMinIO(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := tiny()
	w.Duration = 700 * time.Millisecond
	prof := bench.Profile{Name: "test", Targets: []string{bench.TargetVarveMinIO1}, Workloads: []bench.Workload{w},
		FloorObjects: 1, FloorCommits: 2, FlushBytes: 1 << 20}
	rep, err := bench.Run(ctx, bench.Config{Profile: prof, Rounds: 2, VarveBin: varveBin, Dir: t.TempDir(), Command: "go test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Errors) > 0 {
		t.Fatalf("errors: %v", rep.Errors)
	}
	if rep.Rounds != 2 || len(rep.Results) != 2 || len(rep.Floors) != 1 {
		t.Fatalf("rounds %d, %d results, %d floors; want 2, 2, 1", rep.Rounds, len(rep.Results), len(rep.Floors))
	}
	if r := rep.Results[1]; r.Round != 2 || r.Records == 0 || r.Label() != "varve-minio-1 #2" {
		t.Errorf("second result: round %d, %d records, label %q", r.Round, r.Records, r.Label())
	}
	for _, k := range []string{"varve-minio-1/tiny", "varve-minio-1 #2/tiny"} {
		if _, ok := rep.Ratios[k]; !ok {
			t.Errorf("no ratios %q: %v", k, rep.Ratios)
		}
	}
	var buf bytes.Buffer
	rep.Markdown(&buf, nil)
	if !strings.Contains(buf.String(), "| varve-minio-1 #2 | tiny |") {
		t.Errorf("report has no row of round 2:\n%s", buf.String())
	}
}

// TestPeers runs a tiny workload against NATS JetStream and Redis Streams,
// started by the bench (nats-server and redis-server from `make tools`).
func TestPeers(t *testing.T) {
	for _, name := range []string{bench.TargetNATS, bench.TargetRedis} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			tg, err := bench.NewTarget(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := tg.Start(ctx, bench.Env{Dir: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			defer tg.Stop()
			w := tiny()
			w.Duration, w.Warmup = time.Second, 0
			r, err := bench.RunWorkload(ctx, tg, w, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.Records < 300 || r.Consumed < r.Records || r.Ack.Count != r.Records || r.EndToEnd.Count == 0 || r.CatchUpMiB <= 0 {
				t.Fatalf("records %d consumed %d ack samples %d e2e samples %d catch-up %.2f", r.Records, r.Consumed, r.Ack.Count, r.EndToEnd.Count, r.CatchUpMiB)
			}
			if len(r.Processes) != 1 || r.Processes[0].PeakRSS == 0 || r.Varve != nil {
				t.Fatalf("processes %+v varve %+v", r.Processes, r.Varve)
			}
		})
	}
}

// TestStartupMinIOSecure: the TLS + auth token target starts, and its
// clients (topic creation, the startup probe's produce) get through.
func TestStartupMinIOSecure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tg, err := bench.NewTarget(bench.TargetVarveMinIO1Secure)
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.Start(ctx, bench.Env{VarveBin: varveBin, Dir: t.TempDir(), FlushBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	defer tg.Stop()
	s, err := bench.MeasureStartup(ctx, tg.(*bench.VarveMinIO), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.FirstAckMs) != 1 || s.FirstAckMs[0] <= 0 {
		t.Fatalf("startup %+v", s)
	}
	if _, err := tg.(bench.VarveTarget).Counters(ctx); err != nil {
		t.Fatalf("metrics over TLS: %v", err)
	}
}
