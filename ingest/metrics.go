package ingest

import (
	"go.opentelemetry.io/otel/metric"

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
	putSeconds    metric.Float64Histogram
	commitSeconds metric.Float64Histogram
	flushSeconds  metric.Float64Histogram
}

func newInstruments(mp metric.MeterProvider) (instruments, error) {
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
	var e error
	in.putSeconds, e = m.Float64Histogram("varve.ingest.put.duration", metric.WithUnit("s"), obs.LatencyBuckets, metric.WithDescription("Segment build and PUT time."))
	set(e)
	in.commitSeconds, e = m.Float64Histogram("varve.ingest.commit.duration", metric.WithUnit("s"), obs.LatencyBuckets, metric.WithDescription("etcd commit time per segment."))
	set(e)
	in.flushSeconds, e = m.Float64Histogram("varve.ingest.flush.duration", metric.WithUnit("s"), obs.LatencyBuckets, metric.WithDescription("Time from a file's first record to its commit."))
	set(e)
	return in, err
}
