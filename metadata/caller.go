package metadata

import (
	"context"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
)

// Who asks etcd: every unary etcd request a Client sends is counted in
// varve_etcd_requests_total by method (Txn, Range, Put, DeleteRange,
// LeaseGrant, ...) and by the caller its context names, so that an
// operator (and varve bench) can tell the sequencer's batch transactions
// from compaction's, the clients' API calls' and the rest.

type callerKey struct{}

// Callers of etcd requests, for WithCaller. An API request is named by its
// Connect procedure instead ("/varve.v1.ProducerService/InitProducer").
const (
	CallerSequencer = "sequencer" // the leader's batch transactions (a due checkpoint rides in one), recovery, election
	// CallerSequencerRead and CallerSequencerCheckpoint are the leader's
	// reads of topics and producers before a batch, and its checkpoints
	// written alone (no batch came to carry them).
	CallerSequencerRead       = "sequencer.read"
	CallerSequencerCheckpoint = "sequencer.checkpoint"
	CallerIngest              = "ingest"     // ingest nodes' commits: the direct path's transactions, the sequencer client's leader lookups
	CallerCompaction          = "compaction" // the compact role: claims, swaps, pruning
	CallerJanitor             = "janitor"    // retention, garbage collection, statistics
	CallerCache               = "cache"      // the watched caches' reads
	CallerGroups              = "groups"     // consumer group sessions' own requests
	CallerNode                = "node"       // start-up, registration, readiness
	CallerOther               = "other"      // a context that names none
)

// WithCaller names the caller of the etcd requests made with ctx (and the
// contexts derived from it) in varve_etcd_requests_total. A request whose
// context names none counts as CallerOther.
func WithCaller(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}

// CallerOf is the caller ctx names (WithCaller), or CallerOther.
func CallerOf(ctx context.Context) string {
	if c, ok := ctx.Value(callerKey{}).(string); ok && c != "" {
		return c
	}
	return CallerOther
}

// requestCounter counts etcd requests by method and caller.
type requestCounter struct {
	c     metric.Int64Counter
	attrs sync.Map // method + "\x00" + caller -> metric.MeasurementOption
}

func newRequestCounter(mp metric.MeterProvider) (*requestCounter, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c, err := mp.Meter("github.com/varve-io/varve/metadata").Int64Counter("varve.etcd.requests",
		metric.WithDescription("Unary etcd requests this process sent, by method (Txn, Range, Put, ...) and by caller (a Varve subsystem, or the API procedure a client called)."))
	if err != nil {
		return nil, err
	}
	return &requestCounter{c: c}, nil
}

// interceptor counts each unary request as it is sent (answered or not).
func (r *requestCounter) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	m := method[strings.LastIndexByte(method, '/')+1:]
	caller := CallerOf(ctx)
	k := m + "\x00" + caller
	o, ok := r.attrs.Load(k)
	if !ok {
		o, _ = r.attrs.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(attribute.String("method", m), attribute.String("caller", caller))))
	}
	r.c.Add(context.WithoutCancel(ctx), 1, o.(metric.AddOption))
	return invoker(ctx, method, req, reply, cc, opts...)
}
