package sdk

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// ProduceBatchEvent describes one Produce request: a Producer's batch
// attempt (a retried batch gives one event per attempt) or a
// Client.Produce call.
type ProduceBatchEvent struct {
	Topic string
	// Records and Bytes (keys, values and headers) of the batch.
	Records int
	Bytes   int
	// Latency is the request's round trip.
	Latency time.Duration
	// Err is the request's error; nil when the batch was stored.
	Err error
}

// FetchEvent describes one partition's fetch: a Client.Fetch call, or
// one partition of a Consumer's or GroupConsumer's FetchPartitions call
// (which fetches all its partitions at once: one event per partition,
// each with the call's Latency and the call's error if it failed whole).
// Tail's stream gives none.
type FetchEvent struct {
	Topic     string
	Partition int32
	// Records and Bytes (keys, values and headers) returned.
	Records int
	Bytes   int
	// Latency is the request's round trip, long-poll wait included.
	Latency time.Duration
	Err     error
}

// Hooks are functions the client calls on events, so that metrics and
// logging plug in without forking the SDK (as franz-go's kgo.WithHooks).
// Nil fields are skipped. Hooks run synchronously on the goroutine that
// made the request: keep them fast, and safe for concurrent use.
type Hooks struct {
	// OnProduceBatch is called after every Produce request.
	OnProduceBatch func(ProduceBatchEvent)
	// OnFetch is called after every partition's fetch.
	OnFetch func(FetchEvent)
}

// WithHooks adds hooks to the client; with several, each is called in the
// order given.
func WithHooks(h Hooks) Option {
	return func(c *clientConfig) { c.hooks = append(c.hooks, h) }
}

// WithLogger makes the client log to l: retries, producer id changes,
// offset resets and group rebalances. By default it logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(c *clientConfig) { c.log = l }
}

// produceRPC sends one Produce request of n records of the given bytes
// and reports it to the hooks.
func (c *Client) produceRPC(ctx context.Context, req *varvev1.ProduceRequest, bytes int) (*connect.Response[varvev1.ProduceResponse], error) {
	start := time.Now()
	res, err := c.produce.Produce(ctx, connect.NewRequest(req))
	for _, h := range c.hooks {
		if h.OnProduceBatch != nil {
			h.OnProduceBatch(ProduceBatchEvent{Topic: req.GetTopic(), Records: requestRecords(req), Bytes: bytes, Latency: time.Since(start), Err: err})
		}
	}
	return res, err
}

// fetched reports a Fetch request to the hooks.
func (c *Client) fetched(topic string, partition int32, recs []Record, start time.Time, err error) {
	for _, h := range c.hooks {
		if h.OnFetch == nil {
			continue
		}
		n := 0
		for i := range recs {
			n += recordDataSize(&recs[i])
		}
		h.OnFetch(FetchEvent{Topic: topic, Partition: partition, Records: len(recs), Bytes: n, Latency: time.Since(start), Err: err})
	}
}
