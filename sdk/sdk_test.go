package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// addr is the API of the dev node every test of the package shares; each
// test uses topics of its own.
var addr string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "varve-sdk-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	d, err := startDev(dir, 10*time.Millisecond)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start dev node:", err)
		return 1
	}
	defer func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := d.Close(cctx); err != nil {
			fmt.Fprintln(os.Stderr, "close dev node:", err)
		}
	}()
	addr = d.Addr()
	return m.Run()
}

// startDev starts a dev node on a free loopback port with its data in
// dir, sealing its file every linger, logging nothing.
func startDev(dir string, linger time.Duration) (*node.Dev, error) {
	return node.StartDev(context.Background(), node.DevConfig{
		DataDir: dir, Listen: "127.0.0.1:0",
		Node:   node.Config{Linger: linger},
		Logger: slog.New(slog.DiscardHandler),
	})
}

var topicSeq atomic.Int64

// uniq returns a topic name not used before in this process, so that tests
// can run more than once (-count) against the shared node.
func uniq(base string) string {
	return fmt.Sprintf("%s-%d", base, topicSeq.Add(1))
}

func newClient(t *testing.T, opts ...sdk.Option) *sdk.Client {
	t.Helper()
	c := sdk.New(addr, opts...)
	t.Cleanup(c.Close)
	return c
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func createTopic(t *testing.T, c *sdk.Client, name string, partitions int32) {
	t.Helper()
	if _, err := admin.NewFromClient(c).CreateTopic(testCtx(t), name, partitions, nil); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
}

func wantCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("got code %v (%v), want %v", got, err, code)
	}
}

func TestTopicAdmin(t *testing.T) {
	topic := uniq("admin")
	ctx := testCtx(t)
	c := newClient(t)
	cfg := &admin.TopicConfig{Retention: admin.Forever, CleanupPolicy: admin.CleanupCompact, MaxRecordBytes: 4096}
	top, err := admin.NewFromClient(c).CreateTopic(ctx, topic, 3, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if top.Name != topic || top.Partitions != 3 || top.ID == "" || top.Created.IsZero() {
		t.Fatalf("created %v", top)
	}
	if got := top.Config; got.Retention != admin.Forever || got.CleanupPolicy != cfg.CleanupPolicy || got.MaxRecordBytes != 4096 {
		t.Fatalf("config %v, want %v", got, cfg)
	}
	// An unknown policy is refused before anything is sent.
	_, err = admin.NewFromClient(c).CreateTopic(ctx, uniq("badpolicy"), 1, &admin.TopicConfig{CleanupPolicy: "shred"})
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = admin.NewFromClient(c).CreateTopic(ctx, topic, 3, nil)
	wantCode(t, err, connect.CodeAlreadyExists)

	topics, err := admin.NewFromClient(c).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(topics, func(t admin.Topic) bool { return t.Name == topic }) {
		t.Fatalf("list %v lacks admin", topics)
	}
	d, err := admin.NewFromClient(c).DescribeTopic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Partitions) != 3 || d.Topic.ID != top.ID {
		t.Fatalf("describe %v", d)
	}
	if err := admin.NewFromClient(c).DeleteTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	_, err = admin.NewFromClient(c).DescribeTopic(ctx, topic)
	wantCode(t, err, connect.CodeNotFound)
	err = admin.NewFromClient(c).DeleteTopic(ctx, topic)
	wantCode(t, err, connect.CodeNotFound)
	_, err = admin.NewFromClient(c).CreateTopic(ctx, "bad", 0, nil)
	wantCode(t, err, connect.CodeInvalidArgument)
}

func TestUnknownTopic(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	_, err := admin.NewFromClient(c).DescribeTopic(ctx, "nope")
	wantCode(t, err, connect.CodeNotFound)
	_, err = c.Produce(ctx, "nope", []sdk.Record{{Partition: sdk.AnyPartition, Value: []byte("x")}})
	wantCode(t, err, connect.CodeNotFound)
	_, err = c.Fetch(ctx, "nope", 0, 0, 0, 0)
	wantCode(t, err, connect.CodeNotFound)
	_, err = c.ListOffsets(ctx, "nope", varvev1.OffsetSpec_OFFSET_SPEC_LATEST, time.Time{})
	wantCode(t, err, connect.CodeNotFound)

	p := c.NewProducer(sdk.ProducerOptions{})
	defer p.Close(ctx)
	_, err = p.ProduceSync(ctx, sdk.Record{Topic: "nope", Partition: sdk.AnyPartition, Value: []byte("x")})
	wantCode(t, err, connect.CodeNotFound)

	cons := c.NewConsumer("nope", sdk.ConsumerOptions{})
	defer cons.Close()
	_, err = cons.Poll(ctx)
	wantCode(t, err, connect.CodeNotFound)

	err = c.Tail(ctx, "nope", 0, 0, func([]sdk.Record) error { return nil })
	wantCode(t, err, connect.CodeNotFound)
}

// TestPlainProduceFetch checks that a record comes back as it went in:
// null and empty keys and values, headers, timestamps.
func TestPlainProduceFetch(t *testing.T) {
	topic := uniq("plain")
	ctx := testCtx(t)
	c := newClient(t)
	createTopic(t, c, topic, 2)
	ts := time.UnixMilli(1_700_000_000_123)
	in := []sdk.Record{
		{Partition: 1, ExplicitPartition: true, Key: []byte("k"), Value: []byte("v"), Timestamp: ts,
			Headers: []sdk.Header{{Key: "h1", Value: []byte("x")}, {Key: "h2"}, {Key: "h3", Value: []byte{}}}},
		{Partition: 1, ExplicitPartition: true},                                  // null key, null value
		{Partition: 1, ExplicitPartition: true, Key: []byte{}, Value: []byte{}},  // empty key and value
		{Partition: 1, ExplicitPartition: true, Value: []byte{0xff, 0x00, 0xfe}}, // binary
		{Partition: 1, ExplicitPartition: true, Value: bytes.Repeat([]byte("a"), 100_000)},
	}
	before := time.Now().Add(-time.Second)
	offs, err := c.Produce(ctx, topic, in)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range offs {
		if o.Partition != 1 || o.Offset != int64(i) {
			t.Fatalf("offset %d: %+v", i, o)
		}
	}
	var got []sdk.Record
	for off := int64(0); off < int64(len(in)); {
		res, err := c.Fetch(ctx, topic, 1, off, 0, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res.Records...)
		off = res.NextOffset
		if res.HighWatermark != int64(len(in)) {
			t.Fatalf("high watermark %d", res.HighWatermark)
		}
	}
	for i, r := range got {
		w := in[i]
		if r.Topic != topic || r.Partition != 1 || r.Offset != int64(i) {
			t.Errorf("record %d at %s/%d@%d", i, r.Topic, r.Partition, r.Offset)
		}
		if (r.Key == nil) != (w.Key == nil) || !bytes.Equal(r.Key, w.Key) {
			t.Errorf("record %d key %q (nil %v), want %q (nil %v)", i, r.Key, r.Key == nil, w.Key, w.Key == nil)
		}
		if (r.Value == nil) != (w.Value == nil) || !bytes.Equal(r.Value, w.Value) {
			t.Errorf("record %d value differs (nil %v, want nil %v)", i, r.Value == nil, w.Value == nil)
		}
		if len(r.Headers) != len(w.Headers) {
			t.Errorf("record %d headers %v, want %v", i, r.Headers, w.Headers)
		} else {
			for j, h := range r.Headers {
				if h.Key != w.Headers[j].Key || (h.Value == nil) != (w.Headers[j].Value == nil) || !bytes.Equal(h.Value, w.Headers[j].Value) {
					t.Errorf("record %d header %d %+v, want %+v", i, j, h, w.Headers[j])
				}
			}
		}
		if !w.Timestamp.IsZero() && !r.Timestamp.Equal(w.Timestamp) {
			t.Errorf("record %d timestamp %v, want %v", i, r.Timestamp, w.Timestamp)
		}
		if w.Timestamp.IsZero() && r.Timestamp.Before(before) {
			t.Errorf("record %d timestamp %v, want about now", i, r.Timestamp)
		}
	}
	// Past the end and before the start are out of range; at the end, a
	// fetch waits and comes back empty.
	_, err = c.Fetch(ctx, topic, 1, 99, 0, 0)
	wantCode(t, err, connect.CodeOutOfRange)
	start := time.Now()
	res, err := c.Fetch(ctx, topic, 1, int64(len(in)), 0, 200*time.Millisecond)
	if err != nil || len(res.Records) != 0 || res.NextOffset != int64(len(in)) {
		t.Fatalf("fetch at the end: %+v, %v", res, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("fetch at the end returned after %v, want a long poll", d)
	}
	offsets, err := c.ListOffsets(ctx, topic, varvev1.OffsetSpec_OFFSET_SPEC_LATEST, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if offsets[0] != 0 || offsets[1] != int64(len(in)) || len(offsets) != 2 {
		t.Fatalf("latest offsets %v", offsets)
	}
}

// produced is what a producer's callbacks saw, per partition in callback
// order.
type produced struct {
	mu     sync.Mutex
	calls  atomic.Int64
	byPart map[int32][]sdk.Record
	errs   []error
}

func (p *produced) cb(r sdk.Record, err error) {
	p.calls.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.errs = append(p.errs, err)
		return
	}
	if p.byPart == nil {
		p.byPart = make(map[int32][]sdk.Record)
	}
	p.byPart[r.Partition] = append(p.byPart[r.Partition], r)
}

// readAll fetches every record of a partition up to its end.
func readAll(t *testing.T, c *sdk.Client, topic string, p int32) []sdk.Record {
	t.Helper()
	ctx := testCtx(t)
	end, err := c.ListOffsets(ctx, topic, varvev1.OffsetSpec_OFFSET_SPEC_LATEST, time.Time{}, p)
	if err != nil {
		t.Fatal(err)
	}
	var out []sdk.Record
	for off := int64(0); off < end[p]; {
		res, err := c.Fetch(ctx, topic, p, off, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, res.Records...)
		off = res.NextOffset
	}
	return out
}

// TestProducerOrdering produces many small batches to several partitions
// and checks that each partition holds its records in produce order, and
// that every callback ran once with the record's place.
func TestProducerOrdering(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	const partitions, n = 4, 4000
	topic := uniq("ordering")
	createTopic(t, c, topic, partitions)
	p := c.NewProducer(sdk.ProducerOptions{MaxBatchBytes: 2 << 10, Linger: time.Millisecond})
	var got produced
	for i := range n {
		rec := sdk.Record{Topic: topic, Partition: int32(i % partitions), ExplicitPartition: true, Value: fmt.Appendf(nil, "%d", i)}
		if i%3 == 0 {
			// Keyed, placed by the cluster.
			rec.Partition, rec.ExplicitPartition = 0, false
			rec.Key = fmt.Appendf(nil, "key-%d", i%7)
		}
		p.Produce(ctx, rec, got.cb)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got.calls.Load() != n {
		t.Fatalf("%d callbacks after Flush, want %d", got.calls.Load(), n)
	}
	if len(got.errs) > 0 {
		t.Fatalf("%d records failed, first: %v", len(got.errs), got.errs[0])
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	total := 0
	for part := int32(0); part < partitions; part++ {
		acked := got.byPart[part]
		total += len(acked)
		stored := readAll(t, c, topic, part)
		if len(stored) != len(acked) {
			t.Fatalf("partition %d: %d records stored, %d acknowledged", part, len(stored), len(acked))
		}
		last := -1
		for i, r := range acked {
			if r.Topic != topic || r.Offset != int64(i) {
				t.Fatalf("partition %d: callback %d got %s@%d", part, i, r.Topic, r.Offset)
			}
			if !bytes.Equal(stored[i].Value, r.Value) {
				t.Fatalf("partition %d offset %d: stored %q, acknowledged %q", part, i, stored[i].Value, r.Value)
			}
			var v int
			fmt.Sscan(string(r.Value), &v)
			if v <= last {
				t.Fatalf("partition %d: record %d stored after %d", part, v, last)
			}
			last = v
		}
	}
	if total != n {
		t.Fatalf("%d records acknowledged, want %d", total, n)
	}
}

// TestProducerFlush: with a linger far longer than the test, only Flush
// (or Close) sends, and Flush returns after the callbacks ran.
func TestProducerFlush(t *testing.T) {
	topic := uniq("flush")
	ctx := testCtx(t)
	c := newClient(t)
	createTopic(t, c, topic, 1)
	p := c.NewProducer(sdk.ProducerOptions{Linger: time.Hour})
	var got produced
	for i := range 10 {
		p.Produce(ctx, sdk.Record{Topic: topic, Value: fmt.Appendf(nil, "%d", i)}, got.cb)
	}
	time.Sleep(100 * time.Millisecond)
	if got.calls.Load() != 0 {
		t.Fatalf("%d callbacks before Flush", got.calls.Load())
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got.calls.Load() != 10 || len(got.byPart[0]) != 10 {
		t.Fatalf("after Flush: %d callbacks, %d acked", got.calls.Load(), len(got.byPart[0]))
	}
	// Flush with nothing pending returns at once.
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Close flushes too.
	p.Produce(ctx, sdk.Record{Topic: topic, Value: []byte("last")}, got.cb)
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got.calls.Load() != 11 {
		t.Fatalf("after Close: %d callbacks", got.calls.Load())
	}
	// A closed producer refuses records.
	var closedErr error
	p.Produce(ctx, sdk.Record{Topic: topic}, func(_ sdk.Record, err error) { closedErr = err })
	if !errors.Is(closedErr, sdk.ErrProducerClosed) {
		t.Fatalf("produce after close: %v", closedErr)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestProduceSync(t *testing.T) {
	topic := uniq("sync")
	ctx := testCtx(t)
	c := newClient(t)
	createTopic(t, c, topic, 2)
	p := c.NewProducer(sdk.ProducerOptions{})
	defer p.Close(ctx)
	recs, err := p.ProduceSync(ctx,
		sdk.Record{Topic: topic, Partition: 1, ExplicitPartition: true, Value: []byte("a")},
		sdk.Record{Topic: topic, Partition: 1, ExplicitPartition: true, Value: []byte("b")},
		sdk.Record{Topic: topic, Partition: 0, ExplicitPartition: true, Value: []byte("c")},
	)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		p int32
		o int64
	}{{1, 0}, {1, 1}, {0, 0}}
	for i, r := range recs {
		if r.Partition != want[i].p || r.Offset != want[i].o || r.Topic != topic {
			t.Fatalf("record %d at %s/%d@%d, want %d@%d", i, r.Topic, r.Partition, r.Offset, want[i].p, want[i].o)
		}
	}
	// A partition out of range is the client's fault.
	_, err = p.ProduceSync(ctx, sdk.Record{Topic: topic, Partition: 7, ExplicitPartition: true, Value: []byte("x")})
	wantCode(t, err, connect.CodeInvalidArgument)
}

func TestProducerPartitioner(t *testing.T) {
	topic := uniq("partitioner")
	ctx := testCtx(t)
	c := newClient(t)
	createTopic(t, c, topic, 3)
	var seen atomic.Int32
	p := c.NewProducer(sdk.ProducerOptions{Partitioner: func(key []byte, partitions int32) int32 {
		seen.Store(partitions)
		return int32(len(key)) % partitions
	}})
	defer p.Close(ctx)
	recs, err := p.ProduceSync(ctx,
		sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Key: []byte("a")},
		sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Key: []byte("ab")},
		sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Key: []byte("abc")},
		sdk.Record{Topic: topic, Partition: 2, ExplicitPartition: true, Key: []byte("a")}, // explicit wins
	)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int32{1, 2, 0, 2} {
		if recs[i].Partition != want {
			t.Errorf("record %d in partition %d, want %d", i, recs[i].Partition, want)
		}
	}
	if seen.Load() != 3 {
		t.Errorf("partitioner saw %d partitions, want 3", seen.Load())
	}
	bad := c.NewProducer(sdk.ProducerOptions{Partitioner: func([]byte, int32) int32 { return 9 }})
	defer bad.Close(ctx)
	_, err = bad.ProduceSync(ctx, sdk.Record{Topic: topic, Partition: sdk.AnyPartition})
	wantCode(t, err, connect.CodeInvalidArgument)
}

// TestProducerBufferFull: Produce blocks while the buffer is full and
// gives up when its ctx is done.
func TestProducerBufferFull(t *testing.T) {
	topic := uniq("buffer")
	ctx := testCtx(t)
	c := newClient(t)
	createTopic(t, c, topic, 1)
	p := c.NewProducer(sdk.ProducerOptions{Linger: time.Hour, MaxBufferedBytes: 1000})
	var got produced
	p.Produce(ctx, sdk.Record{Topic: topic, Value: make([]byte, 900)}, got.cb) // fits: the buffer was empty
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	var blockedErr error
	start := time.Now()
	p.Produce(short, sdk.Record{Topic: topic, Value: make([]byte, 200)}, func(_ sdk.Record, err error) { blockedErr = err })
	if time.Since(start) < 40*time.Millisecond {
		t.Errorf("Produce returned after %v, want it to block", time.Since(start))
	}
	wantCode(t, blockedErr, connect.CodeDeadlineExceeded)

	// Space frees up once the first record is acknowledged.
	enqueued := make(chan struct{})
	go func() {
		p.Produce(ctx, sdk.Record{Topic: topic, Value: make([]byte, 200)}, got.cb)
		close(enqueued)
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-enqueued:
		t.Fatal("Produce did not block on a full buffer")
	default:
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	<-enqueued
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got.calls.Load() != 2 || len(got.byPart[0]) != 2 {
		t.Fatalf("%d callbacks, errors %v", got.calls.Load(), got.errs)
	}
}

// TestProducerRetriesUntilNodeIsUp: a producer pointed at a port nobody
// listens on yet retries (Unavailable) until a node starts there.
func TestProducerRetriesUntilNodeIsUp(t *testing.T) {
	ctx := testCtx(t)
	listen := freePort(t)
	c := sdk.New(listen)
	defer c.Close()
	p := c.NewProducer(sdk.ProducerOptions{Retries: 20, RetryBackoff: 20 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond})
	defer p.Close(ctx)
	var firstErr error
	var once sync.Once
	done := make(chan struct{})
	p.Produce(ctx, sdk.Record{Topic: "late", Partition: 0, ExplicitPartition: true, Value: []byte("x")}, func(_ sdk.Record, err error) {
		once.Do(func() { firstErr = err; close(done) })
	})
	time.Sleep(300 * time.Millisecond)
	cfg := node.DefaultConfig()
	cfg.Listen = listen
	cfg.Linger = 10 * time.Millisecond
	cfg.EtcdEndpoints = testenv.StartEtcd(t)
	cfg.Store = "fs:" + t.TempDir()
	d, err := node.New(ctx, cfg, node.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("start a node on %s: %v", listen, err)
	}
	defer d.Shutdown(context.WithoutCancel(ctx))
	if _, err := admin.NewFromClient(c).CreateTopic(ctx, "late", 1, nil); err != nil {
		t.Fatal(err)
	}
	<-done
	// The topic may not have existed at the first successful attempt.
	if firstErr != nil && connect.CodeOf(firstErr) != connect.CodeNotFound {
		t.Fatalf("produce: %v", firstErr)
	}
	if _, err := p.ProduceSync(ctx, sdk.Record{Topic: "late", Value: []byte("y")}); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestConsumer covers Assign, Poll across partitions, Position, Seek,
// SeekToStart, SeekToEnd and SeekToTime.
func TestConsumer(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	const partitions, perPart = 3, 50
	topic := uniq("consume")
	createTopic(t, c, topic, partitions)
	base := time.UnixMilli(1_800_000_000_000)
	var recs []sdk.Record
	for i := range perPart {
		for part := range int32(partitions) {
			recs = append(recs, sdk.Record{Topic: topic, Partition: part, ExplicitPartition: true, Value: fmt.Appendf(nil, "%d-%d", part, i), Timestamp: base.Add(time.Duration(i) * time.Second)})
		}
	}
	p := c.NewProducer(sdk.ProducerOptions{})
	if _, err := p.ProduceSync(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}

	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 100 * time.Millisecond, MaxBytes: 200})
	defer cons.Close()
	if cons.Position(0) != -1 {
		t.Fatalf("position before Poll: %d", cons.Position(0))
	}
	got := pollUntil(t, cons, partitions*perPart)
	checkInOrder(t, got, map[int32]int64{0: 0, 1: 0, 2: 0}, perPart)
	for part := range int32(partitions) {
		if cons.Position(part) != perPart || cons.HighWatermark(part) != perPart {
			t.Fatalf("partition %d: position %d, high watermark %d", part, cons.Position(part), cons.HighWatermark(part))
		}
	}
	// At the end, Poll comes back empty after about MaxWait.
	start := time.Now()
	if more, err := cons.Poll(ctx); err != nil || len(more) != 0 {
		t.Fatalf("poll at the end: %d records, %v", len(more), err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("poll at the end took %v", time.Since(start))
	}

	// One partition, from an offset.
	cons.Assign(1)
	cons.Seek(1, 40)
	got = pollUntil(t, cons, 10)
	checkInOrder(t, got, map[int32]int64{1: 40}, perPart)

	// Back to the start of every partition.
	cons.Assign()
	if err := cons.SeekToStart(ctx); err != nil {
		t.Fatal(err)
	}
	got = pollUntil(t, cons, partitions*perPart)
	checkInOrder(t, got, map[int32]int64{0: 0, 1: 0, 2: 0}, perPart)

	// By time: the record stamped base+30s is at offset 30 everywhere.
	if err := cons.SeekToTime(ctx, base.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	for part := range int32(partitions) {
		if cons.Position(part) != 30 {
			t.Fatalf("partition %d after SeekToTime: position %d", part, cons.Position(part))
		}
	}
	got = pollUntil(t, cons, partitions*20)
	checkInOrder(t, got, map[int32]int64{0: 30, 1: 30, 2: 30}, perPart)

	// From the end, only new records.
	if err := cons.SeekToEnd(ctx); err != nil {
		t.Fatal(err)
	}
	if more, err := cons.Poll(ctx); err != nil || len(more) != 0 {
		t.Fatalf("poll after SeekToEnd: %d records, %v", len(more), err)
	}
	if _, err := c.Produce(ctx, topic, []sdk.Record{{Partition: 2, ExplicitPartition: true, Value: []byte("new")}}); err != nil {
		t.Fatal(err)
	}
	got = pollUntil(t, cons, 1)
	if string(got[0].Value) != "new" || got[0].Partition != 2 || got[0].Offset != perPart {
		t.Fatalf("new record: %+v", got[0])
	}

	// A position past the end moves to the end.
	cons.Seek(0, 1000)
	if more, err := cons.Poll(ctx); err != nil || len(more) != 0 {
		t.Fatalf("poll past the end: %d records, %v", len(more), err)
	}
	if cons.Position(0) != perPart {
		t.Fatalf("position after poll past the end: %d", cons.Position(0))
	}
}

// TestConsumerWakesOnNewRecords: a Poll waiting at the end of the log
// returns soon after a record is produced.
func TestConsumerWakesOnNewRecords(t *testing.T) {
	topic := uniq("wake")
	ctx := testCtx(t)
	c := newClient(t)
	createTopic(t, c, topic, 2)
	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 10 * time.Second})
	defer cons.Close()
	// Positions are fixed before the record exists, so the record is always
	// after them, whenever the Poll starts waiting.
	if err := cons.SeekToEnd(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.Produce(ctx, topic, []sdk.Record{{Partition: 1, ExplicitPartition: true, Value: []byte("hello")}})
	}()
	start := time.Now()
	got, err := cons.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Value) != "hello" {
		t.Fatalf("poll: %+v", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("poll returned after %v", d)
	}
}

func pollUntil(t *testing.T, cons *sdk.Consumer, n int) []sdk.Record {
	t.Helper()
	ctx := testCtx(t)
	var got []sdk.Record
	for len(got) < n {
		recs, err := cons.Poll(ctx)
		if err != nil {
			t.Fatalf("poll after %d of %d records: %v", len(got), n, err)
		}
		got = append(got, recs...)
	}
	if len(got) != n {
		t.Fatalf("polled %d records, want %d", len(got), n)
	}
	return got
}

// checkInOrder checks that recs hold, per partition, consecutive offsets
// from start[p] to end with the values produced there.
func checkInOrder(t *testing.T, recs []sdk.Record, start map[int32]int64, end int64) {
	t.Helper()
	next := make(map[int32]int64)
	for p, o := range start {
		next[p] = o
	}
	for _, r := range recs {
		want, ok := next[r.Partition]
		if !ok {
			t.Fatalf("record from unassigned partition %d", r.Partition)
		}
		if r.Offset != want {
			t.Fatalf("partition %d: offset %d, want %d", r.Partition, r.Offset, want)
		}
		if v := fmt.Sprintf("%d-%d", r.Partition, r.Offset); string(r.Value) != v {
			t.Fatalf("partition %d offset %d: value %q, want %q", r.Partition, r.Offset, r.Value, v)
		}
		next[r.Partition]++
	}
	for p, o := range next {
		if o != end {
			t.Fatalf("partition %d: read up to %d, want %d", p, o, end)
		}
	}
}

func TestTail(t *testing.T) {
	topic := uniq("tail")
	ctx := testCtx(t)
	c := newClient(t)
	createTopic(t, c, topic, 2)
	if _, err := c.Produce(ctx, topic, []sdk.Record{{Partition: 1, ExplicitPartition: true, Value: []byte("0")}, {Partition: 1, ExplicitPartition: true, Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	var got []string
	tailDone := make(chan error, 1)
	go func() {
		tailDone <- c.Tail(ctx, topic, 1, sdk.OffsetEarliest, func(recs []sdk.Record) error {
			for i, r := range recs {
				if r.Offset != int64(len(got)) || r.Partition != 1 || r.Topic != topic {
					return fmt.Errorf("record %d of batch at %s/%d@%d, want offset %d", i, r.Topic, r.Partition, r.Offset, len(got))
				}
				got = append(got, string(r.Value))
			}
			if len(got) >= 5 {
				return stop
			}
			return nil
		})
	}()
	for i := 2; i < 5; i++ {
		if _, err := c.Produce(ctx, topic, []sdk.Record{{Partition: 1, ExplicitPartition: true, Value: fmt.Appendf(nil, "%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-tailDone; !errors.Is(err, stop) {
		t.Fatalf("Tail returned %v, want the callback's error", err)
	}
	if !slices.Equal(got, []string{"0", "1", "2", "3", "4"}) {
		t.Fatalf("tailed %v", got)
	}

	// From the end, until ctx is done.
	tctx, cancel := context.WithCancel(ctx)
	var n, calls atomic.Int32
	var bad atomic.Value
	go func() {
		tailDone <- c.Tail(tctx, topic, 1, sdk.OffsetLatest, func(recs []sdk.Record) error {
			calls.Add(1)
			n.Add(int32(len(recs)))
			for _, r := range recs {
				if string(r.Value) != "5" { // only records produced after Tail started
					bad.Store(fmt.Sprintf("offset %d: %q", r.Offset, r.Value))
				}
			}
			cancel()
			return nil
		})
	}()
	// Tail resolves "latest" when it starts; records produced before that
	// are not tailed, so produce until one is.
	if !testenv.Eventually(20*time.Second, func() bool {
		if _, err := c.Produce(ctx, topic, []sdk.Record{{Partition: 1, ExplicitPartition: true, Value: []byte("5")}}); err != nil {
			t.Fatal(err)
		}
		return n.Load() > 0
	}) {
		t.Fatal("Tail from the end never delivered a new record")
	}
	if err := <-tailDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Tail returned %v, want context.Canceled", err)
	}
	// The first delivery cancels: one call. It holds the records committed
	// since Tail started (more than one when a loaded machine let two of
	// the produces below land before its first fetch), none older.
	if calls.Load() != 1 || n.Load() < 1 {
		t.Fatalf("tailed %d records in %d calls from the end, want one call (it cancels after the first)", n.Load(), calls.Load())
	}
	if b := bad.Load(); b != nil {
		t.Fatalf("tailed a record from before the end: %v", b)
	}
}

// TestGRPC runs the basic calls over the gRPC protocol.
func TestGRPC(t *testing.T) {
	topic := uniq("grpc")
	ctx := testCtx(t)
	c := newClient(t, sdk.WithGRPC())
	createTopic(t, c, topic, 1)
	offs, err := c.Produce(ctx, topic, []sdk.Record{{Value: []byte("g")}})
	if err != nil || len(offs) != 1 {
		t.Fatalf("produce: %v %v", offs, err)
	}
	res, err := c.Fetch(ctx, topic, 0, 0, 0, 0)
	if err != nil || len(res.Records) != 1 || string(res.Records[0].Value) != "g" {
		t.Fatalf("fetch: %+v %v", res, err)
	}
	_, err = admin.NewFromClient(c).DescribeTopic(ctx, "nope")
	wantCode(t, err, connect.CodeNotFound)
}

// TestProducerRetiresIdleTopics: a topic's sender goroutine exits when the
// topic has been idle, and comes back with the next record.
func TestProducerRetiresIdleTopics(t *testing.T) {
	defer sdk.SetTopicIdleTimeout(50 * time.Millisecond)()
	ctx := testCtx(t)
	c := newClient(t)
	topic := uniq("idle")
	createTopic(t, c, topic, 1)
	p := c.NewProducer(sdk.ProducerOptions{})
	defer p.Close(ctx)
	for i := range 2 {
		if _, err := p.ProduceSync(ctx, sdk.Record{Topic: topic, Value: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		if p.Topics() != 1 {
			t.Fatalf("round %d: %d topic senders after produce, want 1", i, p.Topics())
		}
		testenv.Eventually(5*time.Second, func() bool { return p.Topics() == 0 })
		if p.Topics() != 0 {
			t.Fatalf("round %d: idle topic sender still running", i)
		}
	}
}
