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

	Records     int64   `json:"records"` // acknowledged in the measured window
	Bytes       int64   `json:"bytes"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	MiBps       float64 `json:"produce_mib_s"`
	RecordsPerS float64 `json:"produce_records_s"`

	Ack        Latency `json:"ack_latency"`
	EndToEnd   Latency `json:"e2e_latency"`
	Consumed   int64   `json:"consumed"`
	CatchUpMiB float64 `json:"catch_up_mib_s"`
	CatchUpRec float64 `json:"catch_up_records_s"`

	// PerSecond is acknowledged MiB in each second of the measured window.
	PerSecond []float64 `json:"per_second_mib"`

	Processes []ProcStats `json:"processes"`
	// Varve only: counters over the workload.
	Varve *VarveFigures `json:"varve,omitempty"`
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

	// Consumers: partitions dealt round robin.
	cctx, cancelCons := context.WithCancel(ctx)
	defer cancelCons()
	var consumed atomic.Int64
	e2e := newHist()
	var e2eMu sync.Mutex
	var cwg sync.WaitGroup
	start := time.Now()
	measureFrom := start.Add(w.Warmup)
	measureTo := measureFrom.Add(w.Duration)
	for i := 0; i < w.Consumers; i++ {
		var parts []int32
		for p := i; p < w.Partitions; p += w.Consumers {
			parts = append(parts, int32(p))
		}
		if len(parts) == 0 {
			continue
		}
		c := t.NewConsumer(i, topic, parts)
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			defer c.Close()
			local := newHist()
			defer func() { e2eMu.Lock(); e2e.Merge(local); e2eMu.Unlock() }()
			for cctx.Err() == nil {
				msgs, _ := c.Poll(cctx)
				now := time.Now()
				for _, m := range msgs {
					if !m.SentAt.Before(measureFrom) && m.SentAt.Before(measureTo) {
						_ = local.RecordValue(max(1, now.Sub(m.SentAt).Microseconds()))
					}
				}
				consumed.Add(int64(len(msgs)))
			}
		}()
	}

	// Producers.
	ack := newHist()
	var ackMu sync.Mutex
	secs := int(w.Duration/time.Second) + 1
	perSec := make([]atomic.Int64, secs)
	var sent, acked, ackedBytes, measured, errs atomic.Int64
	var pwg sync.WaitGroup
	for i := 0; i < w.Producers; i++ {
		pr := t.NewProducer(i, w)
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 99))
			var interval time.Duration
			if w.Rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(w.Producers) / float64(w.Rate))
			}
			next := time.Now()
			for n := 0; ; n++ {
				if interval > 0 {
					// Open loop: latency counts from the intended send time,
					// so a stalled target is not hidden (coordinated omission).
					next = start.Add(time.Duration(n) * interval)
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
				} else {
					next = time.Now()
				}
				if !next.Before(measureTo) || ctx.Err() != nil {
					break
				}
				v := payloads[(n*w.Producers+i)%len(payloads)]
				var k []byte
				if len(keys) > 0 {
					k = keys[r.IntN(len(keys))]
				}
				sentAt := next
				size := int64(len(v) + len(k))
				sent.Add(1)
				pr.Send(ctx, topic, k, v, sentAt, func(err error) {
					if err != nil {
						errs.Add(1)
						return
					}
					acked.Add(1)
					if sentAt.Before(measureFrom) {
						return
					}
					now := time.Now()
					measured.Add(1)
					ackedBytes.Add(size)
					if s := int(now.Sub(measureFrom) / time.Second); s >= 0 && s < len(perSec) {
						perSec[s].Add(size)
					}
					ackMu.Lock()
					_ = ack.RecordValue(max(1, now.Sub(sentAt).Microseconds()))
					ackMu.Unlock()
				})
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			if err := pr.Close(cctx); err != nil {
				errs.Add(1)
			}
		}()
	}
	total := w.Warmup + w.Duration
	done := make(chan struct{})
	go func() { pwg.Wait(); close(done) }()
	tick := time.NewTicker(250 * time.Millisecond)
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			progress(min(1, float64(time.Since(start))/float64(total)), fmt.Sprintf("%s %s produce", t.Name(), w.Name))
		}
	}
	tick.Stop()
	lastAck := time.Now()
	// Wait for the tailing consumers to see every acknowledged record.
	deadline := time.Now().Add(60 * time.Second)
	for consumed.Load() < acked.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	cancelCons()
	cwg.Wait()

	res.Records, res.Bytes, res.Errors = measured.Load(), ackedBytes.Load(), errs.Load()
	window := lastAck.Sub(measureFrom).Seconds()
	if window > w.Duration.Seconds() && w.Rate > 0 {
		window = w.Duration.Seconds()
	}
	res.Seconds = window
	if window > 0 {
		res.MiBps = float64(res.Bytes) / (1 << 20) / window
		res.RecordsPerS = float64(res.Records) / window
	}
	res.Ack, res.EndToEnd, res.Consumed = summarize(ack), summarize(e2e), consumed.Load()
	for i := range perSec {
		res.PerSecond = append(res.PerSecond, float64(perSec[i].Load())/(1<<20))
	}
	if acked.Load() < sent.Load()-errs.Load() {
		return res, fmt.Errorf("%s %s: %d records sent, %d acknowledged", t.Name(), w.Name, sent.Load(), acked.Load())
	}

	// Catch-up: a consumer per workload consumer reads the whole topic again.
	progress(1, fmt.Sprintf("%s %s catch-up", t.Name(), w.Name))
	totalRecs := acked.Load()
	var caught, caughtBytes atomic.Int64
	cu0 := time.Now()
	cuctx, cuCancel := context.WithTimeout(ctx, 2*time.Minute)
	var cuwg sync.WaitGroup
	for i := 0; i < w.Consumers; i++ {
		var parts []int32
		for p := i; p < w.Partitions; p += w.Consumers {
			parts = append(parts, int32(p))
		}
		if len(parts) == 0 {
			continue
		}
		c := t.NewConsumer(i, topic, parts)
		cuwg.Add(1)
		go func() {
			defer cuwg.Done()
			defer c.Close()
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
		}()
	}
	cuwg.Wait()
	cuCancel()
	if el := time.Since(cu0).Seconds(); el > 0 {
		res.CatchUpMiB = float64(caughtBytes.Load()) / (1 << 20) / el
		res.CatchUpRec = float64(caught.Load()) / el
	}

	for _, p := range t.Processes() {
		p.CPUSeconds -= cpuBefore[p.Name]
		res.Processes = append(res.Processes, p)
	}
	if isVarve {
		after, err := vt.Counters(ctx)
		if err != nil {
			return res, err
		}
		d := after.Sub(before)
		f := &VarveFigures{Counters: d}
		if d.IngestBytes > 0 {
			gib := d.IngestBytes / (1 << 30)
			f.PutsPerGiB, f.GetsPerGiB = d.Puts/gib, d.Gets/gib
			f.StoredPerGiB = d.ObjectBytes / gib
			f.EtcdBytesPerGiB = float64(d.EtcdDBBytes) / gib
			f.EtcdLiveBytesPerGiB = float64(d.EtcdBytes) / gib
			f.EtcdKeysPerGiB = float64(d.EtcdKeys) / gib
		}
		if d.ObjectBytes > 0 {
			f.Compression = d.IngestBytes / d.ObjectBytes
		}
		res.Varve = f
	}
	return res, nil
}
