package sdk_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/sdk"
)

// loseAnswers forwards requests and, for the first n Produce calls, drops
// the answer after the cluster processed the request: the producer sees a
// lost connection although the records are stored.
type loseAnswers struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (l *loseAnswers) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(req)
	if err != nil || !strings.HasSuffix(req.URL.Path, "/Produce") {
		return resp, err
	}
	if l.n.Add(-1) >= 0 {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errors.New("connection reset (injected after the cluster answered)")
	}
	return resp, nil
}

// TestIdempotentProducerRetriesDoNotDuplicate: the default producer is
// idempotent; answers lost after the commit make it retry, and the cluster
// answers the retries with the original offsets: every record is stored
// once, in order, at the offset its callback got.
func TestIdempotentProducerRetriesDoNotDuplicate(t *testing.T) {
	ctx := testCtx(t)
	lose := &loseAnswers{next: http.DefaultTransport}
	lose.n.Store(5)
	c := newClient(t, sdk.WithHTTPClient(&http.Client{Transport: lose}))
	topic := uniq("idem")
	createTopic(t, c, topic, 3)
	p := c.NewProducer(sdk.ProducerOptions{Linger: time.Millisecond, MaxBatchBytes: 512, RetryBackoff: time.Millisecond})
	const n = 300
	var got produced
	for i := range n {
		p.Produce(ctx, sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Key: fmt.Appendf(nil, "k%d", i%11), Value: fmt.Appendf(nil, "%d", i)}, got.cb)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got.errs) > 0 {
		t.Fatalf("%d records failed, first: %v", len(got.errs), got.errs[0])
	}
	if lose.n.Load() >= 0 {
		t.Fatalf("only %d answers were lost", 5-lose.n.Load()-1)
	}
	if id, _ := p.Identity(); id <= 0 {
		t.Fatalf("producer id %d: the default producer is not idempotent", id)
	}
	total := 0
	for part := int32(0); part < 3; part++ {
		acked := got.byPart[part]
		stored := readAll(t, c, topic, part)
		total += len(stored)
		if len(stored) != len(acked) {
			t.Fatalf("partition %d: %d records stored, %d acknowledged (duplicates?)", part, len(stored), len(acked))
		}
		last := -1
		for i, r := range acked {
			if r.Offset != int64(i) || string(stored[i].Value) != string(r.Value) {
				t.Fatalf("partition %d: callback %d got offset %d value %q, stored %q", part, i, r.Offset, r.Value, stored[i].Value)
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
		t.Fatalf("%d records stored, want %d", total, n)
	}
}

// TestProducerFencing: a second instance resuming the producer id fences
// the first, whose records then fail with ErrProducerFenced (a
// FailedPrecondition from the cluster) and keep failing.
func TestProducerFencing(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	topic := uniq("fence")
	createTopic(t, c, topic, 1)
	old := c.NewProducer(sdk.ProducerOptions{Linger: -1})
	defer old.Close(ctx)
	if _, err := old.ProduceSync(ctx, sdk.Record{Topic: topic, Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	id, epoch := old.Identity()
	successor := c.NewProducer(sdk.ProducerOptions{Linger: -1, ProducerID: id})
	defer successor.Close(ctx)
	if _, err := successor.ProduceSync(ctx, sdk.Record{Topic: topic, Value: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if id2, epoch2 := successor.Identity(); id2 != id || epoch2 != epoch+1 {
		t.Fatalf("successor identity %d/%d, want %d/%d", id2, epoch2, id, epoch+1)
	}
	for range 2 {
		_, err := old.ProduceSync(ctx, sdk.Record{Topic: topic, Value: []byte("zombie")})
		if !errors.Is(err, sdk.ErrProducerFenced) || connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("fenced producer: %v, want ErrProducerFenced from a FailedPrecondition", err)
		}
	}
	stored := readAll(t, c, topic, 0)
	if len(stored) != 2 {
		t.Fatalf("%d records stored, want 2 (nothing from the fenced producer)", len(stored))
	}
}

// TestProducerWithoutIdempotence keeps the old behaviour: no producer id.
func TestProducerWithoutIdempotence(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	topic := uniq("plain")
	createTopic(t, c, topic, 2)
	p := c.NewProducer(sdk.ProducerOptions{DisableIdempotence: true, Linger: -1})
	defer p.Close(ctx)
	recs, err := p.ProduceSync(ctx, sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Value: []byte("x")})
	if err != nil || recs[0].Offset != 0 {
		t.Fatalf("produce: %v %v", recs, err)
	}
	if id, _ := p.Identity(); id != 0 {
		t.Fatalf("producer id %d without idempotence", id)
	}
}

// TestIdempotenceBadInput sends bad idempotent requests through the raw
// API: each gets a precise code (and an ErrorInfo reason for the
// idempotence refusals) and changes nothing.
func TestIdempotenceBadInput(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	topic := uniq("idembad")
	createTopic(t, c, topic, 2)
	raw := varvev1connect.NewProduceServiceClient(http.DefaultClient, addr)
	init := func(id int64) *varvev1.InitProducerResponse {
		t.Helper()
		res, err := raw.InitProducer(ctx, connect.NewRequest(&varvev1.InitProducerRequest{ProducerId: id}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	p := init(0)
	rec := func(part int32) []*varvev1.ProduceRecord {
		return []*varvev1.ProduceRecord{{Partition: proto.Int32(part), Record: &varvev1.Record{Value: []byte("v")}}}
	}
	seq := func(part, first int32) []*varvev1.PartitionSequence {
		return []*varvev1.PartitionSequence{{Partition: part, FirstSequence: first}}
	}
	if _, err := raw.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: topic, Records: rec(0), ProducerId: p.GetProducerId(), Sequences: seq(0, 0)})); err != nil {
		t.Fatal(err)
	}
	old := init(0)
	init(old.GetProducerId()) // fences epoch 0
	cases := []struct {
		name   string
		req    *varvev1.ProduceRequest
		code   connect.Code
		reason string
	}{
		{"gap", &varvev1.ProduceRequest{Records: rec(0), ProducerId: p.GetProducerId(), Sequences: seq(0, 3)}, connect.CodeFailedPrecondition, "OUT_OF_ORDER_SEQUENCE"},
		{"fenced epoch", &varvev1.ProduceRequest{Records: rec(1), ProducerId: old.GetProducerId(), Sequences: seq(1, 0)}, connect.CodeFailedPrecondition, "PRODUCER_FENCED"},
		{"unknown producer", &varvev1.ProduceRequest{Records: rec(1), ProducerId: 1 << 52, Sequences: seq(1, 0)}, connect.CodeFailedPrecondition, "UNKNOWN_PRODUCER"},
		{"epoch never issued", &varvev1.ProduceRequest{Records: rec(1), ProducerId: p.GetProducerId(), ProducerEpoch: 9, Sequences: seq(1, 0)}, connect.CodeInvalidArgument, ""},
		{"sequences without a producer", &varvev1.ProduceRequest{Records: rec(1), Sequences: seq(1, 0)}, connect.CodeInvalidArgument, ""},
		{"no partition", &varvev1.ProduceRequest{Records: rec(-1), ProducerId: p.GetProducerId(), Sequences: seq(-1, 1)}, connect.CodeInvalidArgument, ""},
		{"missing sequence", &varvev1.ProduceRequest{Records: rec(1), ProducerId: p.GetProducerId()}, connect.CodeInvalidArgument, ""},
		{"two sequences for a partition", &varvev1.ProduceRequest{Records: rec(1), ProducerId: p.GetProducerId(), Sequences: append(seq(1, 0), seq(1, 0)...)}, connect.CodeInvalidArgument, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := readAll(t, c, topic, 0)
			before1 := readAll(t, c, topic, 1)
			tc.req.Topic = topic
			_, err := raw.Produce(ctx, connect.NewRequest(tc.req))
			wantCode(t, err, tc.code)
			var ce *connect.Error
			errors.As(err, &ce)
			got := ""
			for _, d := range ce.Details() {
				if v, derr := d.Value(); derr == nil {
					if ei, ok := v.(*errdetails.ErrorInfo); ok {
						got = ei.GetReason()
					}
				}
			}
			if got != tc.reason {
				t.Fatalf("reason %q, want %q (%v)", got, tc.reason, err)
			}
			if len(readAll(t, c, topic, 0)) != len(before) || len(readAll(t, c, topic, 1)) != len(before1) {
				t.Fatal("a refused request changed the log")
			}
		})
	}
}

// encodings records, per RPC path, the Accept-Encoding of the requests
// and the Content-Encoding of the answers.
type encodings struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen map[string][]string
}

func (e *encodings) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := e.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen[req.URL.Path] = append(e.seen[req.URL.Path], "accept="+req.Header.Get("Accept-Encoding")+" content="+resp.Header.Get("Content-Encoding"))
	return resp, nil
}

// TestProduceAsksForNoGzip: the producer's Produce requests ask for no
// gzip and get none (an answer is one offset per record: gzip costs the
// node CPU per request for a few KiB saved), while the other services keep
// Connect's default.
func TestProduceAsksForNoGzip(t *testing.T) {
	ctx := testCtx(t)
	enc := &encodings{next: http.DefaultTransport, seen: map[string][]string{}}
	c := newClient(t, sdk.WithHTTPClient(&http.Client{Transport: enc}))
	topic := uniq("nogzip")
	createTopic(t, c, topic, 2)
	p := c.NewProducer(sdk.ProducerOptions{Linger: time.Millisecond})
	var got produced
	for i := range 2000 {
		p.Produce(ctx, sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "value %d", i)}, got.cb)
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if len(got.errs) > 0 {
		t.Fatalf("%d records failed, first: %v", len(got.errs), got.errs[0])
	}
	enc.mu.Lock()
	defer enc.mu.Unlock()
	produce := enc.seen["/varve.v1.ProduceService/Produce"]
	if len(produce) == 0 {
		t.Fatal("no Produce request seen")
	}
	for _, s := range produce {
		if strings.Contains(s, "gzip") {
			t.Fatalf("a Produce request/answer has %q, want no gzip", s)
		}
	}
	if topics := enc.seen["/varve.v1.TopicService/CreateTopic"]; len(topics) == 0 || !strings.Contains(topics[0], "accept=gzip") {
		t.Fatalf("CreateTopic: %q, want Connect's default (accepts gzip)", topics)
	}
}
