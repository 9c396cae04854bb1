package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/varve-io/varve/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure Varve against the physical floor, on loopback targets the bench starts itself",
		Long: `Run a profile of workloads against targets started on loopback by the bench:
varve-fs (varve dev), varve-minio-1, -2 and -4 (varve serve on a real
MinIO, with etcd as its own process, committing through the sequencer;
varve-minio-1-direct on the direct commit path), and the peers. The physical floor (zstd on all cores, PUT and
ranged GET of flush_bytes objects, etcd commit latency) is measured in the
same run, and Varve's figures are reported as ratios to it.

Writes report.md, report.json and PNG plots into --out. MinIO comes from
VARVE_MINIO_BIN or .tools/bin/minio (make tools).

Workload flags, when given, override every workload of the profile.`,
		Args: cobra.NoArgs,
		RunE: runBench,
	}
	f := cmd.Flags()
	f.String("profile", "quick", "quick (a few minutes), full, throughput (Varve vs Redis and NATS, json and random 1 KiB), scale (8 and 1,000 partitions on 1, 2 and 4 ingest nodes, and 1 on the direct commit path), or steady (etcd's footprint as 1,000 partitions take ten times the data)")
	f.StringSlice("targets", nil, "targets to run (default: the profile's): "+strings.Join(bench.KnownTargets(), ","))
	f.String("out", "bench-out", "directory for report.md, report.json and plots")
	f.String("varve-bin", "", "varve binary the targets run (default: this one)")
	f.String("workdir", "", "scratch directory for the targets' data (default: a temporary one, removed)")
	f.Duration("duration", 0, "measured produce phase of each workload (default: the profile's)")
	f.Duration("warmup", 0, "warm-up before measuring (default: the profile's)")
	f.Int("rate", 0, "target records/s over all producers; 0 = max rate (default: the profile's)")
	f.Int("partitions", 0, "partitions (default: the profile's; the scale profile keeps its 8-partition baseline and runs its scale workload at this many)")
	f.Int("producers", 0, "producers (default: the profile's)")
	f.Int("consumers", 0, "consumers (default: the profile's)")
	f.Int("message-bytes", 0, "value size of random payloads (default: the profile's)")
	f.String("payload", "", "json (realistic events) or random (default: the profile's)")
	f.Int("keys", 0, "distinct keys, uniform; 0 = no key (default: the profile's)")
	f.Duration("linger", 0, "producer client-side linger (default: the profile's)")
	f.Int("flush-bytes", 0, "nodes' flush_bytes and the floor's object size (default: the profile's)")
	f.Bool("compact", false, "run the compact role (compaction, retention, record pruning, GC) on the first node of the MinIO targets, as a deployment does, for runs longer than the compaction interval (the steady profile always does)")
	f.Int("rounds", 1, "run every target this many times, in turn (round 1: each target, round 2: each again, ...), and report each round's node-count ratios and their median; the floor and start-up are measured in round 1")
	f.Bool("quiet", false, "no progress bar")
	cmd.AddCommand(newBenchCheckCmd(), newBenchReportCmd())
	return cmd
}

func runBench(cmd *cobra.Command, _ []string) error {
	f := cmd.Flags()
	name, _ := f.GetString("profile")
	prof, ok := bench.Profiles()[name]
	if !ok {
		return fmt.Errorf("unknown profile %q: want quick, full, throughput or scale", name)
	}
	if t, _ := f.GetStringSlice("targets"); len(t) > 0 {
		prof.Targets = t
	}
	// A workload flag given is applied whatever its value, and checked
	// (Workload.Validate): `--consumers 0` is refused, not ignored.
	if v, _ := f.GetInt("flush-bytes"); f.Changed("flush-bytes") {
		if v <= 0 {
			return fmt.Errorf("--flush-bytes %d: must be > 0", v)
		}
		prof.FlushBytes = v
	}
	if v, _ := f.GetBool("compact"); f.Changed("compact") {
		prof.Compact = v
	}
	if v, _ := f.GetInt("partitions"); f.Changed("partitions") {
		if v <= 0 {
			return fmt.Errorf("--partitions %d: must be > 0", v)
		}
		prof = prof.WithPartitions(v)
	}
	for i := range prof.Workloads {
		w := &prof.Workloads[i]
		if v, _ := f.GetDuration("duration"); f.Changed("duration") {
			w.Duration = v
		}
		if v, _ := f.GetDuration("warmup"); f.Changed("warmup") {
			w.Warmup = v
		}
		if v, _ := f.GetInt("rate"); f.Changed("rate") {
			w.Rate = v
		}
		if v, _ := f.GetInt("producers"); f.Changed("producers") {
			w.Producers = v
		}
		if v, _ := f.GetInt("consumers"); f.Changed("consumers") {
			w.Consumers = v
		}
		if v, _ := f.GetInt("message-bytes"); f.Changed("message-bytes") {
			w.MessageBytes = v
		}
		if v, _ := f.GetString("payload"); f.Changed("payload") {
			w.Payload = v
		}
		if v, _ := f.GetInt("keys"); f.Changed("keys") {
			w.Keys = v
		}
		if v, _ := f.GetDuration("linger"); f.Changed("linger") {
			w.Linger = v
		}
		if err := w.Validate(); err != nil {
			return err
		}
	}
	rounds, _ := f.GetInt("rounds")
	if rounds < 1 {
		return fmt.Errorf("--rounds %d: must be ≥ 1", rounds)
	}
	bin, _ := f.GetString("varve-bin")
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary: %w", err)
		}
		bin = self
	}
	dir, _ := f.GetString("workdir")
	if dir == "" {
		d, err := os.MkdirTemp("", "varve-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	out, _ := f.GetString("out")
	quiet, _ := f.GetBool("quiet")
	stderr := cmd.ErrOrStderr()
	progress := func(float64, string) {}
	var bar *progressbar.ProgressBar
	if !quiet {
		bar = progressbar.NewOptions(1000, progressbar.OptionSetWriter(stderr), progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
		progress = func(frac float64, what string) {
			bar.Describe(fmt.Sprintf("%-36s", what))
			_ = bar.Set(int(frac * 1000))
		}
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, bench.Config{
		Profile: prof, Rounds: rounds, VarveBin: bin, Dir: dir, Command: "varve " + strings.Join(os.Args[1:], " "), Progress: progress,
		Log: func(format string, args ...any) {
			if quiet {
				fmt.Fprintf(stderr, "varve bench: "+format+"\n", args...)
			}
		},
	})
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return err
	}
	if err := rep.WriteFiles(out); err != nil {
		return err
	}
	rep.Markdown(cmd.OutOrStdout(), nil)
	fmt.Fprintf(stderr, "varve bench: report in %s/report.md and report.json\n", out)
	if len(rep.Errors) > 0 {
		return fmt.Errorf("%d target(s) or workload(s) failed: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
	}
	return nil
}

func newBenchCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check --baseline FILE --current FILE",
		Short: "Compare a run's ratios to the floor against a baseline report; exit 1 on regression",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bp, _ := cmd.Flags().GetString("baseline")
			cp, _ := cmd.Flags().GetString("current")
			tol, _ := cmd.Flags().GetFloat64("tolerance")
			base, err := bench.ReadReport(bp)
			if err != nil {
				return err
			}
			cur, err := bench.ReadReport(cp)
			if err != nil {
				return err
			}
			regs, err := bench.Check(cmd.OutOrStdout(), base, cur, tol)
			if err != nil {
				return err
			}
			if len(regs) > 0 {
				return fmt.Errorf("%d regression(s) against %s (tolerance %.0f%%)", len(regs), bp, tol*100)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nno regression against %s (tolerance %.0f%%)\n", bp, tol*100)
			return nil
		},
	}
	cmd.Flags().String("baseline", "bench/results/quick/report.json", "baseline report.json")
	cmd.Flags().String("current", "bench-out/report.json", "report.json of the run to check")
	cmd.Flags().Float64("tolerance", 0.5, "allowed relative worsening of each ratio")
	return cmd
}

func newBenchReportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report --from FILE --out DIR",
		Short: "Write report.md and the plots again from a report.json",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, _ := cmd.Flags().GetString("from")
			out, _ := cmd.Flags().GetString("out")
			rep, err := bench.ReadReport(from)
			if err != nil {
				return err
			}
			return rep.WriteFiles(out)
		},
	}
	cmd.Flags().String("from", "bench-out/report.json", "report.json of a run")
	cmd.Flags().String("out", "bench-out", "directory for report.md, report.json and plots")
	return cmd
}
