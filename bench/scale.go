package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/varve-io/varve/metadata"
)

// ScaleRate is the scale workloads' offered rate, records/s over all
// producers.
const ScaleRate = 5000

// ScaleWorkload is the scale profile's load at partitions: JSON events from
// four producers (the SDK's default producer, which is idempotent) and read
// by four consumers, 5,000 records/s offered, keyed records (ten keys per
// partition, at least 10,000) so every partition is written.
func ScaleWorkload(partitions int) Workload {
	return Workload{Name: fmt.Sprintf("scale-%dp", partitions), Payload: PayloadJSON, Partitions: partitions,
		Producers: 4, Consumers: 4, Rate: ScaleRate, Duration: 30 * time.Second, Warmup: 5 * time.Second,
		Keys: max(10000, 10*partitions), Linger: 5 * time.Millisecond, MaxBatchBytes: 1 << 20}
}

// WithPartitions returns p with every workload at n partitions, as
// `varve bench --partitions` asks. The scale profile keeps its first
// workload, the 8-partition baseline its figures are compared with, and
// makes the others ScaleWorkload(n) (same durations).
func (p Profile) WithPartitions(n int) Profile {
	ws := slices.Clone(p.Workloads)
	if p.Name != "scale" || len(ws) == 0 {
		for i := range ws {
			ws[i].Partitions = n
		}
		p.Workloads = ws
		return p
	}
	out := ws[:1]
	for _, w := range ws[1:] {
		if n == out[0].Partitions {
			continue
		}
		s := ScaleWorkload(n)
		s.Duration, s.Warmup = w.Duration, w.Warmup
		out = append(out, s)
	}
	p.Workloads = out
	return p
}

// Hist is a cumulative Prometheus histogram: Counts[i] observations were
// at most Bounds[i] (the +Inf bucket is Count).
type Hist struct {
	Count  float64   `json:"count"`
	Sum    float64   `json:"sum"`
	Bounds []float64 `json:"le,omitempty"`
	Counts []float64 `json:"cumulative,omitempty"`
}

// Sub returns h - o, bucket by bucket (o taken as empty if its buckets
// differ).
func (h Hist) Sub(o Hist) Hist {
	d := Hist{Count: h.Count - o.Count, Sum: h.Sum - o.Sum, Bounds: slices.Clone(h.Bounds), Counts: slices.Clone(h.Counts)}
	if slices.Equal(h.Bounds, o.Bounds) {
		for i := range d.Counts {
			d.Counts[i] -= o.Counts[i]
		}
	}
	return d
}

// merge returns h with o's observations added (the nodes' histograms of
// one metric); o is left out when its buckets differ.
func (h Hist) merge(o Hist) Hist {
	if h.Bounds == nil {
		return o
	}
	if !slices.Equal(h.Bounds, o.Bounds) {
		return h
	}
	m := Hist{Count: h.Count + o.Count, Sum: h.Sum + o.Sum, Bounds: h.Bounds, Counts: slices.Clone(h.Counts)}
	for i := range o.Counts {
		m.Counts[i] += o.Counts[i]
	}
	return m
}

// Quantile estimates the q-quantile (0..1) as Prometheus's
// histogram_quantile does: linearly within the bucket the rank falls in; a
// rank past the last finite bound answers that bound. NaN when empty.
func (h Hist) Quantile(q float64) float64 {
	if h.Count <= 0 {
		return math.NaN()
	}
	rank := q * h.Count
	lower, below := 0.0, 0.0
	for i, b := range h.Bounds {
		if h.Counts[i] >= rank {
			in := h.Counts[i] - below
			if in <= 0 {
				return b
			}
			return lower + (b-lower)*(rank-below)/in
		}
		lower, below = b, h.Counts[i]
	}
	return lower
}

// promPage is a parsed Prometheus text page.
type promPage map[string]*dto.MetricFamily

// scrapePage reads and parses a Prometheus text page.
func scrapePage(ctx context.Context, url string) (promPage, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := benchHTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("scrape %s: %s: %s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return fams, nil
}

// sum adds the values of name's samples whose labels include every pair
// of match (a label's value among the |-separated alternatives, in any
// case).
func (p promPage) sum(name string, match map[string]string) float64 {
	f := p[name]
	if f == nil {
		return 0
	}
	var s float64
	for _, m := range f.GetMetric() {
		if labelsMatch(m.GetLabel(), match) {
			s += sampleValue(m)
		}
	}
	return s
}

// sampleValue is a counter's, gauge's or untyped sample's value.
func sampleValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// sumBy is sum grouped by the value of label (samples without it under "").
func (p promPage) sumBy(name string, match map[string]string, label string) map[string]float64 {
	f := p[name]
	if f == nil {
		return nil
	}
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		if !labelsMatch(m.GetLabel(), match) {
			continue
		}
		k := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				k = l.GetValue()
			}
		}
		out[k] += sampleValue(m)
	}
	return out
}

func labelsMatch(ls []*dto.LabelPair, match map[string]string) bool {
	for k, want := range match {
		ok := false
		for _, l := range ls {
			if l.GetName() == k && slices.ContainsFunc(strings.Split(want, "|"), func(v string) bool { return strings.EqualFold(v, l.GetValue()) }) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// hist merges every sample of histogram name (all label sets) bucket by
// bucket.
func (p promPage) hist(name string) Hist {
	var h Hist
	f := p[name]
	if f == nil {
		return h
	}
	idx := map[float64]int{}
	for _, m := range f.GetMetric() {
		x := m.GetHistogram()
		if x == nil {
			continue
		}
		h.Count += float64(x.GetSampleCount())
		h.Sum += x.GetSampleSum()
		for _, b := range x.GetBucket() {
			ub := b.GetUpperBound()
			if math.IsInf(ub, 1) {
				continue
			}
			i, ok := idx[ub]
			if !ok {
				i = len(h.Bounds)
				idx[ub] = i
				h.Bounds = append(h.Bounds, ub)
				h.Counts = append(h.Counts, 0)
			}
			h.Counts[i] += float64(b.GetCumulativeCount())
		}
	}
	// Bounds in order (every node exports the same ones, in order).
	order := make([]int, len(h.Bounds))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case h.Bounds[a] < h.Bounds[b]:
			return -1
		case h.Bounds[a] > h.Bounds[b]:
			return 1
		}
		return 0
	})
	sorted := Hist{Count: h.Count, Sum: h.Sum}
	for _, i := range order {
		sorted.Bounds = append(sorted.Bounds, h.Bounds[i])
		sorted.Counts = append(sorted.Counts, h.Counts[i])
	}
	return sorted
}

// Metric names the scale figures read.
const (
	metricCommitSeconds = "varve_ingest_commit_duration_seconds"
	metricPutSeconds    = "varve_ingest_put_duration_seconds"
	metricFlushSeconds  = "varve_ingest_flush_duration_seconds"
	metricEtcdRPCs      = "grpc_server_handled_total"
	metricEtcdRequests  = "varve_etcd_requests_total"
	metricEtcdProposals = "etcd_server_proposals_committed_total"
	metricEtcdPuts      = "etcd_mvcc_put_total"
	metricProcessCPU    = "process_cpu_seconds_total"
	metricMinIORequests = "minio_api_requests_total"
)

// etcdCounters reads etcd's own /metrics into c: Txn RPCs answered, raft
// proposals committed (every write), keys written, and, when etcd runs in
// a process of its own, that process's CPU seconds.
func etcdCounters(ctx context.Context, endpoint string, ownProcess bool, c *Counters) error {
	p, err := scrapePage(ctx, endpoint+"/metrics")
	if err != nil {
		return fmt.Errorf("etcd metrics: %w", err)
	}
	c.EtcdTxns = p.sum(metricEtcdRPCs, map[string]string{"grpc_method": "Txn"})
	c.EtcdProposals = p.sum(metricEtcdProposals, nil)
	c.EtcdPuts = p.sum(metricEtcdPuts, nil)
	if ownProcess {
		c.EtcdCPU = p.sum(metricProcessCPU, nil)
	}
	return nil
}

// minioCounters reads the S3 requests MinIO has served into c: PUTs
// (PutObject and multipart parts) and GETs (GetObject, ranged or not).
// MinIO's v3 API metrics are read live (its v2 cluster page is cached
// for 10 s, which would move requests into the next workload).
func minioCounters(ctx context.Context, endpoint string, c *Counters) error {
	p, err := scrapePage(ctx, endpoint+"/minio/metrics/v3/api/requests")
	if err != nil {
		return fmt.Errorf("minio metrics: %w", err)
	}
	c.StorePuts = p.sum(metricMinIORequests, map[string]string{"name": "putobject|putobjectpart", "type": "s3"})
	c.StoreGets = p.sum(metricMinIORequests, map[string]string{"name": "getobject", "type": "s3"})
	c.StoreMetrics = true
	return nil
}

// CommitLatency summarizes the nodes' commit duration histogram over a
// workload (bucket interpolation, so p50 and p99 are estimates within the
// histogram's buckets: 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250 ms, ...).
type CommitLatency struct {
	Commits float64 `json:"commits"`
	Mean    float64 `json:"mean_ms"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	// P50Beyond and P99Beyond: the quantile is past the last finite
	// bucket, so the figure is a lower bound.
	P50Beyond bool `json:"p50_beyond_buckets,omitempty"`
	P99Beyond bool `json:"p99_beyond_buckets,omitempty"`
}

func commitLatency(h Hist) CommitLatency {
	if h.Count <= 0 {
		return CommitLatency{}
	}
	l := CommitLatency{Commits: h.Count, Mean: h.Sum / h.Count * 1000, P50: h.Quantile(0.5) * 1000, P99: h.Quantile(0.99) * 1000}
	if n := len(h.Counts); n > 0 {
		l.P50Beyond, l.P99Beyond = h.Counts[n-1] < 0.5*h.Count, h.Counts[n-1] < 0.99*h.Count
	}
	return l
}

// putP99 is the PUT p99 cell: — when the nodes reported no PUT (a
// report written before the bench read them).
func putP99(l CommitLatency) string {
	if l.Commits == 0 {
		return "—"
	}
	return msString(l.P99, l.P99Beyond)
}

// slowAcksMarkdown writes, per workload, when acknowledgements slower than
// slowAck arrived and the slowest of each step they wait for, so that a
// spike of the ack p99 can be put down to a node's flush, its PUT, its
// commit, or the client (a slow or failed Produce RPC).
func slowAcksMarkdown(w io.Writer, vr []*WorkloadResult) {
	fmt.Fprintf(w, "\n### Slow acknowledgements\n\nAcks slower than %v by the second of the measured window they arrived in (second: count); the slowest of the nodes' flushes (`%s`, a file's first record to its commit), PUTs and commits, as the bound of the histogram bucket the slowest fell in, ms; the PUTs hedged (`varve_ingest_put_hedges_total`: raced by a second PUT after twice the recent p90) and how many of those the second won; and the producers' own Produce round trips (every attempt, through the SDK's hooks; exact, ms): p99, max, and attempts that failed (retried by the SDK), by Connect code.\n\n", slowAck, metricFlushSeconds)
	fmt.Fprintf(w, "| target | workload | ack p99 | ack max | slow acks | slowest flush | slowest PUT | PUT hedges (won) | slowest commit | produce RPC p99 | produce RPC max | failed attempts |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range vr {
		c := x.Varve.Counters
		slow := "0"
		if len(x.SlowAcks) > 0 {
			var at []string
			for _, s := range x.SlowAcks {
				at = append(at, fmt.Sprintf("%d: %d", s.Second, s.Count))
			}
			slow = strings.Join(at, ", ")
		}
		rpcP99, rpcMax, failed := "—", "—", "—"
		if p := x.ProduceRPCs; p != nil {
			rpcP99, rpcMax, failed = fmt.Sprintf("%.1f", p.Latency.P99), fmt.Sprintf("%.1f", p.Latency.Max), fmt.Sprint(p.Failed)
			if p.Failed > 0 {
				failed += " (" + codesString(p.Codes) + ")"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.1f | %s | %s | %s | %.0f (%.0f) | %s | %s | %s | %s |\n", x.Label(), x.Workload.Name, x.Ack.P99, x.Ack.Max, slow,
			c.Flush.slowest(), c.Put.slowest(), c.PutHedges, c.PutHedgesWon, c.Commit.slowest(), rpcP99, rpcMax, failed)
	}
}

// etcdCallersMarkdown writes where each workload's etcd transactions came
// from: the sequencer's batches and the rest, by caller.
func etcdCallersMarkdown(w io.Writer, vr []*WorkloadResult) {
	var rows []string
	for _, x := range vr {
		c := x.Varve.Counters
		if c.EtcdTxnsBy == nil || c.SeqBatches <= 0 {
			continue
		}
		var nodes float64
		type caller struct {
			name string
			n    float64
		}
		var rest []caller
		for k, n := range c.EtcdTxnsBy {
			nodes += n
			if k != metadata.CallerSequencer {
				rest = append(rest, caller{strings.TrimPrefix(k, "/varve.v1."), n})
			}
		}
		sort.Slice(rest, func(i, j int) bool {
			return rest[i].n > rest[j].n || rest[i].n == rest[j].n && rest[i].name < rest[j].name
		})
		var parts []string
		for _, r := range rest {
			parts = append(parts, fmt.Sprintf("%s %.0f", r.name, r.n))
		}
		if d := c.EtcdTxns - nodes; d >= 1 {
			parts = append(parts, fmt.Sprintf("not from a node %.0f", d))
		}
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		seq := c.EtcdTxnsBy[metadata.CallerSequencer]
		rows = append(rows, fmt.Sprintf("| %s | %s | %.0f | %.0f | %.3f | %.0f | %.3f | %s |", x.Label(), x.Workload.Name, c.SeqBatches, c.EtcdTxns,
			c.EtcdTxns/c.SeqBatches, seq, seq/c.SeqBatches, strings.Join(parts, ", ")))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### etcd transactions by caller\n\nPer workload: the batches the sequencer wrote (`varve_sequencer_batches_total`), etcd's Txn RPCs (its own count) and per batch, the Txn requests the nodes sent as sequencer leader for its batches (`%s{method=\"Txn\",caller=\"sequencer\"}`: the batch transactions, a due checkpoint riding in one; goal ≤ 1 per batch) and per batch, and the rest by caller: the leader's reads of topics and producers before a batch (sequencer.read) and checkpoints written alone (sequencer.checkpoint), another Varve subsystem (ingest, compaction, janitor, cache, groups, node) or the API procedure a client called (InitProducer, ListOffsets, CreateTopic, ...).\n\n", metricEtcdRequests)
	fmt.Fprintf(w, "| target | workload | sequencer batches | etcd Txn | etcd Txn/batch | sequencer Txn | sequencer Txn/batch | the rest, by caller |\n|---|---|---|---|---|---|---|---|\n%s\n", strings.Join(rows, "\n"))
}

// slowest is the bound of the first bucket that holds every observation,
// in ms: "≤ 250" (— when empty, "> 10000" past the last bound).
func (h Hist) slowest() string {
	if h.Count <= 0 {
		return "—"
	}
	for i, b := range h.Bounds {
		if h.Counts[i] >= h.Count {
			return fmt.Sprintf("≤ %g", b*1000)
		}
	}
	if len(h.Bounds) == 0 {
		return "—"
	}
	return fmt.Sprintf("> %g", h.Bounds[len(h.Bounds)-1]*1000)
}

// msString is a latency in ms, with ≥ when it is a lower bound.
func msString(ms float64, beyond bool) string {
	if beyond {
		return fmt.Sprintf("≥ %.0f", ms)
	}
	return fmt.Sprintf("%.1f", ms)
}

// scaleMarkdown writes the scale table of every Varve result and, where
// the run has them, the comparisons issue 14 asks for: each workload's ack
// p99 over the same target's fewest-partitions workload, and each
// multi-node target over the one-node target of the same commit path.
func (r *Report) scaleMarkdown(w io.Writer) {
	var vr []*WorkloadResult
	for _, x := range r.Results {
		if x.Varve != nil {
			vr = append(vr, x)
		}
	}
	if len(vr) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Scale\n\nPer workload: records/s offered and achieved (acknowledgements that arrived during the measured window, per second), failed records, ack latency (ms), the nodes' commit latency (`%s`, estimated within its buckets, ms), their segment build and PUT latency p99 (`%s`, the same way; a stall of the store shows here, not in the commit) and commit attempts made again (`varve_ingest_commit_retries_total`: conflicts on the direct path, calls after a lost leader through the sequencer), etcd's figures from its own /metrics over the whole workload (Txn RPCs/s, and per batch the sequencer wrote (`varve_sequencer_batches_total`; goal ≤ 1, — on the direct path), raft proposals/s = writes/s, CPU seconds of the etcd process), etcd DB size and live key count at the end and their growth per GiB ingested, keys written per GiB (`%s`), S3 PUTs and GETs per GiB as MinIO counts them (`%s`: compaction's and the catch-up read's included), the fetch nodes' GETs per GiB (`varve_fetch_object_gets_total`) while producers and tailing consumers ran, against the ingest flushes' PUTs per GiB then (goal: tail GETs ≤ 1.05 × PUTs), and CPU seconds of every server process (Varve nodes, etcd, MinIO; not the bench's clients) per MiB acknowledged (warm-up included).\n\n", metricCommitSeconds, metricPutSeconds, metricEtcdPuts, metricMinIORequests)
	fmt.Fprintf(w, "| target | workload | offered rec/s | achieved rec/s | failed | ack p50 | ack p99 | commits | commit p50 | commit p99 | PUT p99 | commit retries | etcd txn/s | etcd txn/batch | etcd writes/s | etcd CPU s | etcd DB MiB (end) | etcd DB MiB/GiB | etcd keys (end) | etcd keys/GiB | etcd keys written/GiB | PUTs/GiB | GETs/GiB | tail GETs/GiB (flush PUTs/GiB) | CPU s/MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range vr {
		v := x.Varve
		offered := "max"
		if x.Workload.Rate > 0 {
			offered = fmt.Sprint(x.Workload.Rate)
		}
		puts, gets := v.StorePutsPerGiB, v.StoreGetsPerGiB
		if !v.Counters.StoreMetrics {
			puts, gets = v.PutsPerGiB, v.GetsPerGiB
		}
		tailGets := "—"
		if v.TailPutsPerGiB > 0 {
			tailGets = fmt.Sprintf("%.0f (%.0f)", v.TailGetsPerGiB, v.TailPutsPerGiB)
		}
		perBatch := "—"
		if v.Counters.SeqBatches > 0 {
			perBatch = fmt.Sprintf("%.2f", v.Counters.EtcdTxns/v.Counters.SeqBatches)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.0f | %d | %.1f | %.1f | %.0f | %s | %s | %s | %.0f | %.1f | %s | %.1f | %.2f | %.1f | %.1f | %d | %.0f | %.0f | %.0f | %.0f | %s | %.3f |\n",
			x.Label(), x.Workload.Name, offered, x.AchievedRecordsPerS, x.Errors, x.Ack.P50, x.Ack.P99,
			v.Commit.Commits, msString(v.Commit.P50, v.Commit.P50Beyond), msString(v.Commit.P99, v.Commit.P99Beyond), putP99(v.Put), v.Counters.CommitRetries, v.EtcdTxnsPerS, perBatch, v.EtcdWritesPerS, v.Counters.EtcdCPU,
			mib(v.EtcdDBBytesEnd), v.EtcdBytesPerGiB/(1<<20), v.EtcdKeysEnd, v.EtcdKeysPerGiB, v.EtcdPutsPerGiB, puts, gets, tailGets, x.CPUPerMiB)
	}

	var failed []string
	for _, x := range vr {
		if x.Errors > 0 {
			failed = append(failed, fmt.Sprintf("- %s %s: %d failed; first error: %s", x.Label(), x.Workload.Name, x.Errors, strings.ReplaceAll(x.FirstError, "\n", " ")))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nFailed records:\n\n%s\n", strings.Join(failed, "\n"))
	}

	slowAcksMarkdown(w, vr)
	etcdCallersMarkdown(w, vr)

	// Partitions: each target's workloads over its fewest-partitions one
	// (of the same round).
	var rows []string
	for _, t := range resultTargets(vr) {
		var base *WorkloadResult
		for _, x := range vr {
			if x.Label() == t && (base == nil || x.Workload.Partitions < base.Workload.Partitions) {
				base = x
			}
		}
		for _, x := range vr {
			if x.Label() != t || x == base || x.Workload.Partitions == base.Workload.Partitions {
				continue
			}
			rows = append(rows, fmt.Sprintf("| %s | %s ÷ %s | %.2f | %.2f |", t, x.Workload.Name, base.Workload.Name,
				div(x.Ack.P99, base.Ack.P99), div(x.Varve.EtcdTxnsPerS, base.Varve.EtcdTxnsPerS)))
		}
	}
	if len(rows) > 0 {
		fmt.Fprintf(w, "\n### More partitions, same target (goal: ack p99 ratio ≤ 1.2; etcd txn/s independent of partitions)\n\n| target | workloads | ack p99 ratio | etcd txn/s ratio |\n|---|---|---|---|\n%s\n", strings.Join(rows, "\n"))
	}

	// Nodes: each multi-node target over the one-node target of the same
	// kind, per workload, in the same round.
	rows = rows[:0]
	type pair struct{ workload, target string }
	var pairs []pair
	perRound := map[pair][]nodeRatios{}
	for _, x := range vr {
		one := oneNodeTarget(x.Target)
		if one == "" || one == x.Target {
			continue
		}
		for _, b := range vr {
			if b.Target == one && b.Workload.Name == x.Workload.Name && b.Round == x.Round {
				q := nodeRatios{ackP99: div(x.Ack.P99, b.Ack.P99), cpuAll: div(x.CPUPerMiB, b.CPUPerMiB),
					cpuVarveEtcd: div(varveEtcdCPUPerMiB(x), varveEtcdCPUPerMiB(b)), etcdTxns: div(x.Varve.EtcdTxnsPerS, b.Varve.EtcdTxnsPerS)}
				q.cpu, q.mib = varveEtcdCPU(x)
				q.oneCPU, q.oneMiB = varveEtcdCPU(b)
				rows = append(rows, fmt.Sprintf("| %s | %s ÷ %s | %.2f | %.2f | %.2f | %.2f |", x.Workload.Name, x.Label(), b.Label(),
					q.ackP99, q.cpuAll, q.cpuVarveEtcd, q.etcdTxns))
				k := pair{x.Workload.Name, x.Target + " ÷ " + one}
				if perRound[k] == nil {
					pairs = append(pairs, k)
				}
				perRound[k] = append(perRound[k], q)
			}
		}
	}
	if len(rows) > 0 {
		fmt.Fprintf(w, "\n### More ingest nodes, same workload (goal: ack p99 ratio ≤ 1.1, CPU s/MiB ratio of the Varve processes and etcd ≤ 1.1, etcd txn/s independent of nodes; the CPU of every server process, MinIO included, for comparison)\n\n| workload | targets | ack p99 ratio | CPU s/MiB ratio (all servers) | CPU s/MiB ratio (Varve + etcd) | etcd txn/s ratio |\n|---|---|---|---|---|---|\n%s\n", strings.Join(rows, "\n"))
	}
	// Over rounds: the median of each ratio, and its least and greatest.
	rows = rows[:0]
	for _, k := range pairs {
		qs := perRound[k]
		if len(qs) < 2 {
			continue
		}
		col := func(f func(nodeRatios) float64) string {
			v := make([]float64, len(qs))
			for i, q := range qs {
				v[i] = f(q)
			}
			slices.Sort(v)
			return fmt.Sprintf("%.2f (%.2f–%.2f)", median(v), v[0], v[len(v)-1])
		}
		// Pooled: every round's CPU seconds over every round's MiB, of
		// either side. One round's ratio spreads by ±0.15 on the 2-core
		// machine; the sums weigh each round by what it carried.
		var cpu, mib, oneCPU, oneMiB float64
		for _, q := range qs {
			cpu, mib, oneCPU, oneMiB = cpu+q.cpu, mib+q.mib, oneCPU+q.oneCPU, oneMiB+q.oneMiB
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %d | %s | %s | %s | %.3f | %s |", k.workload, k.target, len(qs),
			col(func(q nodeRatios) float64 { return q.ackP99 }), col(func(q nodeRatios) float64 { return q.cpuAll }),
			col(func(q nodeRatios) float64 { return q.cpuVarveEtcd }), div(div(cpu, mib), div(oneCPU, oneMiB)),
			col(func(q nodeRatios) float64 { return q.etcdTxns })))
	}
	if len(rows) > 0 {
		fmt.Fprintf(w, "\n### More ingest nodes over rounds (median of the rounds' ratios, least–greatest; pooled: the CPU seconds of the Varve processes and etcd summed over the rounds, per MiB summed over the rounds, of either target; each round ran every target once, in turn)\n\n| workload | targets | rounds | ack p99 ratio | CPU s/MiB ratio (all servers) | CPU s/MiB ratio (Varve + etcd) | pooled CPU s/MiB ratio (Varve + etcd) | etcd txn/s ratio |\n|---|---|---|---|---|---|---|---|\n%s\n", strings.Join(rows, "\n"))
	}
}

// nodeRatios are one round's figures of a multi-node target over the
// one-node target.
type nodeRatios struct {
	ackP99, cpuAll, cpuVarveEtcd, etcdTxns float64
	// CPU seconds of the Varve processes and etcd, and MiB they carried,
	// of the multi-node and of the one-node target.
	cpu, mib, oneCPU, oneMiB float64
}

// median of sorted v (the mean of the middle two when even).
func median(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// varveEtcdCPU returns x's CPU seconds of the Varve nodes and etcd, and the
// MiB its CPUPerMiB counts.
func varveEtcdCPU(x *WorkloadResult) (cpu, mib float64) {
	all, _ := serverCPU(x.Processes)
	perMiB := varveEtcdCPUPerMiB(x)
	if perMiB == 0 {
		return 0, 0
	}
	cpu = all * div(perMiB, x.CPUPerMiB)
	return cpu, cpu / perMiB
}

// varveEtcdCPUPerMiB is x's CPU seconds per MiB of the Varve nodes and
// etcd alone: what issue 14 compares across node counts (the store's CPU is
// the store's, S3 in production).
func varveEtcdCPUPerMiB(x *WorkloadResult) float64 {
	all, _ := serverCPU(x.Processes)
	var store float64
	for _, p := range x.Processes {
		if p.Name == storeProcName {
			store += p.CPUSeconds
		}
	}
	return x.CPUPerMiB * div(all-store, all)
}

func div(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// resultTargets lists the targets of rs, with their rounds (Label), in
// first-seen order.
func resultTargets(rs []*WorkloadResult) []string {
	var out []string
	for _, x := range rs {
		if !slices.Contains(out, x.Label()) {
			out = append(out, x.Label())
		}
	}
	return out
}

// oneNodeTarget names the one-node target of the same kind as a
// varve-minio-N[-suffix] target ("" for other targets).
func oneNodeTarget(name string) string {
	rest, ok := strings.CutPrefix(name, "varve-minio-")
	if !ok {
		return ""
	}
	kind := "varve-minio-"
	if r, ok := strings.CutPrefix(rest, "tiered-"); ok {
		kind, rest = kind+"tiered-", r
	}
	i := strings.IndexByte(rest, '-')
	if i < 0 {
		return kind + "1"
	}
	return kind + "1" + rest[i:]
}
