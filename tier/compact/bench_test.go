package compact

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/metrics"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// benchEvent is a JSON click event of about 450 bytes with random ids.
func benchEvent(rng *rand.Rand, ts int64) []byte {
	return fmt.Appendf(nil, `{"event_id":"%016x%016x","user_id":%d,"ts":%d,"type":"%s","url":"/products/%s/item-%d","session":{"id":"%016x","device":"%s","country":"%s","page":%d},"props":{"price":%d.%02d,"currency":"USD","quantity":%d},"client":{"app_version":"3.%d.%d","sdk":"varve-js/1.4.2"},"pad":"%s"}`,
		rng.Uint64(), rng.Uint64(), 10000+rng.IntN(90000), ts, []string{"page_view", "click", "add_to_cart", "purchase"}[rng.IntN(4)],
		[]string{"shoes", "books", "garden", "kitchen"}[rng.IntN(4)], rng.IntN(1000000), rng.Uint64(),
		[]string{"mobile", "desktop", "tablet"}[rng.IntN(3)], []string{"US", "DE", "FR", "JP"}[rng.IntN(4)], rng.IntN(40),
		rng.IntN(500), rng.IntN(100), 1+rng.IntN(4), rng.IntN(20), rng.IntN(10), "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor")
}

// ingestBench writes about rawBytes of events over parts partitions in
// flushes of flushBytes (one level-0 object each, one block per partition)
// and returns the records' encoded size.
func ingestBench(b *testing.B, e *env, topic string, parts, flushBytes, rawBytes int) int64 {
	rng := rand.New(rand.NewPCG(7, 7))
	var total int64
	ts := time.Now().UnixMilli()
	for total < int64(rawBytes) {
		var recs []ingest.Record
		for size := 0; size < flushBytes; {
			ts++
			r := ingest.Record{Partition: rng.Int32N(int32(parts)), Record: segment.Record{Key: fmt.Appendf(nil, "u%d", rng.IntN(100000)), Value: benchEvent(rng, ts), Timestamp: ts}}
			recs = append(recs, r)
			size += segment.EncodedSize(r.Record)
		}
		if _, err := e.in.Produce(context.Background(), topic, recs); err != nil {
			b.Fatal(err)
		}
		for _, r := range recs {
			total += int64(segment.EncodedSize(r.Record)) - 9
		}
	}
	return total
}

// footprint counts index keys and the objects they reference (the bucket
// holds more until garbage collection deletes the replaced ones).
func footprint(b *testing.B, e *env, topic string, parts int) (keys, objects int) {
	refs := map[string]bool{}
	for p := range int32(parts) {
		es, _, err := e.meta.IndexEntries(context.Background(), topic, p)
		if err != nil {
			b.Fatal(err)
		}
		keys += len(es)
		for _, en := range es {
			refs[en.Object] = true
		}
	}
	return keys, len(refs)
}

// BenchmarkCompact measures L0→L1 compaction of about 64 MiB of JSON
// events ingested in 1 MiB flushes over 8 partitions, against a real MinIO
// and etcd: MB/s are uncompressed input bytes; the metrics give index keys
// and objects per GiB ingested before and after. input=v3 is what ingest
// writes (version 3 blocks: the batches are copied), input=v1 segments
// written before block version 3 (the records are encoded into batches).
//
//	go test -run '^$' -bench Compact -benchtime 3x -benchmem ./tier/compact/
func BenchmarkCompact(b *testing.B) {
	for _, input := range []string{"v3", "v1"} {
		b.Run("input="+input, func(b *testing.B) { benchCompact(b, input == "v1") })
	}
}

func benchCompact(b *testing.B, old bool) {
	const parts, raw = 8, 64 << 20
	var keysBefore, objsBefore, keysAfter, objsAfter int
	var rawTotal int64
	var cpu float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := newEnv(b)
		topic := fmt.Sprintf("bench%d", i)
		if _, err := e.meta.CreateTopic(context.Background(), metadata.Topic{Name: topic, Partitions: parts}); err != nil {
			b.Fatal(err)
		}
		var rawBytes int64
		if old {
			rawBytes = ingestBenchOld(b, e, topic, parts, 1<<20, raw)
		} else {
			rawBytes = ingestBench(b, e, topic, parts, 1<<20, raw)
		}
		rawTotal = rawBytes
		keysBefore, objsBefore = footprint(b, e, topic, parts)
		c, err := New(Config{NodeID: "bench", TargetBytes: 64 << 20, MinEntries: 16}, e.rec, e.meta, e.cache, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		e.waitCache(b)
		b.SetBytes(rawBytes)
		cpu0 := processCPU()
		b.StartTimer()
		st, err := c.RunOnce(context.Background())
		b.StopTimer()
		cpu += processCPU() - cpu0
		if err != nil || st.RecordsIn != st.RecordsOut || st.Jobs == 0 {
			b.Fatalf("compaction: %+v %v", st, err)
		}
		keysAfter, objsAfter = footprint(b, e, topic, parts)
		c.Close()
		b.ReportMetric(float64(st.BytesRead)/float64(st.BytesWritten), "stored-in/out")
	}
	gib := float64(rawTotal) / (1 << 30)
	b.ReportMetric(float64(keysBefore)/gib, "keys/GiB-before")
	b.ReportMetric(float64(keysAfter)/gib, "keys/GiB-after")
	b.ReportMetric(float64(objsBefore)/gib, "objects/GiB-before")
	b.ReportMetric(float64(objsAfter)/gib, "objects/GiB-after")
	b.ReportMetric(cpu/float64(b.N)/(float64(rawTotal)/(1<<20))*1000, "cpu-ms/MiB")
}

// processCPU is the CPU time this process's Go code has used (user and
// GC, runtime/metrics' estimate; the embedded etcd is counted, MinIO is
// another process).
func processCPU() float64 {
	s := []metrics.Sample{{Name: "/cpu/classes/user:cpu-seconds"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	return s[0].Value.Float64() + s[1].Value.Float64()
}

// ingestBenchOld is ingestBench with segments of version 1 blocks, as
// ingest wrote them before block version 3.
func ingestBenchOld(b *testing.B, e *env, topic string, parts, flushBytes, rawBytes int) int64 {
	rng := rand.New(rand.NewPCG(7, 7))
	var total int64
	ts := time.Now().UnixMilli()
	for total < int64(rawBytes) {
		recs := map[int32][]segment.Record{}
		for size := 0; size < flushBytes; {
			ts++
			p := rng.Int32N(int32(parts))
			r := segment.Record{Key: fmt.Appendf(nil, "u%d", rng.IntN(100000)), Value: benchEvent(rng, ts), Timestamp: ts}
			recs[p] = append(recs[p], r)
			size += segment.EncodedSize(r)
			total += int64(segment.EncodedSize(r)) - 9
		}
		commitOld(b, e, topic, recs)
	}
	return total
}

// BenchmarkProduceDuringCompaction measures the ack latency of 64 KiB
// produce batches while a compactor rewrites the log in a loop (and, for
// comparison, without one).
//
//	go test -run '^$' -bench ProduceDuringCompaction -benchtime 400x ./tier/compact/
func BenchmarkProduceDuringCompaction(b *testing.B) {
	for _, compacting := range []bool{false, true} {
		b.Run(fmt.Sprintf("compacting=%v", compacting), func(b *testing.B) {
			const parts = 8
			e := newEnv(b)
			if _, err := e.meta.CreateTopic(context.Background(), metadata.Topic{Name: "lat", Partitions: parts}); err != nil {
				b.Fatal(err)
			}
			ingestBench(b, e, "lat", parts, 1<<20, 32<<20)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var compactedBytes int64
			if compacting {
				c, err := New(Config{NodeID: "bench", TargetBytes: 64 << 20, MinEntries: 4}, e.rec, e.meta, e.cache, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				wg.Go(func() {
					for ctx.Err() == nil {
						st, _ := c.RunOnce(ctx)
						compactedBytes += st.BytesRead
						if st.Jobs == 0 {
							select {
							case <-ctx.Done():
							case <-time.After(10 * time.Millisecond):
							}
						}
					}
				})
			}
			rng := rand.New(rand.NewPCG(1, 1))
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var recs []ingest.Record
				for size := 0; size < 64<<10; {
					r := ingest.Record{Partition: rng.Int32N(parts), Record: segment.Record{Value: benchEvent(rng, int64(i)), Timestamp: int64(i) + 1}}
					recs = append(recs, r)
					size += segment.EncodedSize(r.Record)
				}
				start := time.Now()
				if _, err := e.in.Produce(ctx, "lat", recs); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			cancel()
			wg.Wait()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(compactedBytes)/(1<<20), "MiB-compacted")
		})
	}
}
