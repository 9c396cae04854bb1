package sdk_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// A producer batches records and calls back once each is durable; a consumer
// reads them back from the start.
func Example() {
	ctx := context.Background()
	c := sdk.New("http://127.0.0.1:7700")
	defer c.Close()
	// Topics are managed by the admin client, which shares c's transport.
	if _, err := admin.NewFromClient(c).CreateTopic(ctx, "clicks", 3, nil); err != nil {
		log.Fatal(err)
	}

	p := c.NewProducer(sdk.ProducerOptions{})
	p.Produce(ctx, sdk.Record{Topic: "clicks", Key: []byte("user-1"), Value: []byte(`{"page":"/"}`)},
		func(r sdk.Record, err error) {
			if err != nil {
				log.Print(err)
				return
			}
			fmt.Println("stored at", r.Partition, r.Offset)
		})
	if err := p.Close(ctx); err != nil { // flushes and waits for every callback
		log.Fatal(err)
	}

	cons := c.NewConsumer("clicks", sdk.ConsumerOptions{})
	defer cons.Close()
	if err := cons.SeekToStart(ctx); err != nil {
		log.Fatal(err)
	}
	recs, err := cons.Poll(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		fmt.Println(r.Partition, r.Offset, string(r.Value))
	}
}

// Hooks plug metrics into the client without forking it: here counters of
// records and bytes produced and fetched, and the produce latency. A
// Prometheus or OpenTelemetry recorder goes in the same place. The logger
// receives retries, producer ids, offset resets and rebalances.
func ExampleWithHooks() {
	var producedRecords, producedBytes, fetchedBytes, errs atomic.Int64
	var slowest atomic.Int64 // nanoseconds
	c := sdk.New("http://127.0.0.1:7700",
		sdk.WithLogger(slog.Default()),
		sdk.WithHooks(sdk.Hooks{
			OnProduceBatch: func(e sdk.ProduceBatchEvent) {
				if e.Err != nil {
					errs.Add(1)
					return
				}
				producedRecords.Add(int64(e.Records))
				producedBytes.Add(int64(e.Bytes))
				for {
					old := slowest.Load()
					if int64(e.Latency) <= old || slowest.CompareAndSwap(old, int64(e.Latency)) {
						break
					}
				}
			},
			OnFetch: func(e sdk.FetchEvent) {
				if e.Err == nil {
					fetchedBytes.Add(int64(e.Bytes))
				}
			},
		}))
	defer c.Close()
	// Use c as usual: every Produce and Fetch request is counted.
	fmt.Println(producedRecords.Load(), producedBytes.Load(), fetchedBytes.Load(), errs.Load(), time.Duration(slowest.Load()))
}
