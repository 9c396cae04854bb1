package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varve-io/varve/metadata"
)

// TestIdempotentProduceConsume: franz-go's idempotent producer writes keys,
// values and headers to every partition, and a franz-go consumer reads
// each back at the offset its produce was acknowledged with.
func TestIdempotentProduceConsume(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "orders", 8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pr := newClient(t, d, kgo.DefaultProduceTopic("orders"), kgo.ProducerLinger(5*time.Millisecond))
	const n = 2000
	type at struct {
		p   int32
		off int64
	}
	acked := map[string]at{}
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i%97)), Value: []byte(fmt.Sprintf("v%d", i)),
			Headers: []kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}}})
	}
	res := pr.ProduceSync(ctx, recs...)
	for _, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		acked[string(r.Record.Value)] = at{r.Record.Partition, r.Record.Offset}
	}
	cl := newClient(t, d, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]bool{}
	for len(seen) < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("poll after %d records: %v", len(seen), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			want, ok := acked[v]
			if !ok || want.p != r.Partition || want.off != r.Offset {
				t.Fatalf("record %s at %d/%d, acknowledged at %v", v, r.Partition, r.Offset, want)
			}
			if seen[v] {
				t.Fatalf("record %s twice", v)
			}
			if len(r.Headers) != 1 || r.Headers[0].Key != "i" || "v"+string(r.Headers[0].Value) != v {
				t.Fatalf("record %s headers %v", v, r.Headers)
			}
			seen[v] = true
		})
	}
}

// TestTwoNodes: a producer bootstrapped through one node and a consumer
// through the other see the same log; Metadata lists both brokers.
func TestTwoNodes(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := nodes[0].Meta().CreateTopic(ctx, metadata.Topic{Name: "two", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	pr, err := kgo.NewClient(kgo.SeedBrokers(nodes[0].KafkaAddr()), kgo.DefaultProduceTopic("two"))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	for i := range 100 {
		if err := pr.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(nodes[1].KafkaAddr()), kgo.ConsumeTopics("two"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := 0
	for got < 100 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		got += fs.NumRecords()
	}
	if got != 100 {
		t.Fatalf("%d records, want 100", got)
	}
	brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
	if err != nil || len(brokers) != 2 {
		t.Fatalf("brokers %v, %v; want both nodes", brokers, err)
	}
}

// TestPipelinedOrder: producers with several requests in flight on one
// connection — idempotent (handled at once, ordered by sequence) and not
// (handled one at a time) — keep their records' order in the partition.
func TestPipelinedOrder(t *testing.T) {
	d := startDev(t, nodeConfig())
	for _, idem := range []bool{true, false} {
		topic := fmt.Sprintf("order-%v", idem)
		createTopic(t, d, topic, 2)
		opts := []kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(time.Millisecond), kgo.MaxBufferedRecords(100000),
			kgo.ProducerBatchMaxBytes(16 << 10), kgo.RecordPartitioner(kgo.ManualPartitioner())}
		if !idem {
			opts = append(opts, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(5), kgo.RequiredAcks(kgo.LeaderAck()))
		}
		pr := newClient(t, d, opts...)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		const n = 5000
		var wg sync.WaitGroup
		var mu sync.Mutex
		var failed error
		for i := range n {
			wg.Add(1)
			pr.Produce(ctx, &kgo.Record{Partition: int32(i % 2), Value: fmt.Appendf(nil, "%06d", i)}, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
				wg.Done()
			})
		}
		wg.Wait()
		if failed != nil {
			t.Fatal(failed)
		}
		cl := newClient(t, d, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		last := map[int32]string{}
		got := 0
		for got < n {
			fs := cl.PollFetches(ctx)
			if err := fs.Err0(); err != nil {
				t.Fatalf("idempotent %v: poll after %d: %v", idem, got, err)
			}
			fs.EachRecord(func(r *kgo.Record) {
				if v := string(r.Value); v <= last[r.Partition] {
					t.Fatalf("idempotent %v: partition %d: %s at offset %d after %s", idem, r.Partition, v, r.Offset, last[r.Partition])
				}
				last[r.Partition] = string(r.Value)
				got++
			})
		}
		cancel()
	}
}
