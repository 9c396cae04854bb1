package scan_test

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/varve-io/varve/bench"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/parquet"
	"github.com/varve-io/varve/scan"
	"github.com/varve-io/varve/tier/segment"
)

type benchData struct {
	e       *scanEnv
	records int64
	raw     int64 // uncompressed record bytes (sum of the index's RawBytes)
	stored  int64 // segment bytes in object storage
	entries []metadata.IndexEntry
	topic   string
}

// loadBench fills a topic of 8 partitions with about mib MiB of realistic
// JSON events (bench.JSONEvent) in 8 MiB flushes.
func loadBench(b *testing.B, mib int) *benchData {
	b.Helper()
	e := newScanEnv(b)
	ctx := context.Background()
	const parts = 8
	topic := "bench"
	if _, err := e.meta.CreateTopic(ctx, metadata.Topic{Name: topic, Partitions: parts}); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var batch []ingest.Record
	size, total := 0, 0
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		done := make(chan error, 1)
		recs := batch
		go func() { _, err := e.in.Produce(ctx, topic, recs); done <- err }()
		for {
			if _, n := e.in.Pending(); n == int64(len(recs)) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := e.in.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		batch, size = nil, 0
	}
	count := 0
	for i := 0; total < mib<<20; i++ {
		count++
		v := bench.JSONEvent(r, i)
		batch = append(batch, ingest.Record{Partition: int32(i % parts), Record: segment.Record{Key: []byte("user-" + strconv.Itoa(i%1000)), Value: v, Timestamp: ts + int64(i)}})
		size += len(v) + 10
		total += len(v) + 10
		if size >= 8<<20 {
			flush()
		}
	}
	flush()
	// The watched index trails the last commit by a moment.
	produced := int64(0)
	for {
		produced = 0
		for p := range int32(parts) {
			produced += e.index.Partition(topic, p).State.Next
		}
		if produced == int64(count) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	d := &benchData{e: e, topic: topic}
	for p := range int32(parts) {
		for _, en := range e.index.Entries(topic, p, 0, 0) {
			d.entries = append(d.entries, en)
			d.records += en.Records
			d.raw += en.RawBytes
			d.stored += en.Len
		}
	}
	return d
}

// BenchmarkScan reports, on the same data in the same run: a full Scan
// (ranged GETs from the filesystem store, decode, Arrow) in records/s and
// MiB/s of uncompressed records, time to first batch, the raw ranged GET +
// zstd decompression + record decode of the same blocks on every core
// (the floor a scan cannot beat), and Parquet export speed and size.
//
//	go test -run '^$' -bench Scan -benchtime 5x ./scan/
func BenchmarkScan(b *testing.B) {
	d := loadBench(b, 64)
	ctx := context.Background()
	b.Logf("data: %d records, %.1f MiB raw, %.1f MiB stored in %d blocks", d.records, mb(d.raw), mb(d.stored), len(d.entries))

	// The same scan through the new decode path (segment.VisitBlock and
	// direct column writers) and the old one (DecodeBlock, then Arrow
	// builders), in the same run. peak-heap-MiB is the Go heap in use at
	// its highest while scanning (sampled every 5 ms) minus before.
	scanBench := func(legacy bool, cols []string) func(b *testing.B) {
		return func(b *testing.B) {
			scan.UseLegacyScanDecode(legacy)
			defer scan.UseLegacyScanDecode(false)
			var first, setup time.Duration
			peak := newHeapPeak()
			cpu0 := cpuTime()
			b.SetBytes(d.raw)
			for b.Loop() {
				start := time.Now()
				sc, err := d.e.r.Scan(ctx, scan.Request{Topic: d.topic, Columns: cols, Alloc: memory.NewGoAllocator()})
				if err != nil {
					b.Fatal(err)
				}
				setup += time.Since(start)
				var n int64
				for sc.Next() {
					if n == 0 {
						first += time.Since(start)
					}
					n += sc.RecordBatch().NumRows()
				}
				if err := sc.Err(); err != nil || n != d.records {
					b.Fatalf("%d records: %v", n, err)
				}
				sc.Release()
			}
			peak.stop()
			b.ReportMetric((cpuTime()-cpu0).Seconds()/b.Elapsed().Seconds(), "cores")
			b.ReportMetric(float64(d.records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(first.Microseconds())/1000/float64(b.N), "ms-first-batch")
			b.ReportMetric(peak.mib(), "peak-heap-MiB")
			// Scan's own start: the linearizable read of the high
			// watermarks and the plan's block count, before any read.
			b.ReportMetric(float64(setup.Microseconds())/1000/float64(b.N), "ms-setup")
		}
	}
	b.Run("scan", scanBench(false, nil))
	b.Run("scan-legacy", scanBench(true, nil))

	b.Run("visit-only", func(b *testing.B) {
		// GetRange + VisitBlock of every block (no Arrow), as many at a
		// time as a scan reads by default.
		b.SetBytes(d.raw)
		for b.Loop() {
			sem := make(chan struct{}, max(4, 2*runtime.GOMAXPROCS(0)))
			var wg sync.WaitGroup
			for _, en := range d.entries {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					buf, err := d.e.store.GetRange(ctx, en.Object, en.Off, en.Len)
					if err == nil {
						_, err = segment.VisitBlock(buf, en.Base, func(*segment.RecordView) error { return nil })
					}
					if err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
		}
		b.ReportMetric(float64(d.records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})

	b.Run("decode-only", func(b *testing.B) {
		// GetRange + DecodeBlock of every block, as many at a time as a
		// scan reads by default.
		b.SetBytes(d.raw)
		cpu0 := cpuTime()
		defer func() { b.ReportMetric((cpuTime()-cpu0).Seconds()/b.Elapsed().Seconds(), "cores") }()
		for b.Loop() {
			sem := make(chan struct{}, max(4, 2*runtime.GOMAXPROCS(0)))
			var wg sync.WaitGroup
			for _, en := range d.entries {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					buf, err := d.e.store.GetRange(ctx, en.Object, en.Off, en.Len)
					if err == nil {
						_, err = segment.DecodeBlock(buf)
					}
					if err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
		}
		b.ReportMetric(float64(d.records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	})

	b.Run("scan-typed", func(b *testing.B) {
		// The same data with a topic schema: every value parsed into
		// eight typed columns (strings, int64, a timestamp, a struct).
		if _, err := d.e.meta.UpdateTopic(ctx, d.topic, func(t *metadata.Topic) error {
			t.Schema = &metadata.TopicSchema{Format: metadata.SchemaJSON, Fields: benchSchema}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		defer d.e.meta.UpdateTopic(ctx, d.topic, func(t *metadata.Topic) error { t.Schema = nil; return nil })
		if !testenv.Eventually(10*time.Second, func() bool { t, _ := d.e.index.Topic(d.topic); return t.Schema != nil }) {
			b.Fatal("the index did not see the schema")
		}
		scanBench(false, nil)(b)
	})

	b.Run("parquet-export", func(b *testing.B) {
		b.SetBytes(d.raw)
		var size int64
		for b.Loop() {
			dir := b.TempDir()
			sc, err := d.e.r.Scan(ctx, scan.Request{Topic: d.topic})
			if err != nil {
				b.Fatal(err)
			}
			files, err := parquet.ExportDir(ctx, sc, dir, parquet.Options{})
			sc.Release()
			if err != nil {
				b.Fatal(err)
			}
			size = 0
			for _, f := range files {
				size += f.Bytes
			}
			os.RemoveAll(dir)
		}
		b.ReportMetric(mb(size), "parquet-MiB")
		b.ReportMetric(mb(d.stored), "segment-MiB")
	})

	b.Run("parquet-single-file", func(b *testing.B) {
		b.SetBytes(d.raw)
		for b.Loop() {
			sc, err := d.e.r.Scan(ctx, scan.Request{Topic: d.topic})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := parquet.Write(io.Discard, sc, parquet.Options{}); err != nil {
				b.Fatal(err)
			}
			sc.Release()
		}
	})
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// benchSchema describes bench.JSONEvent.
const benchSchema = `[{"name":"event_id","type":"utf8"},{"name":"user_id","type":"int64"},
{"name":"ts","type":"timestamp[ms]"},{"name":"type","type":"utf8"},{"name":"url","type":"utf8"},
{"name":"session","type":"struct<id: utf8, device: utf8, country: utf8>"},
{"name":"props","type":"struct<price: float64, quantity: int32, currency: utf8, experiment: utf8>"}]`

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapPeak samples the Go heap in use every 5 ms until stop.
type heapPeak struct {
	base, peak uint64
	done       chan struct{}
	wg         sync.WaitGroup
}

func newHeapPeak() *heapPeak {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapPeak{base: ms.HeapInuse, peak: ms.HeapInuse, done: make(chan struct{})}
	h.wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.done:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				h.peak = max(h.peak, ms.HeapInuse)
			}
		}
	})
	return h
}

func (h *heapPeak) stop() { close(h.done); h.wg.Wait() }

func (h *heapPeak) mib() float64 { return float64(h.peak-h.base) / (1 << 20) }
