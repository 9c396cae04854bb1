package ingest

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/varve-io/varve/internal/obs"
)

type instruments struct {
	records       metric.Int64Counter
	bytes         metric.Int64Counter
	objectBytes   metric.Int64Counter
	flushes       metric.Int64Counter
	backpressure  metric.Int64Counter
	duplicates    metric.Int64Counter
	stateReads    metric.Int64Counter
	outOfOrder    metric.Int64Counter
	orderWaits    metric.Int64Counter
	putHedges     metric.Int64Counter
	putHedgesWon  metric.Int64Counter
	putSeconds    metric.Float64Histogram
	commitSeconds metric.Float64Histogram
	flushSeconds  metric.Float64Histogram

	// tracer is nil when tracing is off: then no span is made at all.
	tracer trace.Tracer
}

func newInstruments(mp metric.MeterProvider, tp trace.TracerProvider) (instruments, error) {
	m := mp.Meter("github.com/varve-io/varve/ingest")
	var in instruments
	var err error
	set := func(e error) {
		if err == nil {
			err = e
		}
	}
	in.records, _ = m.Int64Counter("varve.ingest.records", metric.WithDescription("Records accepted for produce."))
	in.bytes, _ = m.Int64Counter("varve.ingest.bytes", metric.WithUnit("By"), metric.WithDescription("Uncompressed record bytes accepted."))
	in.objectBytes, _ = m.Int64Counter("varve.ingest.object.bytes", metric.WithUnit("By"), metric.WithDescription("Segment object bytes stored."))
	in.flushes, _ = m.Int64Counter("varve.ingest.flushes", metric.WithDescription("Segment objects stored (one PUT each)."))
	in.backpressure, _ = m.Int64Counter("varve.ingest.backpressure", metric.WithDescription("Produce requests refused because the buffer was full."))
	in.duplicates, _ = m.Int64Counter("varve.ingest.duplicates", metric.WithDescription("Idempotent batches answered as duplicates of committed ones."))
	in.stateReads, _ = m.Int64Counter("varve.ingest.producer_state.reads", metric.WithDescription("etcd reads of idempotent producers' state before buffering (requests the node's remembered states could not accept)."))
	in.outOfOrder, _ = m.Int64Counter("varve.ingest.out_of_order", metric.WithDescription("Idempotent produce requests refused as out of order (a gap in a producer's sequence that no earlier batch filled in time)."))
	in.orderWaits, _ = m.Int64Counter("varve.ingest.order_waits", metric.WithDescription("Idempotent produce requests that arrived ahead of their producer's sequence and waited for the earlier batches."))
	in.putHedges, _ = m.Int64Counter("varve.ingest.put.hedges", metric.WithDescription("Segment PUTs raced by a second PUT of the same bytes under a new key, because the first was slower than twice the p90 of recent PUTs."))
	in.putHedgesWon, _ = m.Int64Counter("varve.ingest.put.hedges.won", metric.WithDescription("Hedged segment PUTs whose second PUT stored the object first."))
	var e error
	in.putSeconds, e = m.Float64Histogram("varve.ingest.put.duration", metric.WithUnit("s"), obs.LatencyBuckets, metric.WithDescription("Segment build and PUT time."))
	set(e)
	in.commitSeconds, e = m.Float64Histogram("varve.ingest.commit.duration", metric.WithUnit("s"), obs.LatencyBuckets, metric.WithDescription("etcd commit time per segment."))
	set(e)
	in.flushSeconds, e = m.Float64Histogram("varve.ingest.flush.duration", metric.WithUnit("s"), obs.LatencyBuckets, metric.WithDescription("Time from a file's first record to its commit."))
	set(e)
	// The counters autoscaling and alerts read exist from the start, at 0:
	// a rate over a series that appears only at the first event is empty
	// until then (terraform/modules/varve scales on these).
	for _, c := range []metric.Int64Counter{in.records, in.bytes, in.flushes, in.backpressure, in.putHedges, in.putHedgesWon} {
		c.Add(context.Background(), 0)
	}
	if tp != nil {
		in.tracer = tp.Tracer("github.com/varve-io/varve/ingest")
	}
	return in, err
}

// observeRetries exports rc's count as varve.ingest.commit.retries.
func observeRetries(mp metric.MeterProvider, rc RetryCounter) error {
	_, err := mp.Meter("github.com/varve-io/varve/ingest").Int64ObservableCounter("varve.ingest.commit.retries",
		metric.WithDescription("Commit attempts made again: direct transactions that lost to a concurrent commit, sequencer calls repeated after a lost or busy leader."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(rc.CommitRetries())
			return nil
		}))
	return err
}

// maxFlushLinks bounds the request spans one flush span links to (the SDK's
// default link limit); varve.requests still counts them all.
const maxFlushLinks = 128

// flushTrace is a file's flush span and the produce requests it answers.
// A flush serves many requests, so it is not any one request's child: it
// is a trace of its own whose span links to each request's span, and each
// request's span links back to it (docs/observability.md).
type flushTrace struct {
	ctx      context.Context // carries the flush span; nil when untraced
	span     trace.Span
	reqs     []trace.Span
	requests int
}

// traceRequestLocked notes that the request of ctx has records in f.
func (in *Ingester) traceRequestLocked(ctx context.Context, f *file) {
	if in.m.tracer == nil {
		return
	}
	sp := trace.SpanFromContext(ctx)
	if !sp.SpanContext().IsValid() {
		return
	}
	f.trace.requests++
	if len(f.trace.reqs) < maxFlushLinks {
		f.trace.reqs = append(f.trace.reqs, sp)
	}
}

// startFlushSpan starts f's ingest.flush span when f is sealed. It begins
// when f's first record arrived, so it covers the linger too.
func (in *Ingester) startFlushSpan(f *file) {
	if in.m.tracer == nil {
		return
	}
	links := make([]trace.Link, 0, len(f.trace.reqs))
	for _, s := range f.trace.reqs {
		links = append(links, trace.Link{SpanContext: s.SpanContext()})
	}
	f.trace.ctx, f.trace.span = in.m.tracer.Start(context.Background(), "ingest.flush",
		trace.WithNewRoot(), trace.WithTimestamp(f.opened), trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.Int("varve.requests", f.trace.requests),
			attribute.Int("varve.records", f.records),
			attribute.Int64("varve.bytes", f.bytes),
			attribute.Int("varve.blocks", len(f.order)),
		))
	f.trace.span.AddEvent("sealed")
	back := trace.Link{SpanContext: f.trace.span.SpanContext(), Attributes: []attribute.KeyValue{attribute.String("varve.link", "flush")}}
	for _, s := range f.trace.reqs {
		s.AddLink(back)
	}
	f.trace.reqs = nil
}

// startStepSpan starts a child span of f's flush (ingest.put,
// ingest.commit); end records the step's error.
func (in *Ingester) startStepSpan(f *file, name string) (context.Context, func(error)) {
	if f.trace.ctx == nil {
		return context.Background(), func(error) {}
	}
	ctx, span := in.m.tracer.Start(f.trace.ctx, name)
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// putTraced notes the stored object on the ingest.put span.
func (in *Ingester) putTraced(ctx context.Context, f *file, size int) {
	if f.trace.ctx == nil {
		return
	}
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("varve.object", f.object), attribute.Int("varve.object.bytes", size))
}

// endFlushSpan ends f's flush span once its outcome is known.
func (in *Ingester) endFlushSpan(f *file) {
	if f.trace.span == nil {
		return
	}
	if f.err != nil {
		f.trace.span.RecordError(f.err)
		f.trace.span.SetStatus(codes.Error, f.err.Error())
	} else if n := len(f.errs); n > 0 {
		f.trace.span.SetStatus(codes.Error, "some partitions were not committed")
		f.trace.span.SetAttributes(attribute.Int("varve.failed_blocks", n))
	}
	f.trace.span.SetAttributes(attribute.String("varve.object", f.object))
	f.trace.span.End(trace.WithTimestamp(time.Now()))
}
