package kafka_test

import (
	"context"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/varve-io/varve/node"
)

// throttleHook counts the throttles a client was told of.
type throttleHook struct{ n atomic.Int64 }

func (h *throttleHook) OnBrokerThrottle(_ kgo.BrokerMetadata, d time.Duration, _ bool) {
	if d > 0 {
		h.n.Add(1)
	}
}

// TestKafkaQuotas: a principal's produce and fetch byte rates (the API's
// quotas) hold over Kafka: answers over the rate carry a throttle time and
// the connection waits it out (KIP-219), so 1 MiB at 256 KiB/s takes
// seconds, while the bootstrap admin is not throttled.
func TestKafkaQuotas(t *testing.T) {
	d, a := tokenDev(t, func(c *node.Config) {
		c.Security.Quotas = []string{"alice:produce=256KiB", "alice:fetch=256KiB"}
	})
	createTopic(t, d, "q", 2)
	_, tok := grant(t, a, "alice", "topic:q produce", "topic:q consume")
	hook := &throttleHook{}
	mech := plain.Auth{User: "alice", Pass: tok}.AsMechanism()
	produceEventually(t, func() *kgo.Client {
		return saslClient(t, d, mech)
	}, "q", "first")
	cl := saslClient(t, d, mech, kgo.WithHooks(hook), kgo.DefaultProduceTopic("q"), kgo.ProducerBatchMaxBytes(256<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	val := make([]byte, 32<<10)
	rand.Read(val) // incompressible: quotas count the bytes sent, compressed
	start := time.Now()
	for range 32 { // 1 MiB
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: val}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	if hook.n.Load() == 0 || took < 2*time.Second {
		t.Fatalf("1 MiB at 256 KiB/s took %v with %d throttles: the produce quota did not hold", took, hook.n.Load())
	}
	t.Logf("1 MiB produced in %v, %d throttled answers", took, hook.n.Load())

	// Fetch: reading the same MiB back is throttled too.
	fhook := &throttleHook{}
	rd := saslClient(t, d, mech, kgo.WithHooks(fhook), kgo.ConsumeTopics("q"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxPartitionBytes(128<<10), kgo.FetchMaxBytes(128<<10))
	got := 0
	start = time.Now()
	for got < 33 {
		fs := rd.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		got += fs.NumRecords()
	}
	if fhook.n.Load() == 0 {
		t.Fatalf("1 MiB fetched in %v with no throttle: the fetch quota did not hold", time.Since(start))
	}
	t.Logf("1 MiB fetched in %v, %d throttled answers", time.Since(start), fhook.n.Load())

	// The bootstrap admin has no quota.
	ah := &throttleHook{}
	admin := saslClient(t, d, plain.Auth{User: "admin", Pass: kafkaBootstrap}.AsMechanism(), kgo.WithHooks(ah), kgo.DefaultProduceTopic("q"))
	for range 32 {
		if err := admin.ProduceSync(ctx, &kgo.Record{Value: val}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if ah.n.Load() != 0 {
		t.Fatalf("the bootstrap admin was throttled %d times", ah.n.Load())
	}
}
