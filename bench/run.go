package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency is a summary of an HDR histogram of microseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
	// CDF is (percentile, ms) points for plots.
	CDF [][2]float64 `json:"cdf"`
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3)
}

func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(v int64) float64 { return float64(v) / 1000 }
	l := Latency{Count: h.TotalCount(), P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()), Mean: h.Mean() / 1000}
	if h.TotalCount() > 0 {
		for _, q := range []float64{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 99, 99.5, 99.9, 99.95, 99.99, 100} {
			l.CDF = append(l.CDF, [2]float64{q, ms(h.ValueAtQuantile(q))})
		}
	}
	return l
}

// WorkloadResult is what one workload measured on one target.
type WorkloadResult struct {
	Target   string   `json:"target"`
	Workload Workload `json:"workload"`
	// Round is the round of a run with several (Config.Rounds), from 2;
	// 0 in round 1 and in a run of one round.
	Round int `json:"round,omitempty"`

	Records     int64   `json:"records"` // acknowledged in the measured window
	Bytes       int64   `json:"bytes"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	MiBps       float64 `json:"produce_mib_s"`
	RecordsPerS float64 `json:"produce_records_s"`
	// AchievedRecordsPerS is the acknowledgements that arrived while the
	// window ran (whatever their send time) per second of the window: the
	// rate the target sustained, below the offered rate when it falls
	// behind (RecordsPerS counts the window's records however late their
	// ack).
	AchievedRecordsPerS float64 `json:"achieved_records_s"`

	Ack        Latency `json:"ack_latency"`
	EndToEnd   Latency `json:"e2e_latency"`
	Consumed   int64   `json:"consumed"`
	CatchUpMiB float64 `json:"catch_up_mib_s"`
	CatchUpRec float64 `json:"catch_up_records_s"`

	// PerSecond is acknowledged MiB in each second of the measured window.
	PerSecond []float64 `json:"per_second_mib"`
	// ProduceRPCs are the producers' own Produce round trips (Varve only:
	// through the SDK's hooks).
	ProduceRPCs *ProduceRPCs `json:"produce_rpcs,omitempty"`
	// SlowAcks are the seconds of the measured window in which
	// acknowledgements slower than slowAck arrived, and how many.
	SlowAcks []SlowAcks `json:"slow_acks,omitempty"`

	// FirstError is the first failure a producer was told of.
	FirstError string `json:"first_error,omitempty"`

	Processes []ProcStats `json:"processes"`
	// CatchUpCPU is the part of each server process's CPU seconds (in
	// Processes) spent during the catch-up read, by process name.
	CatchUpCPU map[string]float64 `json:"catch_up_cpu_seconds,omitempty"`
	// CPUPerMiB is the CPU seconds of the target's server processes over
	// the workload over the MiB acknowledged in it (warm-up and catch-up
	// included).
	CPUPerMiB float64 `json:"server_cpu_s_per_mib"`
	// Varve only: counters over the workload.
	Varve *VarveFigures `json:"varve,omitempty"`
	// Steady is etcd's footprint sampled while producing (Workload.Sample).
	Steady []SteadySample `json:"steady,omitempty"`
}

// Label names x's target in tables: the target, and its round from round 2
// on ("varve-minio-2 #3").
func (x *WorkloadResult) Label() string { return roundLabel(x.Target, x.Round) }

// roundLabel names target in round: the target alone in round 1 (or a
// run of one round), "target #N" from round 2 on.
func roundLabel(target string, round int) string {
	if round > 1 {
		return fmt.Sprintf("%s #%d", target, round)
	}
	return target
}

// VarveFigures are Varve's costs per GiB ingested.
type VarveFigures struct {
	Counters        Counters `json:"counters"`
	PutsPerGiB      float64  `json:"puts_per_gib"`
	GetsPerGiB      float64  `json:"gets_per_gib"`
	StoredPerGiB    float64  `json:"stored_bytes_per_gib"`
	Compression     float64  `json:"compression_ratio"`
	EtcdBytesPerGiB float64  `json:"etcd_db_bytes_per_gib"`
	// EtcdLiveBytesPerGiB is the growth of the live keys and values.
	EtcdLiveBytesPerGiB float64 `json:"etcd_live_bytes_per_gib"`
	EtcdKeysPerGiB      float64 `json:"etcd_keys_per_gib"`
	// TailPutsPerGiB and TailGetsPerGiB are the ingest flushes' PUTs and
	// the fetch nodes' GETs per GiB ingested while producers and tailing
	// consumers ran (before the catch-up read): what tailing costs the
	// bucket, the "tail GETs ≤ 1.05 × PUTs".
	TailPutsPerGiB float64 `json:"tail_puts_per_gib,omitempty"`
	TailGetsPerGiB float64 `json:"tail_gets_per_gib,omitempty"`

	// Seconds is the time the counters were compared over: the whole
	// workload (warm-up, produce, drain, catch-up).
	Seconds float64 `json:"counters_seconds"`
	// Commit is the nodes' commit latency over the workload.
	Commit CommitLatency `json:"commit_latency"`
	// Put is the nodes' segment build and PUT latency over the workload
	// (Commits counts the PUTs).
	Put CommitLatency `json:"put_latency"`
	// EtcdTxnsPerS is etcd Txn RPCs per second, EtcdWritesPerS raft
	// proposals committed per second (every write).
	EtcdTxnsPerS   float64 `json:"etcd_txns_s"`
	EtcdWritesPerS float64 `json:"etcd_writes_s"`
	// EtcdPutsPerGiB is keys written (etcd_mvcc_put_total) per GiB.
	EtcdPutsPerGiB float64 `json:"etcd_keys_written_per_gib"`
	// EtcdDBBytesEnd and EtcdKeysEnd are etcd's DB size and live key
	// count (a range count) after the workload.
	EtcdDBBytesEnd int64 `json:"etcd_db_bytes_end"`
	EtcdKeysEnd    int64 `json:"etcd_keys_end"`
	// StorePutsPerGiB and StoreGetsPerGiB are the S3 requests the store
	// counted (MinIO), per GiB ingested.
	StorePutsPerGiB float64 `json:"store_puts_per_gib"`
	StoreGetsPerGiB float64 `json:"store_gets_per_gib"`
}

// Progress is told how far a run is, from 0 to 1.
type Progress func(frac float64, what string)

// payloadCount is how many distinct payloads a workload cycles through.
func payloadCount(w Workload) int {
	size := w.MessageBytes
	if w.Payload == PayloadJSON || size <= 0 {
		size = 430
	}
	return max(1024, (16<<20)/size)
}

// RunWorkload runs w against a started target: producers at w.Rate (open
// loop) or as fast as the target accepts, consumers tailing every
// partition, then a consumer catching up from the start.
func RunWorkload(ctx context.Context, t Target, w Workload, progress Progress) (*WorkloadResult, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = func(float64, string) {}
	}
	topic := fmt.Sprintf("%s-%d", w.Name, time.Now().UnixNano()%1e9)
	if err := t.CreateTopic(ctx, topic, w.Partitions); err != nil {
		return nil, fmt.Errorf("%s: create topic %s: %w", t.Name(), topic, err)
	}
	res := &WorkloadResult{Target: t.Name(), Workload: w}
	vt, isVarve := t.(VarveTarget)
	var before Counters
	t0 := time.Now()
	if isVarve {
		c, err := vt.Counters(ctx)
		if err != nil {
			return nil, err
		}
		before = c
	}
	cpuBefore := map[string]float64{}
	procs := t.Processes()
	if err := resetPeakRSS(procs); err != nil {
		return nil, err
	}
	for _, p := range procs {
		cpuBefore[p.Name] = p.CPUSeconds
	}

	// Enough distinct payloads that a segment does not repeat them (which
	// would flatter compression): about 16 MiB of events.
	payloads := w.Payloads(payloadCount(w), 1)
	keys := make([][]byte, w.Keys)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%d", i)
	}

	cctx, cancelCons := context.WithCancel(ctx)
	defer cancelCons()
	r := newWorkloadRun(t, w, topic)
	cwg := r.startTailers(cctx)
	pwg := r.startProducers(ctx, payloads, keys)
	stopSampling := func() []SteadySample { return nil }
	if isVarve && w.Sample > 0 {
		stopSampling = r.sampleSteady(ctx, vt)
	}
	r.waitProduced(pwg, progress)
	lastAck := time.Now()
	res.Steady = stopSampling()
	// Wait for the tailing consumers to see every acknowledged record.
	deadline := time.Now().Add(60 * time.Second)
	for r.consumed.Load() < r.acked.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cancelCons()
	cwg.Wait()
	var tail Counters
	if isVarve {
		c, err := vt.Counters(ctx)
		if err != nil {
			return nil, err
		}
		tail = c.Sub(before)
	}

	r.summarize(res, lastAck)
	if r.acked.Load() < r.sent.Load()-r.errs.Load() {
		return res, fmt.Errorf("%s %s: %d records sent, %d acknowledged", t.Name(), w.Name, r.sent.Load(), r.acked.Load())
	}

	// Catch-up: a consumer per workload consumer reads the whole topic again.
	progress(1, fmt.Sprintf("%s %s catch-up", t.Name(), w.Name))
	cpuCatchUp := map[string]float64{}
	for _, p := range t.Processes() {
		cpuCatchUp[p.Name] = p.CPUSeconds
	}
	r.catchUp(ctx, res)

	for _, p := range t.Processes() {
		if p.Name != SelfName {
			if res.CatchUpCPU == nil {
				res.CatchUpCPU = map[string]float64{}
			}
			res.CatchUpCPU[p.Name] = p.CPUSeconds - cpuCatchUp[p.Name]
		}
		p.CPUSeconds -= cpuBefore[p.Name]
		res.Processes = append(res.Processes, p)
	}
	if cpu, _ := serverCPU(res.Processes); r.allBytes.Load() > 0 {
		res.CPUPerMiB = cpu / mib(r.allBytes.Load())
	}
	if isVarve {
		after, err := vt.Counters(ctx)
		if err != nil {
			return res, err
		}
		res.Varve = varveFigures(after.Sub(before))
		v := res.Varve
		v.Seconds = time.Since(t0).Seconds()
		v.EtcdTxnsPerS, v.EtcdWritesPerS = v.Counters.EtcdTxns/v.Seconds, v.Counters.EtcdProposals/v.Seconds
		v.EtcdDBBytesEnd, v.EtcdKeysEnd = after.EtcdDBBytes, after.EtcdKeys
		if tail.IngestBytes > 0 {
			gib := tail.IngestBytes / (1 << 30)
			v.TailPutsPerGiB, v.TailGetsPerGiB = tail.Puts/gib, tail.Gets/gib
		}
	}
	return res, nil
}

// workloadRun is one run of a workload on a target: its measured window
// and what its producers and consumers count.
type workloadRun struct {
	t     Target
	w     Workload
	topic string
	// start is when producing starts; latencies are measured for
	// records sent in [measureFrom, measureTo).
	start, measureFrom, measureTo time.Time

	consumed atomic.Int64 // by the tailing consumers
	e2e      *hdrhistogram.Histogram
	e2eMu    sync.Mutex

	ack                                     *hdrhistogram.Histogram
	ackMu                                   sync.Mutex
	perSec                                  []atomic.Int64 // acknowledged bytes per second of the window
	slowPerSec                              []atomic.Int64 // acknowledgements slower than slowAck, per second of the window
	sent, acked, ackedBytes, measured, errs atomic.Int64
	allBytes                                atomic.Int64 // acknowledged, warm-up included
	ackedInWindow                           atomic.Int64 // acknowledgements that arrived in the window
	firstErr                                atomic.Pointer[string]
	producers                               []Producer
}

func newWorkloadRun(t Target, w Workload, topic string) *workloadRun {
	r := &workloadRun{t: t, w: w, topic: topic, e2e: newHist(), ack: newHist()}
	r.start = time.Now()
	r.measureFrom = r.start.Add(w.Warmup)
	r.measureTo = r.measureFrom.Add(w.Duration)
	r.perSec = make([]atomic.Int64, int(w.Duration/time.Second)+1)
	r.slowPerSec = make([]atomic.Int64, len(r.perSec))
	return r
}

// startConsumers starts a goroutine per workload consumer that has
// partitions (dealt round robin), running read with its consumer, which
// is closed after; wg counts them.
func (r *workloadRun) startConsumers(wg *sync.WaitGroup, read func(c Consumer)) {
	for i := 0; i < r.w.Consumers; i++ {
		var parts []int32
		for p := i; p < r.w.Partitions; p += r.w.Consumers {
			parts = append(parts, int32(p))
		}
		if len(parts) == 0 {
			continue
		}
		c := r.t.NewConsumer(i, r.topic, parts)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			read(c)
		}()
	}
}

// startTailers starts the consumers that tail every partition until ctx
// ends, measuring the end-to-end latency of the records sent in the
// window.
func (r *workloadRun) startTailers(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	r.startConsumers(&wg, func(c Consumer) {
		local := newHist()
		defer func() { r.e2eMu.Lock(); r.e2e.Merge(local); r.e2eMu.Unlock() }()
		for ctx.Err() == nil {
			msgs, _ := c.Poll(ctx)
			now := time.Now()
			for _, m := range msgs {
				if !m.SentAt.Before(r.measureFrom) && m.SentAt.Before(r.measureTo) {
					_ = local.RecordValue(max(1, now.Sub(m.SentAt).Microseconds()))
				}
			}
			r.consumed.Add(int64(len(msgs)))
		}
	})
	return &wg
}

// startProducers starts the producers, which send until the window ends.
func (r *workloadRun) startProducers(ctx context.Context, payloads, keys [][]byte) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := 0; i < r.w.Producers; i++ {
		pr := r.t.NewProducer(i, r.w)
		r.producers = append(r.producers, pr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.produce(ctx, i, pr, payloads, keys)
		}()
	}
	return &wg
}

// produce is producer i: at its share of w.Rate (open loop) or as fast as
// the target accepts, until the window ends; then it closes pr.
func (r *workloadRun) produce(ctx context.Context, i int, pr Producer, payloads, keys [][]byte) {
	w := r.w
	rnd := rand.New(rand.NewPCG(uint64(i), 99))
	var interval time.Duration
	if w.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(w.Producers) / float64(w.Rate))
	}
	next := time.Now()
	for n := 0; ; n++ {
		if interval > 0 {
			// Open loop: latency counts from the intended send time,
			// so a stalled target is not hidden (coordinated omission).
			next = r.start.Add(time.Duration(n) * interval)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		} else {
			next = time.Now()
		}
		if !next.Before(r.measureTo) || ctx.Err() != nil {
			break
		}
		v := payloads[(n*w.Producers+i)%len(payloads)]
		var k []byte
		if len(keys) > 0 {
			k = keys[rnd.IntN(len(keys))]
		}
		sentAt := next
		size := int64(len(v) + len(k))
		r.sent.Add(1)
		pr.Send(ctx, r.topic, k, v, sentAt, func(err error) { r.acknowledged(sentAt, size, err) })
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := pr.Close(cctx); err != nil {
		r.errs.Add(1)
		msg := "close: " + err.Error()
		r.firstErr.CompareAndSwap(nil, &msg)
	}
}

// acknowledged counts the answer to a record of size bytes sent at sentAt.
func (r *workloadRun) acknowledged(sentAt time.Time, size int64, err error) {
	if err != nil {
		r.errs.Add(1)
		msg := err.Error()
		r.firstErr.CompareAndSwap(nil, &msg)
		return
	}
	r.acked.Add(1)
	r.allBytes.Add(size)
	now := time.Now()
	if !now.Before(r.measureFrom) && now.Before(r.measureTo) {
		r.ackedInWindow.Add(1)
	}
	if sentAt.Before(r.measureFrom) {
		return
	}
	r.measured.Add(1)
	r.ackedBytes.Add(size)
	if s := int(now.Sub(r.measureFrom) / time.Second); s >= 0 && s < len(r.perSec) {
		r.perSec[s].Add(size)
		if now.Sub(sentAt) > slowAck {
			r.slowPerSec[s].Add(1)
		}
	}
	r.ackMu.Lock()
	_ = r.ack.RecordValue(max(1, now.Sub(sentAt).Microseconds()))
	r.ackMu.Unlock()
}

// waitProduced waits for the producers, telling progress how far the run
// is every 250 ms.
func (r *workloadRun) waitProduced(producers *sync.WaitGroup, progress Progress) {
	total := r.w.Warmup + r.w.Duration
	done := make(chan struct{})
	go func() { producers.Wait(); close(done) }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			progress(min(1, float64(time.Since(r.start))/float64(total)), fmt.Sprintf("%s %s produce", r.t.Name(), r.w.Name))
		}
	}
}

// slowAck is the acknowledgement latency above which the report says when
// it happened: past a tick and a half of a node's default linger (100 ms)
// plus its PUT and commit, so only a stall, a retry or a wait for one of
// the producer's in-flight slots reaches it.
const slowAck = 250 * time.Millisecond

// SlowAcks counts the acknowledgements slower than slowAck that arrived in
// one second of the measured window (0 is its first second).
type SlowAcks struct {
	Second int   `json:"second"`
	Count  int64 `json:"count"`
}

// summarize fills res with the produce figures of the window, which ends
// at the last acknowledgement (at most the workload's duration with a
// rate).
func (r *workloadRun) summarize(res *WorkloadResult, lastAck time.Time) {
	w := r.w
	res.Records, res.Bytes, res.Errors = r.measured.Load(), r.ackedBytes.Load(), r.errs.Load()
	if e := r.firstErr.Load(); e != nil {
		res.FirstError = *e
	}
	window := lastAck.Sub(r.measureFrom).Seconds()
	if window > w.Duration.Seconds() && w.Rate > 0 {
		window = w.Duration.Seconds()
	}
	res.Seconds = window
	if window > 0 {
		res.MiBps = float64(res.Bytes) / (1 << 20) / window
		res.RecordsPerS = float64(res.Records) / window
	}
	res.AchievedRecordsPerS = float64(r.ackedInWindow.Load()) / w.Duration.Seconds()
	res.Ack, res.EndToEnd, res.Consumed = summarize(r.ack), summarize(r.e2e), r.consumed.Load()
	res.ProduceRPCs = mergeRPCs(r.producers)
	for i := range r.perSec {
		res.PerSecond = append(res.PerSecond, float64(r.perSec[i].Load())/(1<<20))
		if n := r.slowPerSec[i].Load(); n > 0 {
			res.SlowAcks = append(res.SlowAcks, SlowAcks{Second: i, Count: n})
		}
	}
}

// catchUp reads the whole topic again with as many consumers as the
// workload has, for at most two minutes, and fills res with the rate.
func (r *workloadRun) catchUp(ctx context.Context, res *WorkloadResult) {
	totalRecs := r.acked.Load()
	var caught, caughtBytes atomic.Int64
	cu0 := time.Now()
	cuctx, cuCancel := context.WithTimeout(ctx, 2*time.Minute)
	var cuwg sync.WaitGroup
	r.startConsumers(&cuwg, func(c Consumer) {
		for cuctx.Err() == nil && caught.Load() < totalRecs {
			msgs, _ := c.Poll(cuctx)
			var b int64
			for _, m := range msgs {
				b += int64(m.Bytes)
			}
			caughtBytes.Add(b)
			if caught.Add(int64(len(msgs))) >= totalRecs {
				cuCancel()
			}
		}
	})
	cuwg.Wait()
	cuCancel()
	if el := time.Since(cu0).Seconds(); el > 0 {
		res.CatchUpMiB = float64(caughtBytes.Load()) / (1 << 20) / el
		res.CatchUpRec = float64(caught.Load()) / el
	}
}

// varveFigures are Varve's costs per GiB ingested from the change d of
// its counters over a workload.
func varveFigures(d Counters) *VarveFigures {
	f := &VarveFigures{Counters: d}
	if d.IngestBytes > 0 {
		gib := d.IngestBytes / (1 << 30)
		f.PutsPerGiB, f.GetsPerGiB = d.Puts/gib, d.Gets/gib
		f.StoredPerGiB = d.ObjectBytes / gib
		f.EtcdBytesPerGiB = float64(d.EtcdDBBytes) / gib
		f.EtcdLiveBytesPerGiB = float64(d.EtcdBytes) / gib
		f.EtcdKeysPerGiB = float64(d.EtcdKeys) / gib
		f.EtcdPutsPerGiB = d.EtcdPuts / gib
		f.StorePutsPerGiB, f.StoreGetsPerGiB = d.StorePuts/gib, d.StoreGets/gib
	}
	f.Commit = commitLatency(d.Commit)
	f.Put = commitLatency(d.Put)
	if d.ObjectBytes > 0 {
		f.Compression = d.IngestBytes / d.ObjectBytes
	}
	return f
}
