package kafka_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkKafkaProduce: an idempotent franz-go producer (acks=all, 5
// requests in flight) writes 1 KiB records to 8 partitions of varve dev as
// fast as acknowledgements come; it reports records/s and the p50 and p99
// of each record's produce-to-acknowledgement time.
//
//	go test -run XXX -bench KafkaProduce -benchtime 20000x ./kafka/
func BenchmarkKafkaProduce(b *testing.B) {
	d := startDev(b, nodeConfig())
	createTopic(b, d, "bench", 8)
	cl := newClient(b, d, kgo.DefaultProduceTopic("bench"), kgo.ProducerLinger(2*time.Millisecond))
	ctx := context.Background()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("warm")}).FirstErr(); err != nil {
		b.Fatal(err)
	}
	val := make([]byte, 1024)
	lat := make([]time.Duration, 0, b.N)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var failed error
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		wg.Add(1)
		at := time.Now()
		cl.Produce(ctx, &kgo.Record{Value: val}, func(_ *kgo.Record, err error) {
			mu.Lock()
			lat = append(lat, time.Since(at))
			if err != nil {
				failed = err
			}
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
