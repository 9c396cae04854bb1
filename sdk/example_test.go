package sdk_test

import (
	"context"
	"fmt"
	"log"

	"github.com/varve-io/varve/sdk"
)

// A producer batches records and calls back once each is durable; a consumer
// reads them back from the start.
func Example() {
	ctx := context.Background()
	c := sdk.New("http://127.0.0.1:7700")
	defer c.Close()
	if _, err := c.CreateTopic(ctx, "clicks", 3, nil); err != nil {
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
