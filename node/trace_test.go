package node_test

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// collector is an in-process OTLP/gRPC trace receiver.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []collected
}

type collected struct {
	span     *tracepb.Span
	resource map[string]string
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		res := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			res[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, collected{s, res})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// find returns the spans named name that match.
func (c *collector) find(name string, match func(*tracepb.Span) bool) []collected {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []collected
	for _, s := range c.spans {
		if s.span.GetName() == name && (match == nil || match(s.span)) {
			out = append(out, s)
		}
	}
	return out
}

func startCollector(t *testing.T) (*collector, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return c, ln.Addr().String()
}

func attr(s *tracepb.Span, key string) *commonpb.AnyValue {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

func linksTo(s *tracepb.Span, traceID, spanID []byte) bool {
	for _, l := range s.GetLinks() {
		if bytes.Equal(l.GetTraceId(), traceID) && bytes.Equal(l.GetSpanId(), spanID) {
			return true
		}
	}
	return false
}

// TestTraceReachesOTLPCollector: a produce through the SDK inside the
// caller's span reaches an OTLP collector as one trace (SDK client span →
// node server span), linked both ways to the flush that answered it, whose
// PUT and commit are its children; a fetch on another node that must read
// the bucket shows fetch → block tier → GET.
func TestTraceReachesOTLPCollector(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // export spans every 50 ms
	col, endpoint := startCollector(t)
	etcd := testenv.StartEtcd(t)
	objects := filepath.Join(t.TempDir(), "objects")
	start := func(id string, roles ...string) *node.Node {
		cfg := node.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.NodeID = id
		cfg.Roles = roles
		cfg.EtcdEndpoints = etcd
		cfg.Store = "fs:" + objects
		cfg.Linger = 20 * time.Millisecond
		cfg.OTLPEndpoint = endpoint
		// The writer keeps nothing for the reader, which reads the bucket
		// (fetch → fetch.block → store.get below).
		cfg.WriterCacheBytes = node.OffBytes
		n, err := node.New(context.Background(), cfg, node.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
		return n
	}
	writer := start("writer", node.RoleIngest, node.RoleSequence)
	reader := start("reader", node.RoleFetch)

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx := context.Background()
	wc := sdk.New(writer.Addr(), sdk.WithTracerProvider(tp))
	defer wc.Close()
	if _, err := admin.NewFromClient(wc).CreateTopic(ctx, "traced", 1, nil); err != nil {
		t.Fatal(err)
	}
	pctx, parent := tp.Tracer("test").Start(ctx, "app.produce")
	if _, err := wc.Produce(pctx, "traced", []sdk.Record{{Partition: 0, Value: []byte("hello")}}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	tid := parent.SpanContext().TraceID()
	var clientSpan trace.SpanContext
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindClient && s.Name() == "varve.v1.ProduceService/Produce" {
			clientSpan = s.SpanContext()
		}
	}
	if clientSpan.TraceID() != tid {
		t.Fatalf("the SDK made no client span for Produce in the caller's trace: %v", rec.Ended())
	}

	// The node's server span continues the SDK's trace.
	var server collected
	if !testenv.Eventually(20*time.Second, func() bool {
		got := col.find("varve.v1.ProduceService/Produce", func(s *tracepb.Span) bool {
			return bytes.Equal(s.GetTraceId(), tid[:]) && s.GetKind() == tracepb.Span_SPAN_KIND_SERVER
		})
		if len(got) == 1 {
			server = got[0]
		}
		return len(got) == 1
	}) {
		t.Fatalf("the collector got no server span of the produce in trace %s", tid)
	}
	csid := clientSpan.SpanID()
	if !bytes.Equal(server.span.GetParentSpanId(), csid[:]) {
		t.Errorf("server span's parent %x, want the SDK's client span %s", server.span.GetParentSpanId(), csid)
	}
	if server.resource["service.name"] != "varve" || server.resource["varve.node.id"] != "writer" || server.resource["varve.roles"] != "ingest,sequence" {
		t.Errorf("resource of the node's spans: %v", server.resource)
	}

	// The flush that answered it links to the request, and the request
	// links back; PUT and commit are the flush's children.
	var flush collected
	if !testenv.Eventually(20*time.Second, func() bool {
		got := col.find("ingest.flush", func(s *tracepb.Span) bool { return linksTo(s, tid[:], server.span.GetSpanId()) })
		if len(got) == 1 {
			flush = got[0]
		}
		return len(got) == 1
	}) {
		t.Fatalf("no ingest.flush span linked to the produce's server span")
	}
	if !linksTo(server.span, flush.span.GetTraceId(), flush.span.GetSpanId()) {
		t.Errorf("the produce's server span does not link to its flush")
	}
	if v := attr(flush.span, "varve.requests"); v.GetIntValue() != 1 {
		t.Errorf("flush varve.requests = %v, want 1", v)
	}
	for _, step := range []string{"ingest.put", "ingest.commit"} {
		if !testenv.Eventually(20*time.Second, func() bool {
			return len(col.find(step, func(s *tracepb.Span) bool {
				return bytes.Equal(s.GetTraceId(), flush.span.GetTraceId()) && bytes.Equal(s.GetParentSpanId(), flush.span.GetSpanId())
			})) == 1
		}) {
			t.Errorf("no %s span under the flush", step)
		}
	}
	put := col.find("ingest.put", func(s *tracepb.Span) bool { return bytes.Equal(s.GetParentSpanId(), flush.span.GetSpanId()) })
	if len(put) == 1 && attr(put[0].span, "varve.object").GetStringValue() == "" {
		t.Errorf("ingest.put names no object")
	}

	// A fetch on the reader, which never saw the block: fetch → block
	// (tier bucket) → GET.
	rc := sdk.New(reader.Addr(), sdk.WithTracerProvider(tp))
	defer rc.Close()
	fctx, fparent := tp.Tracer("test").Start(ctx, "app.fetch")
	res, err := rc.Fetch(fctx, "traced", 0, 0, 0, 0)
	fparent.End()
	if err != nil || len(res.Records) != 1 {
		t.Fatalf("fetch: %v %v", res, err)
	}
	ftid := fparent.SpanContext().TraceID()
	var fetch, block []collected
	if !testenv.Eventually(20*time.Second, func() bool {
		fetch = col.find("varve.v1.FetchService/Fetch", func(s *tracepb.Span) bool {
			return bytes.Equal(s.GetTraceId(), ftid[:]) && s.GetKind() == tracepb.Span_SPAN_KIND_SERVER
		})
		if len(fetch) != 1 {
			return false
		}
		block = col.find("fetch.block", func(s *tracepb.Span) bool { return bytes.Equal(s.GetParentSpanId(), fetch[0].span.GetSpanId()) })
		return len(block) == 1 && len(col.find("store.get", func(s *tracepb.Span) bool {
			return bytes.Equal(s.GetParentSpanId(), block[0].span.GetSpanId())
		})) == 1
	}) {
		t.Fatalf("no fetch → fetch.block → store.get spans in trace %s: fetch %v block %v", ftid, fetch, block)
	}
	if tier := attr(block[0].span, "varve.tier").GetStringValue(); tier != "bucket" {
		t.Errorf("fetch.block varve.tier = %q, want bucket", tier)
	}
	if block[0].resource["varve.node.id"] != "reader" {
		t.Errorf("fetch.block from node %q", block[0].resource["varve.node.id"])
	}
}
