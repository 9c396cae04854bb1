package sdk_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/sdk"
)

// hookLog records what the hooks were called with.
type hookLog struct {
	mu       sync.Mutex
	produced []sdk.ProduceBatchEvent
	fetched  []sdk.FetchEvent
	order    []string
}

func (h *hookLog) hooks(name string) sdk.Hooks {
	return sdk.Hooks{
		OnProduceBatch: func(e sdk.ProduceBatchEvent) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if name == "first" {
				h.produced = append(h.produced, e)
			}
			h.order = append(h.order, name)
		},
		OnFetch: func(e sdk.FetchEvent) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if name == "first" {
				h.fetched = append(h.fetched, e)
			}
		},
	}
}

// take returns and forgets the events recorded so far.
func (h *hookLog) take() ([]sdk.ProduceBatchEvent, []sdk.FetchEvent, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, f, o := h.produced, h.fetched, h.order
	h.produced, h.fetched, h.order = nil, nil, nil
	return p, f, o
}

// TestHooks: OnProduceBatch and OnFetch fire once per request with the
// topic, partition, record and byte counts, the latency and the error;
// several hooks are called in the order given.
func TestHooks(t *testing.T) {
	ctx := testCtx(t)
	var h hookLog
	c := newClient(t, sdk.WithHooks(h.hooks("first")), sdk.WithHooks(h.hooks("second")))
	topic := uniq("hooks")
	createTopic(t, c, topic, 2)
	h.take()

	// Client.Produce: one request of three records, 5+5+7 bytes.
	recs := []sdk.Record{
		{Partition: 1, ExplicitPartition: true, Key: []byte("k1"), Value: []byte("abc")},
		{Partition: 1, ExplicitPartition: true, Key: []byte("k2"), Value: []byte("def")},
		{Partition: 1, ExplicitPartition: true, Value: []byte("g"), Headers: []sdk.Header{{Key: "h", Value: []byte("vvvvv")}}},
	}
	if _, err := c.Produce(ctx, topic, recs); err != nil {
		t.Fatal(err)
	}
	produced, _, order := h.take()
	if len(produced) != 1 || produced[0].Topic != topic || produced[0].Records != 3 || produced[0].Bytes != 17 ||
		produced[0].Err != nil || produced[0].Latency <= 0 || produced[0].Latency > time.Minute {
		t.Fatalf("produce events %+v", produced)
	}
	if !slicesEqual(order, []string{"first", "second"}) {
		t.Fatalf("hooks called in order %v", order)
	}

	// The producer's batches: every record counted once, bytes summed.
	p := c.NewProducer(sdk.ProducerOptions{})
	batch := make([]sdk.Record, 10)
	for i := range batch {
		batch[i] = sdk.Record{Topic: topic, Partition: 0, ExplicitPartition: true, Value: []byte("0123456789")}
	}
	if _, err := p.ProduceSync(ctx, batch...); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	produced, _, _ = h.take()
	n, b := 0, 0
	for _, e := range produced {
		if e.Topic != topic || e.Err != nil {
			t.Fatalf("producer event %+v", e)
		}
		n, b = n+e.Records, b+e.Bytes
	}
	if n != 10 || b != 100 {
		t.Fatalf("producer events counted %d records, %d bytes; want 10, 100: %+v", n, b, produced)
	}

	// A failed request reports its error.
	if _, err := c.Produce(ctx, uniq("missing"), recs[:1]); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("produce to a missing topic: %v", err)
	}
	produced, _, _ = h.take()
	if len(produced) != 1 || connect.CodeOf(produced[0].Err) != connect.CodeNotFound || produced[0].Records != 1 {
		t.Fatalf("failed produce events %+v", produced)
	}

	// Client.Fetch: the records and bytes returned, the partition asked.
	res, err := c.Fetch(ctx, topic, 1, 0, 0, 0)
	if err != nil || len(res.Records) != 3 {
		t.Fatalf("fetch: %v, %v", res, err)
	}
	_, fetched, _ := h.take()
	if len(fetched) != 1 || fetched[0].Topic != topic || fetched[0].Partition != 1 || fetched[0].Records != 3 ||
		fetched[0].Bytes != 17 || fetched[0].Err != nil {
		t.Fatalf("fetch events %+v", fetched)
	}
	// A long poll at the end: the latency includes the wait.
	if _, err := c.Fetch(ctx, topic, 1, 3, 0, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	_, fetched, _ = h.take()
	if len(fetched) != 1 || fetched[0].Records != 0 || fetched[0].Latency < 250*time.Millisecond {
		t.Fatalf("long-poll fetch events %+v", fetched)
	}
	// Out of range: the error.
	if _, err := c.Fetch(ctx, topic, 1, 99, 0, 0); connect.CodeOf(err) != connect.CodeOutOfRange {
		t.Fatalf("fetch out of range: %v", err)
	}
	_, fetched, _ = h.take()
	if len(fetched) != 1 || connect.CodeOf(fetched[0].Err) != connect.CodeOutOfRange || fetched[0].Records != 0 {
		t.Fatalf("failed fetch events %+v", fetched)
	}

	// A consumer's fetches fire too.
	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 50 * time.Millisecond})
	defer cons.Close()
	cons.Assign(0)
	if err := cons.SeekToStart(ctx); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < 10 {
		recs, err := cons.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got += len(recs)
	}
	_, fetched, _ = h.take()
	n, b = 0, 0
	for _, e := range fetched {
		if e.Partition != 0 || e.Err != nil {
			t.Fatalf("consumer fetch event %+v", e)
		}
		n, b = n+e.Records, b+e.Bytes
	}
	if n < 10 || b < 100 {
		t.Fatalf("consumer fetch events counted %d records, %d bytes: %+v", n, b, fetched)
	}
}

// TestLogger: WithLogger receives the client's events (here an offset
// reset); without it the client logs nothing and works.
func TestLogger(t *testing.T) {
	ctx := testCtx(t)
	var buf syncBuffer
	c := newClient(t, sdk.WithLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	topic := uniq("logged")
	createTopic(t, c, topic, 1)
	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 10 * time.Millisecond, OffsetReset: sdk.OffsetResetEarliest})
	defer cons.Close()
	cons.Seek(0, 42)
	if _, err := cons.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if s := buf.String(); !strings.Contains(s, "offset out of range") || !strings.Contains(s, "topic="+topic) || !strings.Contains(s, "from=42") {
		t.Fatalf("log:\n%s", s)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }
