package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// WriteFiles writes report.json, report.md and the PNG plots into dir.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	plots, err := r.Plots(dir)
	if err != nil {
		return fmt.Errorf("plots: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "report.md"))
	if err != nil {
		return err
	}
	r.Markdown(f, plots)
	return f.Close()
}

// ReadReport reads a report.json.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read report %s: %w", path, err)
	}
	return &r, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// Markdown writes the report; plots are file names relative to the report.
func (r *Report) Markdown(w io.Writer, plots []string) {
	m := r.Machine
	fmt.Fprintf(w, "# varve bench: profile %s\n\n", r.Profile)
	fmt.Fprintf(w, "- command: `%s`\n- started: %s, took %.0f s\n", r.Command, r.Started.Format("2006-01-02 15:04:05 UTC"), r.Seconds)
	fmt.Fprintf(w, "- machine: %d cores (%s), %.1f GiB memory, %s, %s, kernel %s, load average at start %s\n\n",
		m.Cores, m.CPU, float64(m.MemBytes)/(1<<30), m.GoVersion, m.OS, m.Kernel, m.LoadAvg)
	fmt.Fprintf(w, "Every target runs on this machine's loopback, started by the bench. Latencies are from HDR histograms (ms); ")
	fmt.Fprintf(w, "ack latency counts from the intended send time (open loop at a target rate, so stalls are not hidden). ")
	fmt.Fprintf(w, "Node settings: flush_bytes %d", r.Settings.FlushBytes)
	if len(r.Settings.NodeSettings) > 0 {
		fmt.Fprintf(w, ", %s", strings.Join(r.Settings.NodeSettings, " "))
	}
	if r.Settings.Compact {
		fmt.Fprintf(w, ", the compact role on the first node")
	}
	fmt.Fprintf(w, ", other settings default (linger 100ms).\n\n")

	fmt.Fprintf(w, "## Workloads\n\n| workload | payload | partitions | producers | consumers | rate (rec/s) | duration | keys | client linger |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, wl := range r.Settings.Workloads {
		rate := "max"
		if wl.Rate > 0 {
			rate = fmt.Sprint(wl.Rate)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %s | %v (+%v warm-up) | %d | %v |\n", wl.Name, wl.Payload, wl.Partitions, wl.Producers, wl.Consumers, rate, wl.Duration, wl.Warmup, wl.Keys, wl.Linger)
	}

	fmt.Fprintf(w, "\n## Summary\n\n| target | workload | MiB/s | records/s | ack p50 | p90 | p99 | p99.9 | max | e2e p50 | p99 | p99.9 | catch-up MiB/s | server CPU s | max peak RSS MiB | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		cpu, rss := serverCPU(x.Processes)
		fmt.Fprintf(w, "| %s | %s | %.2f | %.0f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %d |\n",
			x.Label(), x.Workload.Name, x.MiBps, x.RecordsPerS, x.Ack.P50, x.Ack.P90, x.Ack.P99, x.Ack.P999, x.Ack.Max,
			x.EndToEnd.P50, x.EndToEnd.P99, x.EndToEnd.P999, x.CatchUpMiB, cpu, mib(rss), x.Errors)
	}

	fmt.Fprintf(w, "\n## Processes\n\nCPU seconds over the workload (including its catch-up read) and peak RSS during the workload (VmHWM, reset through /proc/PID/clear_refs when the workload starts) of each process. etcd runs as its own process (`varve etcd`) on the MinIO targets; on varve-fs it is embedded in `varve dev`. The bench process runs the clients: it is listed, not counted in the summary.\n\n| target | workload | process | CPU s | peak RSS MiB |\n|---|---|---|---|---|\n")
	for _, x := range r.Results {
		for _, p := range x.Processes {
			fmt.Fprintf(w, "| %s | %s | %s | %.2f | %.0f |\n", x.Label(), x.Workload.Name, p.Name, p.CPUSeconds, mib(p.PeakRSS))
		}
	}

	fmt.Fprintf(w, "\n## Varve's costs per GiB ingested\n\n| target | workload | PUTs/GiB | GETs/GiB | bytes stored/GiB | compression | etcd DB bytes/GiB | etcd live bytes/GiB | etcd keys/GiB |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		if v := x.Varve; v != nil {
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f MiB | %.2f | %.0f KiB | %.0f KiB | %.0f |\n", x.Label(), x.Workload.Name,
				v.PutsPerGiB, v.GetsPerGiB, v.StoredPerGiB/(1<<20), v.Compression, v.EtcdBytesPerGiB/1024, v.EtcdLiveBytesPerGiB/1024, v.EtcdKeysPerGiB)
		}
	}

	r.scaleMarkdown(w)
	r.steadyMarkdown(w)

	fmt.Fprintf(w, "\n## The physical floor\n\nMeasured in the same run on the same store and etcd: zstd through `segment.Build`/`DecodeBlock` on all cores (this table: the first workload's payload; the next one: every payload, each workload's ratios use its own); sequential PUTs of one flush_bytes segment; ranged GETs of one block; Varve's etcd commit transaction of one block per partition.\n\n")
	fmt.Fprintf(w, "| target | cores | zstd compress MiB/s | decompress MiB/s | zstd ratio | object | PUT MiB/s | PUT p50 / p99 ms | block | GET MiB/s | GET p50 / p99 ms | etcd commit p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range r.Floors {
		fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %.2f | %.1f MiB | %.0f | %.1f / %.1f | %.0f KiB | %.0f | %.2f / %.2f | %.2f / %.2f |\n",
			f.Target, f.Cores, f.ZstdCompressMiBs, f.ZstdDecompressMiBs, f.ZstdRatio, mib(int64(f.ObjectBytes)), f.PutMiBs, f.Put.P50, f.Put.P99,
			float64(f.GetBytes)/1024, f.GetMiBs, f.Get.P50, f.Get.P99, f.Commit.P50, f.Commit.P99)
	}

	fmt.Fprintf(w, "\n| target | payload | zstd compress MiB/s | decompress MiB/s | ratio |\n|---|---|---|---|---|\n")
	for _, f := range r.Floors {
		for _, z := range f.Zstd {
			fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.2f |\n", f.Target, z.Payload, z.CompressMiBs, z.DecompressMiBs, z.Ratio)
		}
	}
	fmt.Fprintf(w, "\n## Varve over the floor\n\nThroughput as a fraction of what the floor allows (zstd on all cores; PUT bandwidth × compression ratio); latency as a multiple of one PUT + one commit; catch-up as a fraction of min(GET bandwidth × ratio, decompression). These ratios, not absolute times, are what `varve bench check` compares.\n\n")
	fmt.Fprintf(w, "| target/workload | throughput ÷ zstd | throughput ÷ PUT | ack p50 ÷ floor | ack p99 ÷ floor | e2e p50 ÷ floor | catch-up ÷ floor | CPU s per MiB |\n|---|---|---|---|---|---|---|---|\n")
	keys := make([]string, 0, len(r.Ratios))
	for k := range r.Ratios {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		q := r.Ratios[k]
		fmt.Fprintf(w, "| %s | %.3f | %.3f | %.1f | %.1f | %.1f | %.3f | %.3f |\n", k, q.ThroughputVsZstd, q.ThroughputVsPut, q.AckP50VsFloor, q.AckP99VsFloor, q.E2EP50VsFloor, q.CatchUpVsFloor, q.CPUPerMiB)
	}

	if len(r.Startup) > 0 {
		fmt.Fprintf(w, "\n## Serverless readiness\n\nFrom exec of `varve serve --roles ingest` (against the running etcd and bucket) to its first acknowledged produce (goal ≤ 250 ms), and from SIGTERM with a produce in flight to exit.\n\n| target | start-to-first-ack ms (each round) | drain ms (each round) |\n|---|---|---|\n")
		for _, s := range r.Startup {
			fmt.Fprintf(w, "| %s | %s | %s |\n", s.Target, floats(s.FirstAckMs), floats(s.DrainMs))
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(w, "\n## Errors\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(w, "- %s\n", strings.ReplaceAll(e, "\n", " "))
		}
	}
	if len(plots) > 0 {
		fmt.Fprintf(w, "\n## Plots\n\n")
		for _, p := range plots {
			fmt.Fprintf(w, "![%s](%s)\n\n", p, p)
		}
	}
}

func floats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}
