package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
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
