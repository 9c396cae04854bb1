package sequencer

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/varve-io/varve/internal/obs"
)

// instruments are the sequencer's metrics (docs/observability.md): what a
// leader writes, and whether this node leads.
type instruments struct {
	batches, commits, txns metric.Int64Counter
	producerReads          metric.Int64Counter
	perBatch               metric.Int64Histogram
	txnSeconds             metric.Float64Histogram
}

// commitsPerBatchBuckets are the histogram boundaries of commits per
// batch.
var commitsPerBatchBuckets = metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256)

func newInstruments(s *Sequencer, mp metric.MeterProvider) (instruments, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/varve-io/varve/sequencer")
	var in instruments
	var err error
	set := func(e error) {
		if err == nil {
			err = e
		}
	}
	var e error
	in.batches, e = m.Int64Counter("varve.sequencer.batches", metric.WithDescription("Batches written by this node as sequencer leader (one etcd transaction each)."))
	set(e)
	in.commits, e = m.Int64Counter("varve.sequencer.commits", metric.WithDescription("Ingest nodes' commits (flush manifests) answered by the batches this node wrote."))
	set(e)
	in.txns, e = m.Int64Counter("varve.sequencer.batch.txns", metric.WithDescription("Batch write transactions sent to etcd (a fence may have refused some: then the batch is decided again)."))
	set(e)
	in.producerReads, e = m.Int64Counter("varve.sequencer.producer.reads", metric.WithDescription("Producer identities ReadProducer read from etcd (the others were answered from the identity the leader held)."))
	set(e)
	in.perBatch, e = m.Int64Histogram("varve.sequencer.batch.commits", commitsPerBatchBuckets, metric.WithDescription("Commits per batch written."))
	set(e)
	in.txnSeconds, e = m.Float64Histogram("varve.sequencer.batch.duration", metric.WithUnit("s"), obs.LatencyBuckets, metric.WithDescription("Time of one batch's etcd transaction."))
	set(e)
	leader, e := m.Int64ObservableGauge("varve.sequencer.leader", metric.WithDescription("1 while this node is the recovered sequencer leader."))
	set(e)
	term, e := m.Int64ObservableGauge("varve.sequencer.term", metric.WithDescription("Term number of this node's leadership (its election key's create revision); 0 when not leading."))
	set(e)
	if err != nil {
		return in, err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		n := s.Term()
		o.ObserveInt64(term, n)
		if n > 0 {
			o.ObserveInt64(leader, 1)
		} else {
			o.ObserveInt64(leader, 0)
		}
		return nil
	}, leader, term)
	// The counters exist from the start, at 0, so rates are defined.
	for _, c := range []metric.Int64Counter{in.batches, in.commits, in.txns, in.producerReads} {
		c.Add(context.Background(), 0)
	}
	return in, err
}

// Term returns the term this node leads (recovered), or 0.
func (s *Sequencer) Term() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return 0
	}
	return s.cur.t.Number()
}

func (s *Sequencer) recordTxn(d time.Duration) {
	s.txns.Add(1)
	s.m.txns.Add(context.Background(), 1)
	s.m.txnSeconds.Record(context.Background(), d.Seconds())
}

func (s *Sequencer) recordProducerRead() {
	s.producerReads.Add(1)
	s.m.producerReads.Add(context.Background(), 1)
}

func (s *Sequencer) recordBatch(commits int) {
	s.batches.Add(1)
	s.commits.Add(int64(commits))
	s.m.batches.Add(context.Background(), 1)
	s.m.commits.Add(context.Background(), int64(commits))
	s.m.perBatch.Record(context.Background(), int64(commits))
}
