package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/sdk"
)

// rpcCounter counts the fetch RPCs (Fetch and FetchPartitions) a client
// sends, each answered by the node.
type rpcCounter struct{ fetches atomic.Int64 }

func (c *rpcCounter) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if strings.HasPrefix(req.Spec().Procedure, "/varve.v1.FetchService/Fetch") {
			c.fetches.Add(1)
		}
		return next(ctx, req)
	}
}

func (c *rpcCounter) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (c *rpcCounter) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// TestConsumerManyPartitions: a consumer of a 1,000-partition topic, fed
// round after round while it polls, reads every record exactly once and
// in order per partition, with far fewer fetch RPCs than one per
// partition per Poll: the partitions that need a fetch go out together.
func TestConsumerManyPartitions(t *testing.T) {
	const partitions, rounds = 1000, 10
	ctx := testCtx(t)
	var counter rpcCounter
	c := newClient(t, sdk.WithClientOptions(connect.WithInterceptors(&counter)))
	topic := uniq("wide")
	createTopic(t, c, topic, partitions)

	cons := c.NewConsumer(topic, sdk.ConsumerOptions{})
	defer cons.Close()
	produced := make(chan error, 1)
	go func() {
		// One record per partition per round, each round in one request.
		for i := range rounds {
			recs := make([]sdk.Record, partitions)
			for p := range int32(partitions) {
				recs[p] = sdk.Record{Partition: p, ExplicitPartition: true, Value: fmt.Appendf(nil, "%d-%d", p, i)}
			}
			if _, err := c.Produce(ctx, topic, recs); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	}()
	var got []sdk.Record
	polls := 0
	for len(got) < partitions*rounds {
		recs, err := cons.Poll(ctx)
		if err != nil {
			t.Fatalf("poll after %d of %d records: %v", len(got), partitions*rounds, err)
		}
		polls++
		got = append(got, recs...)
	}
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	start := make(map[int32]int64, partitions)
	for p := range int32(partitions) {
		start[p] = 0
	}
	checkInOrder(t, got, start, rounds)
	rpcs := counter.fetches.Load()
	t.Logf("%d partitions, %d records: %d polls, %d fetch RPCs (%.2f per poll; one per partition per poll would be %d)",
		partitions, len(got), polls, rpcs, float64(rpcs)/float64(polls), polls*partitions)
	// Every partition got a new record in every round: fetching partition
	// by partition takes at least one RPC per partition per round (10,000;
	// 11,011 before FetchPartitions). Together: about one per Poll.
	if limit := partitions * rounds / 20; rpcs > int64(limit) {
		t.Errorf("%d fetch RPCs to read %d rounds of %d partitions, want at most %d", rpcs, rounds, partitions, limit)
	}
	if rpcs > int64(3*polls) {
		t.Errorf("%d fetch RPCs for %d polls: want about one per poll", rpcs, polls)
	}
}

// TestConsumerPartitionErrorInOneCall: one partition out of range inside a
// call over several is handled alone, as when each partition had its own
// fetch: earliest resets it (one OnOffsetReset event) while the others
// are read; none fails Poll with that partition's OffsetOutOfRangeError
// together with the other partitions' records.
func TestConsumerPartitionErrorInOneCall(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	topic := uniq("oneoff")
	createTopic(t, c, topic, 3)
	var in []sdk.Record
	for i := range 5 {
		for p := range int32(3) {
			in = append(in, sdk.Record{Partition: p, ExplicitPartition: true, Value: fmt.Appendf(nil, "%d-%d", p, i)})
		}
	}
	if _, err := c.Produce(ctx, topic, in); err != nil {
		t.Fatal(err)
	}
	all := map[int32]int64{0: 0, 1: 0, 2: 0}

	var events []sdk.OffsetResetEvent
	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 50 * time.Millisecond, OffsetReset: sdk.OffsetResetEarliest,
		OnOffsetReset: func(ev sdk.OffsetResetEvent) { events = append(events, ev) }})
	defer cons.Close()
	cons.Seek(0, 999)
	checkInOrder(t, pollUntil(t, cons, 15), all, 5)
	want := sdk.OffsetResetEvent{Topic: topic, Partition: 0, From: 999, To: 0, LogStart: 0, LogEnd: 5, Policy: sdk.OffsetResetEarliest}
	if len(events) != 1 || events[0] != want {
		t.Fatalf("reset events %+v, want one %+v", events, want)
	}

	strict := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 50 * time.Millisecond, OffsetReset: sdk.OffsetResetNone})
	defer strict.Close()
	strict.Seek(1, 999)
	var got []sdk.Record
	var err error
	for err == nil {
		var recs []sdk.Record
		recs, err = strict.Poll(ctx)
		got = append(got, recs...)
	}
	var oor *sdk.OffsetOutOfRangeError
	if !errors.As(err, &oor) || oor.Partition != 1 || oor.Offset != 999 || connect.CodeOf(err) != connect.CodeOutOfRange {
		t.Fatalf("poll with partition 1 at 999 and reset none: %v", err)
	}
	for len(got) < 10 {
		recs, err := strict.Poll(ctx)
		if err != nil && !errors.As(err, &oor) {
			t.Fatal(err)
		}
		got = append(got, recs...)
	}
	checkInOrder(t, got, map[int32]int64{0: 0, 2: 0}, 5)
	if strict.Position(1) != 999 {
		t.Fatalf("reset none moved partition 1 to %d", strict.Position(1))
	}
}

// oldNode makes a client's requests meet a node older than
// FetchPartitions: that procedure is not found (HTTP 404, UNIMPLEMENTED).
type oldNode struct {
	next    http.RoundTripper
	refused atomic.Int64
}

func (o *oldNode) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/FetchPartitions") {
		o.refused.Add(1)
		return &http.Response{StatusCode: http.StatusNotFound, Proto: "HTTP/2.0", ProtoMajor: 2, Request: req,
			Header: http.Header{"Content-Type": {"text/plain"}}, Body: io.NopCloser(strings.NewReader("404 page not found"))}, nil
	}
	return o.next.RoundTrip(req)
}

// TestConsumerOnNodeWithoutFetchPartitions: against a node without
// FetchPartitions the consumer fetches partition by partition (asking
// FetchPartitions once, not every round), reads everything in order, and
// a Poll at the end still returns as soon as one partition gets a record.
func TestConsumerOnNodeWithoutFetchPartitions(t *testing.T) {
	ctx := testCtx(t)
	hc := sdk.NewHTTPClient()
	old := &oldNode{next: hc.Transport}
	hc.Transport = old
	var counter rpcCounter
	c := newClient(t, sdk.WithHTTPClient(hc), sdk.WithClientOptions(connect.WithInterceptors(&counter)))
	topic := uniq("oldnode")
	createTopic(t, c, topic, 3)
	var in []sdk.Record
	for i := range 5 {
		for p := range int32(3) {
			in = append(in, sdk.Record{Partition: p, ExplicitPartition: true, Value: fmt.Appendf(nil, "%d-%d", p, i)})
		}
	}
	if _, err := c.Produce(ctx, topic, in); err != nil {
		t.Fatal(err)
	}
	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 10 * time.Second})
	defer cons.Close()
	checkInOrder(t, pollUntil(t, cons, 15), map[int32]int64{0: 0, 1: 0, 2: 0}, 5)
	go func() {
		c.Produce(ctx, topic, []sdk.Record{{Partition: 1, ExplicitPartition: true, Value: []byte("1-5")}})
	}()
	start := time.Now()
	got := pollUntil(t, cons, 1)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("poll at the end returned after %v with MaxWait 10s: not cut short", d)
	}
	checkInOrder(t, got, map[int32]int64{1: 5}, 6)
	if n := old.refused.Load(); n != 1 {
		t.Fatalf("FetchPartitions asked %d times, want once (then remembered)", n)
	}
	if n := counter.fetches.Load(); n < 6 {
		t.Fatalf("%d fetch RPCs: the consumer did not fetch partition by partition", n)
	}
}
