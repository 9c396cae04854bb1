package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TargetVarveMinIO1Kafka is varve-minio-1 with the node's Kafka listener
// on (--kafka-listen): the same node, etcd and MinIO, but the producers
// and consumers are franz-go clients of the Kafka protocol instead of the
// Go SDK over Connect (not in the profiles: ask for it with --targets).
const TargetVarveMinIO1Kafka = "varve-minio-1-kafka"

// kafkaCompression is the Kafka producers' batch compression: zstd, the
// codec the nodes write the Connect producers' records with, so both
// targets store alike (franz-go's default would be snappy).
var kafkaCompression = kgo.ZstdCompression()

// kafkaProducer is a franz-go producer as an application configures one
// for durability: idempotent (franz-go's default: acks=all, one producer
// id, up to 5 produce requests in flight per broker), batches lingering as
// the SDK's do, at most producerBuffer bytes buffered.
type kafkaProducer struct {
	st  *produceStats
	cl  *kgo.Client
	err error // the client could not be made: every Send fails with it
}

func (p *kafkaProducer) rpcStats() *produceStats { return p.st }

// newKafkaProducer returns a producer bootstrapped through the Kafka
// listener at addr (host:port).
func newKafkaProducer(addr string, w Workload) *kafkaProducer {
	st := newProduceStats()
	opts := []kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(w.Linger),
		kgo.MaxBufferedBytes(producerBuffer),
		kgo.ProducerBatchCompression(kafkaCompression),
		kgo.WithHooks(&kafkaHooks{st: st, inflight: map[int32]int{}}),
	}
	if w.MaxBatchBytes > 0 {
		opts = append(opts, kgo.ProducerBatchMaxBytes(int32(w.MaxBatchBytes)))
	}
	cl, err := kgo.NewClient(opts...)
	return &kafkaProducer{st: st, cl: cl, err: err}
}

func (p *kafkaProducer) Send(ctx context.Context, topic string, key, value []byte, sentAt time.Time, ack func(error)) {
	if p.err != nil {
		ack(p.err)
		return
	}
	p.cl.Produce(ctx, &kgo.Record{Topic: topic, Key: key, Value: value, Headers: []kgo.RecordHeader{{Key: tsHeader, Value: encodeTS(sentAt)}}},
		func(_ *kgo.Record, err error) { ack(err) })
}

func (p *kafkaProducer) Close(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	err := p.cl.Flush(ctx)
	p.cl.Close()
	return err
}

// kafkaHooks feed a producer's produceStats from franz-go's hooks: every
// Produce request's round trip (written to answer read), the requests
// that failed (by error), and how many of the producer's requests were in
// flight to the broker when each was written.
type kafkaHooks struct {
	st       *produceStats
	mu       sync.Mutex
	inflight map[int32]int // broker node id -> produce requests written, not yet answered
}

var (
	_ kgo.HookBrokerWrite = (*kafkaHooks)(nil)
	_ kgo.HookBrokerRead  = (*kafkaHooks)(nil)
	_ kgo.HookBrokerE2E   = (*kafkaHooks)(nil)
)

const produceKey = 0 // the Produce API key

func (h *kafkaHooks) OnBrokerWrite(m kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if key != produceKey || err != nil {
		return
	}
	h.mu.Lock()
	h.inflight[m.NodeID]++
	n := h.inflight[m.NodeID]
	h.mu.Unlock()
	h.st.mu.Lock()
	_ = h.st.inflight.RecordValue(int64(n))
	h.st.mu.Unlock()
}

func (h *kafkaHooks) OnBrokerRead(m kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, _ error) {
	if key != produceKey {
		return
	}
	h.mu.Lock()
	if h.inflight[m.NodeID] > 0 {
		h.inflight[m.NodeID]--
	}
	h.mu.Unlock()
}

func (h *kafkaHooks) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e kgo.BrokerE2E) {
	if key != produceKey {
		return
	}
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	_ = h.st.rpc.RecordValue(max(1, e.DurationE2E().Microseconds()))
	if err := e.Err(); err != nil {
		h.st.failed[kafkaErrClass(err)]++
	}
}

// kafkaErrClass names a failed request's error in the report's codes.
func kafkaErrClass(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "kafka timeout"
	case errors.Is(err, context.Canceled):
		return "kafka canceled"
	}
	return "kafka connection"
}

// kafkaConsumer reads assigned partitions from the start through the
// Kafka listener at addr: franz-go's defaults (at most 50 MiB per fetch,
// 1 MiB per partition) but the SDK consumer's 200 ms max wait.
type kafkaConsumer struct {
	cl  *kgo.Client
	err error
}

func newKafkaConsumer(addr, topic string, partitions []int32) *kafkaConsumer {
	offs := make(map[int32]kgo.Offset, len(partitions))
	for _, p := range partitions {
		offs[p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}),
		kgo.FetchMaxWait(200*time.Millisecond))
	return &kafkaConsumer{cl: cl, err: err}
}

func (c *kafkaConsumer) Poll(ctx context.Context) ([]Msg, error) {
	if c.err != nil {
		// Not busy-looping on a client that could not be made.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return nil, c.err
	}
	fs := c.cl.PollFetches(ctx)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	out := make([]Msg, 0, fs.NumRecords())
	fs.EachRecord(func(r *kgo.Record) {
		m := Msg{Bytes: len(r.Value) + len(r.Key)}
		for _, h := range r.Headers {
			if h.Key == tsHeader {
				m.SentAt = decodeTS(h.Value)
			}
		}
		out = append(out, m)
	})
	var errs []string
	fs.EachError(func(t string, p int32, err error) { errs = append(errs, fmt.Sprintf("%s/%d: %v", t, p, err)) })
	if len(errs) > 0 {
		return out, errors.New("kafka fetch: " + strings.Join(errs, "; "))
	}
	return out, nil
}

func (c *kafkaConsumer) Close() {
	if c.cl != nil {
		c.cl.Close()
	}
}

// waitTCP waits until addr accepts connections, the process exits, or
// timeout passes.
func waitTCP(addr string, p *Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited before %s accepted: %s", p.Name, addr, p.LogTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting after %v: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
