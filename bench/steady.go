package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// SteadySample is Varve's etcd footprint at one instant of a workload run
// with Workload.Sample set: how etcd's live data follows the data ingested.
type SteadySample struct {
	// Seconds since producing started; IngestedBytes acknowledged by then
	// (warm-up included).
	Seconds       float64 `json:"seconds"`
	IngestedBytes int64   `json:"ingested_bytes"`
	// EtcdLiveBytes is the live keys' and values' size
	// (maintenance.Footprint), EtcdKeys their number, EtcdDBBytes etcd's
	// database file.
	EtcdLiveBytes int64 `json:"etcd_live_bytes"`
	EtcdKeys      int64 `json:"etcd_keys"`
	EtcdDBBytes   int64 `json:"etcd_db_bytes"`
}

// sampleSteady samples vt's etcd footprint every w.Sample while the
// workload produces; stop ends it and returns the samples, a last one
// taken at stop.
func (r *workloadRun) sampleSteady(ctx context.Context, vt VarveTarget) (stop func() []SteadySample) {
	var (
		mu      sync.Mutex
		samples []SteadySample
		wg      sync.WaitGroup
	)
	take := func() {
		c, err := vt.Counters(ctx)
		if err != nil {
			return // a missed sample shows as a gap in the table
		}
		mu.Lock()
		samples = append(samples, SteadySample{
			Seconds: time.Since(r.start).Seconds(), IngestedBytes: r.allBytes.Load(),
			EtcdLiveBytes: c.EtcdBytes, EtcdKeys: c.EtcdKeys, EtcdDBBytes: c.EtcdDBBytes,
		})
		mu.Unlock()
	}
	sctx, cancel := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(r.w.Sample)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
				take()
			}
		}
	}()
	return func() []SteadySample {
		cancel()
		wg.Wait()
		take()
		mu.Lock()
		defer mu.Unlock()
		return samples
	}
}

// SteadyGrowth compares etcd's live bytes at the end of a sampled run
// with those at the first sample that had ingested at least a tenth of the
// run's data: the data grew Growth times between the two, the live bytes
// LiveRatio times (1: flat).
type SteadyGrowth struct {
	From, To  SteadySample
	Growth    float64
	LiveRatio float64
}

// Growth returns the comparison of samples (ok false with fewer than two
// or no data).
func steadyGrowth(samples []SteadySample) (g SteadyGrowth, ok bool) {
	if len(samples) < 2 {
		return g, false
	}
	last := samples[len(samples)-1]
	for _, s := range samples[:len(samples)-1] {
		if s.IngestedBytes > 0 && s.IngestedBytes*10 >= last.IngestedBytes && s.EtcdLiveBytes > 0 {
			return SteadyGrowth{From: s, To: last,
				Growth:    float64(last.IngestedBytes) / float64(s.IngestedBytes),
				LiveRatio: float64(last.EtcdLiveBytes) / float64(s.EtcdLiveBytes)}, true
		}
	}
	return g, false
}

// steadyMarkdown writes, for every result with samples, etcd's footprint
// as the data grew.
func (r *Report) steadyMarkdown(w io.Writer) {
	head := false
	for _, res := range r.Results {
		if len(res.Steady) == 0 {
			continue
		}
		if !head {
			fmt.Fprintf(w, "\n## etcd as data grows\n\nSampled every `sample` seconds while producing: data acknowledged so far, etcd's live keys' and values' bytes (what compaction and record pruning must keep flat), its key count and its database file. The growth line compares the end with the first sample that had at least a tenth of the data.\n")
			head = true
		}
		fmt.Fprintf(w, "\n### %s / %s\n\n| s | MiB ingested | etcd live MiB | etcd keys | etcd DB MiB |\n|---|---|---|---|---|\n", res.Label(), res.Workload.Name)
		for _, s := range res.Steady {
			fmt.Fprintf(w, "| %.0f | %.1f | %.2f | %d | %.1f |\n", s.Seconds, mib(s.IngestedBytes), mib(s.EtcdLiveBytes), s.EtcdKeys, mib(s.EtcdDBBytes))
		}
		if g, ok := steadyGrowth(res.Steady); ok {
			fmt.Fprintf(w, "\nFrom %.0f s to %.0f s the data grew %.1f× (%.1f → %.1f MiB) and etcd's live bytes %.2f× (%.2f → %.2f MiB).\n",
				g.From.Seconds, g.To.Seconds, g.Growth, mib(g.From.IngestedBytes), mib(g.To.IngestedBytes), g.LiveRatio, mib(g.From.EtcdLiveBytes), mib(g.To.EtcdLiveBytes))
		}
	}
}

// SteadyWorkload is the steady profile's load: ScaleWorkload(1000) for
// four minutes, etcd sampled every 10 s.
func SteadyWorkload() Workload {
	w := ScaleWorkload(1000)
	w.Name, w.Duration, w.Warmup, w.Sample = "scale-1000p-steady", 240*time.Second, 5*time.Second, 10*time.Second
	return w
}

// SteadyNodeSettings are the steady profile's node settings: compaction
// and retention passes every 5 s and a 10 s dedupe window, so records
// are compacted and pruned within about 30 s of their commit.
var SteadyNodeSettings = []string{"VARVE_COMPACTION_INTERVAL=5s", "VARVE_RETENTION_CHECK_INTERVAL=5s", "VARVE_SEQUENCER_DEDUPE_WINDOW=10s"}
