package sdk_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/varve-io/varve/bench"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// BenchmarkScanOverConnect scans about 32 MiB of realistic JSON events in
// 4 partitions end to end: the dev node's Connect ScanService streaming
// Arrow IPC, decoded by the SDK's reader. It reports records/s, MB/s of
// uncompressed record bytes and the time to the first batch.
//
//	go test -run '^$' -bench ScanOverConnect -benchtime 5x ./sdk/
func BenchmarkScanOverConnect(b *testing.B) {
	c := sdk.New(addr)
	defer c.Close()
	ctx := context.Background()
	topic := uniq("scanbench")
	if _, err := admin.NewFromClient(c).CreateTopic(ctx, topic, 4, nil); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var raw, records int64
	var batch []sdk.Record
	for i := 0; raw < 32<<20; i++ {
		v := bench.JSONEvent(r, i)
		k := []byte("user-" + strconv.Itoa(i%1000))
		batch = append(batch, sdk.Record{Partition: int32(i % 4), ExplicitPartition: true, Key: k, Value: v})
		raw += int64(len(v) + len(k))
		records++
		if len(batch) == 10000 {
			if _, err := c.Produce(ctx, topic, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if _, err := c.Produce(ctx, topic, batch); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(raw)
	var first time.Duration
	for b.Loop() {
		start := time.Now()
		rd, err := c.Scan(ctx, topic, sdk.ScanOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for rd.Next() {
			if n == 0 {
				first += time.Since(start)
			}
			n += rd.RecordBatch().NumRows()
		}
		if err := rd.Err(); err != nil || n != records {
			b.Fatalf("%d of %d records: %v", n, records, err)
		}
		rd.Release()
	}
	b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(first.Microseconds())/1000/float64(b.N), "ms-first-batch")
}
