package sdk

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"syscall"
	"testing"
	"time"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// benchPending returns about 1 MiB of records (one full produce request
// at the default MaxBatchBytes) spread over 8 partitions as the bench's
// producers send them: json-like events or random 1 KiB values, a key and
// one header each.
func benchPending(kind string) ([]*pendingRecord, []int32) {
	rng := rand.New(rand.NewSource(5))
	var batch []*pendingRecord
	var parts []int32
	ts := time.UnixMilli(1767225600000)
	for size := 0; size < 1<<20; {
		var v []byte
		if kind == "random" {
			v = make([]byte, 1024)
			rng.Read(v)
		} else {
			v = fmt.Appendf(nil, `{"event_id":"%016x","user_id":%d,"type":"%s","url":"/products/%d","session":{"device":"%s","os":"%s","page":%d},"props":{"price":%d.%02d,"currency":"EUR"}}`,
				rng.Uint64(), 10000+rng.Intn(90000), []string{"click", "page_view", "purchase"}[rng.Intn(3)], rng.Intn(1e6),
				[]string{"mobile", "desktop"}[rng.Intn(2)], []string{"ios", "android", "linux"}[rng.Intn(3)], rng.Intn(40), rng.Intn(500), rng.Intn(100))
		}
		r := Record{Topic: "bench", Key: fmt.Appendf(nil, "%d", rng.Intn(10000)), Value: v,
			Headers:   []Header{{Key: "ts", Value: binary.BigEndian.AppendUint64(nil, uint64(rng.Int63()))}},
			Timestamp: ts.Add(time.Duration(len(batch)) * time.Microsecond)}
		batch = append(batch, &pendingRecord{rec: r, part: -1, size: len(v) + len(r.Key) + 12})
		parts = append(parts, int32(rng.Intn(8)))
		size += len(v) + len(r.Key) + 12
	}
	return batch, parts
}

// BenchmarkBuildBatch is a producer's work for one produce request: sort
// the records by partition, encode each partition's records as Kafka
// RecordBatch v2 and zstd-compress them (batchRequest). MB/s are of the
// records' keys, values and headers.
func BenchmarkBuildBatch(b *testing.B) {
	for _, kind := range []string{"json", "random"} {
		b.Run(kind, func(b *testing.B) {
			batch, parts := benchPending(kind)
			size := 0
			for _, p := range batch {
				size += p.size
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			var req varvev1.ProduceRequest
			wire := 0
			cpu0 := cpuTime()
			for b.Loop() {
				if err := batchRequest(&req, batch, parts, nil); err != nil {
					b.Fatal(err)
				}
				wire = 0
				for _, e := range req.Batches {
					wire += len(e.RecordBatches)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(size)/float64(wire), "ratio")
		})
	}
}

// BenchmarkDecodeFetched is a consumer's decoding of fetched record
// batches (what the bench's consumers do with every fetch). MB/s are of
// the records' keys, values and headers.
func BenchmarkDecodeFetched(b *testing.B) {
	for _, kind := range []string{"json", "random"} {
		b.Run(kind, func(b *testing.B) {
			batch, parts := benchPending(kind)
			for i := range parts {
				parts[i] = 0 // one partition: one fetch's batches
			}
			var req varvev1.ProduceRequest
			if err := batchRequest(&req, batch, parts, nil); err != nil {
				b.Fatal(err)
			}
			fetched := req.Batches[0].RecordBatches
			size := 0
			for _, p := range batch {
				size += p.size
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				recs, err := decodeFetched("bench", 0, fetched, 0)
				if err != nil || len(recs) != len(batch) {
					b.Fatal(len(recs), err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time so far: benchmarks
// report it per operation (cpu-ns/op), which a machine shared with other
// work disturbs less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
