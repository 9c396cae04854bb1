package sdk

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/flushtick"
	"github.com/varve-io/varve/internal/murmur2"
	"github.com/varve-io/varve/sdk/internal/inflight"
)

// ErrProducerClosed is the error of records given to a closed producer, and
// of records still unsent when Close gave up.
var ErrProducerClosed = errors.New("producer closed")

// Idempotence errors (see docs/idempotence.md). They wrap the cluster's
// Connect error (FailedPrecondition).
var (
	// ErrProducerFenced: another instance took over the producer id (a newer
	// epoch); this producer fails every record from then on.
	ErrProducerFenced = errors.New("producer fenced by a newer instance")
	// ErrOutOfOrderSequence: the cluster expected another sequence for a
	// partition. The batch fails; the producer starts a new epoch, so
	// later records are sent normally.
	ErrOutOfOrderSequence = errors.New("out of order sequence")
	// ErrUnknownProducer: the producer id is unknown or expired and a new
	// one could not be obtained within the retries.
	ErrUnknownProducer = errors.New("unknown producer id")
)

// Producer defaults.
const (
	DefaultLinger           = 5 * time.Millisecond
	DefaultMaxBatchBytes    = 1 << 20
	DefaultMaxBufferedBytes = 64 << 20
	DefaultMaxInFlight      = 5
	DefaultDeliveryTimeout  = 2 * time.Minute
	DefaultRetryBackoff     = 50 * time.Millisecond
	DefaultMaxRetryBackoff  = 5 * time.Second
	DefaultRequestTimeout   = 30 * time.Second
)

// ErrDeliveryTimeout is the error of records not acknowledged within
// ProducerOptions.DeliveryTimeout; it wraps the last attempt's error.
var ErrDeliveryTimeout = inflight.ErrDeliveryTimeout

// ProducerOptions configures a Producer. Zero fields take the defaults.
type ProducerOptions struct {
	// Linger is how long a topic's first pending record waits for others to
	// join its batch (default 5ms; negative sends as soon as possible).
	// After the linger, a batch is held until just before the node's next
	// seal, which every Produce answer names: the node acknowledges every
	// record that reached it before a seal at once, so earlier calls would
	// only wait there (see sendAt). A full batch, Flush and Close send at
	// once.
	Linger time.Duration
	// MaxBatchBytes caps a batch, that is one Produce RPC (default 1 MiB).
	// A record larger than this is sent alone. Larger values than
	// MaxRecordBytes (64 MiB) are lowered to it, so that every request fits
	// a node's default max_request_bytes (64 MiB plus 1 MiB of envelope);
	// a node configured with a smaller max_request_bytes needs a smaller
	// MaxBatchBytes.
	MaxBatchBytes int
	// MaxBufferedBytes caps the records produced but not yet acknowledged or
	// failed (default 64 MiB). Produce blocks while the buffer is full.
	MaxBufferedBytes int64
	// MaxInFlight is how many batches of a topic may be in flight at once
	// (default 5; at most 5 with idempotence, the producer state's window
	// of duplicates). Per partition, records are stored in Produce order
	// across retries with idempotence: after a failed attempt the topic's
	// batches are resent one at a time, in order. Without idempotence a
	// retry may reorder records when MaxInFlight > 1, as in Kafka.
	MaxInFlight int
	// DeliveryTimeout bounds the time from Produce to the callback
	// (default 2 min, as Kafka's delivery.timeout.ms): a record not
	// acknowledged by then fails with ErrDeliveryTimeout, whatever the
	// cluster does. Retries, to any address of the client, stop then.
	DeliveryTimeout time.Duration
	// Retries caps how often a batch is retried after a retriable failure
	// (Unavailable, ResourceExhausted, DeadlineExceeded, Aborted); default
	// 0, no cap but the DeliveryTimeout; negative for none. Other failures
	// fail the batch at once.
	Retries int
	// RetryBackoff and MaxRetryBackoff bound the exponential backoff between
	// retries (defaults 50ms and 5s, with jitter). A RetryInfo delay sent by
	// the cluster takes precedence.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// RequestTimeout bounds one attempt of a Produce RPC (default 30s;
	// negative for none). A timed-out attempt is retried.
	RequestTimeout time.Duration
	// Partitioner, if set, chooses the partition of records without
	// ExplicitPartition, given their key and the topic's partition count.
	// It must return a partition in [0, partitions). Nil lets the cluster
	// place such records (murmur2 of the key, sticky without a key).
	Partitioner func(key []byte, partitions int32) int32
	// DisableIdempotence turns the idempotent producer off. By default the
	// producer gets a producer id from the cluster and numbers each batch
	// per partition, so that a retry never stores a batch twice, through
	// any node; it then chooses every record's partition itself (the
	// Partitioner, else murmur2 of the key as the cluster would, else one
	// random partition per batch). Without idempotence a retry after a lost
	// answer may store a batch twice, and the cluster places records.
	DisableIdempotence bool
	// ProducerID resumes an idempotent producer id held by an earlier
	// instance (see Producer.Identity): the cluster bumps its epoch, which
	// fences that instance. 0 asks for a new id.
	ProducerID int64
}

func (o ProducerOptions) withDefaults() ProducerOptions {
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	o.MaxBatchBytes = min(o.MaxBatchBytes, MaxRecordBytes)
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if !o.DisableIdempotence {
		o.MaxInFlight = min(o.MaxInFlight, DefaultMaxInFlight)
	}
	if o.DeliveryTimeout <= 0 {
		o.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if o.Retries == 0 {
		o.Retries = math.MaxInt
	} else if o.Retries < 0 {
		o.Retries = 0
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = DefaultRetryBackoff
	}
	if o.MaxRetryBackoff <= 0 {
		o.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if o.MaxRetryBackoff < o.RetryBackoff {
		o.MaxRetryBackoff = o.RetryBackoff
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	return o
}

// topicIdleTimeout is how long a topic's sender goroutine waits for records
// before it exits.
var topicIdleTimeout = time.Minute

// Producer batches records per topic and sends each batch in one Produce
// RPC, retrying retriable failures. It is safe for concurrent use.
//
// Up to MaxInFlight batches of a topic are in flight; records of each
// partition are stored in the order they were given to Produce, retries
// included (with idempotence, the default). Every record completes within
// the DeliveryTimeout. A batch that finally fails fails all its records;
// later batches are still sent.
type Producer struct {
	c     *Client
	opts  ProducerOptions
	retry retryPolicy

	ctx    context.Context // cancelled when the producer stops
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	flushing int
	buffered int64
	progress chan struct{} // closed and replaced when records complete
	topics   map[string]*topicQueue

	seq *inflight.Sequencer // nil without idempotence

	// tick is the seal schedule of the node that answered last (nil: none
	// known), from the hint its Produce answers carry.
	tick atomic.Pointer[flushtick.Tick]
}

// sendAt is when a batch whose oldest record arrived at first is due: after
// the linger, and then at the last moment that still makes the node's next
// seal (internal/flushtick). The node acknowledges every record that
// reached it before a seal at once, so records sent earlier in the tick
// would wait there anyway; sent together they take one call instead of one
// per linger, and none waits behind a window of in-flight batches that
// all wait for the same seal.
func (p *Producer) sendAt(first time.Time) time.Time {
	at := first.Add(p.opts.Linger)
	if k := p.tick.Load(); k != nil && k.Fresh(at) {
		at = k.SendAt(at)
	}
	return at
}

// noteTick keeps the seal schedule an answer received at now carried, or
// forgets the last one when it carried none (a node whose files fill to
// flush_bytes before their tick, or one older than the hint).
func (p *Producer) noteTick(h http.Header, now time.Time) {
	if k := flushtick.FromHeader(h.Get(flushtick.Header), now); !k.At.IsZero() {
		p.tick.Store(&k)
		return
	}
	p.tick.Store(nil)
}

// topicQueue is one topic's pending records and its sender goroutine.
type topicQueue struct {
	name         string
	wake         chan struct{} // capacity 1
	pending      []*pendingRecord
	pendingBytes int
	enqueued     uint64 // records ever enqueued
	done         uint64 // records ever completed, in enqueue order

	partitions int32         // for the Partitioner; only the sender touches it
	compress   compressState // only the sender touches it
}

// Identity returns the idempotent producer's id and epoch (0, 0 before its
// first batch or without idempotence).
func (p *Producer) Identity() (id int64, epoch int32) {
	if p.seq == nil {
		return 0, 0
	}
	return p.seq.Identity()
}

type pendingRecord struct {
	rec  Record
	part int32 // the record's explicit partition, -1 to choose
	size int
	at   time.Time
	cb   func(Record, error)
}

// NewProducer returns a producer sending through c. Close it to flush and
// release its goroutines.
func (c *Client) NewProducer(opts ProducerOptions) *Producer {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Producer{
		c: c, opts: opts,
		retry:    retryPolicy{retries: opts.Retries, base: opts.RetryBackoff, maxDelay: opts.MaxRetryBackoff},
		ctx:      ctx,
		cancel:   cancel,
		progress: make(chan struct{}),
		topics:   make(map[string]*topicQueue),
	}
	if !opts.DisableIdempotence {
		p.seq = inflight.NewSequencer(ctx, opts.ProducerID, p.initProducer)
	}
	return p
}

// Produce queues rec for rec.Topic and returns; cb (which may be nil) is
// called exactly once with the record, its Partition and Offset filled in,
// and nil once it is stored, or with the error that failed it.
//
// Produce blocks while the producer's buffer is full. If ctx is done (before
// or while waiting), or the producer is closed, cb is called with the error
// before Produce returns; so cb must not take locks the caller of Produce
// holds. ctx only bounds this wait: a queued record is sent regardless.
//
// Callbacks of a topic run in order on that topic's sender goroutine; a
// slow callback delays the topic's next batch.
func (p *Producer) Produce(ctx context.Context, rec Record, cb func(Record, error)) {
	if cb == nil {
		cb = func(Record, error) {}
	}
	if err := ctx.Err(); err != nil {
		cb(rec, fmt.Errorf("produce to %s: %w", rec.Topic, ctxError(err)))
		return
	}
	part, err := rec.checkProduce()
	if err != nil {
		cb(rec, fmt.Errorf("produce to %s: %w", rec.Topic, err))
		return
	}
	size := recordSize(&rec)
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			cb(rec, fmt.Errorf("produce to %s: %w", rec.Topic, ErrProducerClosed))
			return
		}
		if p.buffered == 0 || p.buffered+int64(size) <= p.opts.MaxBufferedBytes {
			break
		}
		ch := p.progress
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			cb(rec, fmt.Errorf("produce to %s: waiting for buffer space: %w", rec.Topic, ctxError(ctx.Err())))
			return
		}
		p.mu.Lock()
	}
	tq := p.topics[rec.Topic]
	if tq == nil {
		tq = &topicQueue{name: rec.Topic, wake: make(chan struct{}, 1)}
		p.topics[rec.Topic] = tq
		p.wg.Add(1)
		go p.runTopic(tq)
	}
	p.buffered += int64(size)
	tq.pending = append(tq.pending, &pendingRecord{rec: rec, part: part, size: size, at: time.Now(), cb: cb})
	tq.pendingBytes += size
	tq.enqueued++
	if len(tq.pending) == 1 || tq.pendingBytes >= p.opts.MaxBatchBytes {
		signal(tq.wake)
	}
	p.mu.Unlock()
}

// ProduceSync produces recs and waits until each is stored or failed. It
// returns the records with Partition and Offset filled in and, if any
// failed, an error wrapping the first failure. If ctx is done first it
// returns ctx's error; the records may still be stored.
func (p *Producer) ProduceSync(ctx context.Context, recs ...Record) ([]Record, error) {
	out := make([]Record, len(recs))
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	wg.Add(len(recs))
	for i, r := range recs {
		p.Produce(ctx, r, func(r Record, err error) {
			out[i], errs[i] = r, err
			wg.Done()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("produce %d records: %w", len(recs), ctxError(ctx.Err()))
	}
	failed, first := 0, error(nil)
	for _, err := range errs {
		if err != nil {
			if first == nil {
				first = err
			}
			failed++
		}
	}
	if first != nil {
		return out, fmt.Errorf("%d of %d records failed: %w", failed, len(recs), first)
	}
	return out, nil
}

// Flush sends every record produced before the call without waiting for
// the linger, and waits until each is stored or failed (its callback has
// returned). Failures are reported to callbacks, not by Flush, which
// returns an error only when ctx is done first.
func (p *Producer) Flush(ctx context.Context) error {
	p.mu.Lock()
	p.flushing++
	defer func() {
		p.mu.Lock()
		p.flushing--
		p.mu.Unlock()
	}()
	targets := make(map[*topicQueue]uint64)
	for _, tq := range p.topics {
		if tq.done < tq.enqueued {
			targets[tq] = tq.enqueued
			signal(tq.wake)
		}
	}
	for {
		for tq, n := range targets {
			if tq.done >= n {
				delete(targets, tq)
			}
		}
		if len(targets) == 0 {
			p.mu.Unlock()
			return nil
		}
		ch := p.progress
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("flush: %w", ctxError(ctx.Err()))
		}
		p.mu.Lock()
	}
}

// Close refuses new records, flushes, and stops the producer. If ctx is
// done before everything is flushed, in-flight requests are cancelled,
// the records left fail with ErrProducerClosed, and Close returns ctx's
// error. Close may be called more than once.
func (p *Producer) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	for _, tq := range p.topics {
		signal(tq.wake)
	}
	p.broadcastLocked() // wake Produce calls waiting for space
	p.mu.Unlock()

	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("close producer: %w", ctxError(ctx.Err()))
		p.cancel()
		<-done
	}
	p.cancel()
	return err
}

func (p *Producer) broadcastLocked() {
	close(p.progress)
	p.progress = make(chan struct{})
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sendBatch is a batch's records and its request across attempts.
type sendBatch struct {
	recs []*pendingRecord
	st   sendState
}

type attemptResult struct {
	b   *inflight.Batch[*sendBatch]
	err error
}

// runTopic is a topic's sender: it takes batches from the queue when they
// are due and the window has room, sends them (up to MaxInFlight at once),
// handles their answers and runs their callbacks in order, until the
// producer is closed and everything is completed.
func (p *Producer) runTopic(tq *topicQueue) {
	defer p.wg.Done()
	w := inflight.NewWindow[*sendBatch](p.opts.MaxInFlight, p.seq)
	results := make(chan attemptResult, p.opts.MaxInFlight)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	ctxDone := p.ctx.Done()
	var idWait <-chan struct{}
	idle := false
	for {
		now := time.Now()
		p.mu.Lock()
		stopping := p.ctx.Err() != nil
		var dropped []*pendingRecord
		if stopping {
			dropped = p.takeLocked(tq, len(tq.pending), 1<<62)
		}
		var wake time.Time
		for !stopping && w.Room() && len(tq.pending) > 0 {
			if urgent := p.closed || p.flushing > 0 || p.opts.Linger < 0 || tq.pendingBytes >= p.opts.MaxBatchBytes; !urgent {
				if at := p.sendAt(tq.pending[0].at); now.Before(at) {
					wake = at
					break
				}
			}
			recs := p.takeLocked(tq, len(tq.pending), p.opts.MaxBatchBytes)
			w.Push(&sendBatch{recs: recs, st: sendState{idem: p.seq != nil}}, recs[0].at.Add(p.opts.DeliveryTimeout))
		}
		if len(tq.pending) == 0 && w.Len() == 0 {
			closed := p.closed
			if !closed && idle {
				// Retire the idle topic's sender; Produce starts a new one.
				delete(p.topics, tq.name)
			}
			p.mu.Unlock()
			p.complete(tq, dropped, fmt.Errorf("produce to %s: %w", tq.name, ErrProducerClosed))
			if closed || idle || stopping {
				return
			}
			idle = true
			timer.Reset(topicIdleTimeout)
			select {
			case <-tq.wake:
				idle = false
			case <-timer.C:
			case <-ctxDone:
				idle = false
			}
			continue
		}
		idle = false
		p.mu.Unlock()
		p.complete(tq, dropped, fmt.Errorf("produce to %s: %w", tq.name, ErrProducerClosed))
		if stopping {
			w.Abort(fmt.Errorf("produce to %s: %w", tq.name, ErrProducerClosed))
		}
		idWait = nil
		for !stopping {
			b, bwake := w.Next(now)
			if !bwake.IsZero() && (wake.IsZero() || bwake.Before(wake)) {
				wake = bwake
			}
			if b == nil {
				break
			}
			if wait := p.prepare(tq, w, b, now); wait != nil {
				idWait = wait
				break
			}
			if !b.Data.st.built || (b.Data.st.idem && !b.Numbered) {
				continue // failed or to retry: see Next
			}
			w.Start(b)
			go func() {
				results <- attemptResult{b, p.attempt(tq, b, inflight.AttemptDeadline(b, now, p.opts.RequestTimeout))}
			}()
		}
		popped := w.Pop()
		for _, b := range popped {
			p.complete(tq, b.Data.recs, p.batchError(tq, b))
		}
		if len(popped) > 0 {
			continue // room for the next batches
		}
		var tc <-chan time.Time
		if !wake.IsZero() {
			timer.Reset(max(time.Until(wake), 0))
			tc = timer.C
		}
		select {
		case r := <-results:
			p.handle(tq, w, r)
		case <-tc:
		case <-tq.wake:
		case <-idWait:
		case <-ctxDone:
			ctxDone = nil
		}
		timer.Stop()
	}
}

// prepare builds b's request and numbers it, if not done yet. A failure
// is recorded in the window; a non-nil channel means b waits for an
// identity.
func (p *Producer) prepare(tq *topicQueue, w *inflight.Window[*sendBatch], b *inflight.Batch[*sendBatch], now time.Time) <-chan struct{} {
	sb := b.Data
	if !sb.st.built {
		sb.st.req = &varvev1.ProduceRequest{Topic: tq.name}
		ctx, cancel := context.WithDeadline(p.ctx, inflight.AttemptDeadline(b, now, p.opts.RequestTimeout))
		err := p.build(ctx, tq, sb.recs, &sb.st)
		cancel()
		if err != nil {
			w.Result(b, err, p.classify(err, b.Attempts()), p.retry.delay(err, b.Attempts()), time.Now())
			return nil
		}
		sb.st.built = true
	}
	if !sb.st.idem || b.Numbered {
		return nil
	}
	parts, counts := batchPartitions(sb.st.req)
	wait, err := w.Number(b, tq.name, parts, counts)
	if err == nil && wait == nil {
		number(sb.st.req, b.Nums, parts)
	}
	return wait
}

// handle records an attempt's outcome in the window.
func (p *Producer) handle(tq *topicQueue, w *inflight.Window[*sendBatch], r attemptResult) {
	err := r.err
	if err != nil && p.ctx.Err() != nil {
		err = fmt.Errorf("produce to %s: %w", tq.name, ErrProducerClosed)
	}
	class := p.classify(err, r.b.Attempts())
	if p.seq != nil && producerErrorReason(err) == ReasonProducerFenced {
		p.seq.Fence(fmt.Errorf("%w: %w", ErrProducerFenced, err))
	}
	if err != nil && class != inflight.Final {
		p.c.log.Debug("retrying produce", "topic", tq.name, "records", len(r.b.Data.recs), "attempt", r.b.Attempts(), "err", err)
	}
	w.Result(r.b, err, class, p.retry.delay(err, r.b.Attempts()-1), time.Now())
}

// classify says how the window goes on after err.
func (p *Producer) classify(err error, attempts int) inflight.Class {
	if err == nil || p.ctx.Err() != nil || attempts > p.retry.retries {
		return inflight.Final
	}
	switch producerErrorReason(err) {
	case ReasonOutOfOrderSequence:
		return inflight.OutOfOrder
	case ReasonUnknownProducer:
		return inflight.UnknownProducer
	case "":
		// A connection lost without an answer shows as Canceled or Unknown.
		if c := connect.CodeOf(err); Retriable(err) || !connect.IsWireError(err) && (c == connect.CodeCanceled || c == connect.CodeUnknown) {
			return inflight.Retry
		}
	}
	return inflight.Final
}

// takeLocked removes and returns the first records of tq's queue, up to
// maxBytes of them (at least one).
func (p *Producer) takeLocked(tq *topicQueue, maxRecs, maxBytes int) []*pendingRecord {
	n, bytes := 0, 0
	for n < maxRecs {
		s := tq.pending[n].size
		if n > 0 && bytes+s > maxBytes {
			break
		}
		bytes += s
		n++
	}
	batch := make([]*pendingRecord, n)
	copy(batch, tq.pending)
	clear(tq.pending[:n])
	tq.pending = tq.pending[n:]
	if len(tq.pending) == 0 {
		tq.pending = nil
	}
	tq.pendingBytes -= bytes
	return batch
}

// complete runs the callbacks of a batch, then releases its buffer space
// and counts it done, so that Flush returning implies callbacks ran.
func (p *Producer) complete(tq *topicQueue, batch []*pendingRecord, err error) {
	if len(batch) == 0 {
		return
	}
	size := int64(0)
	for _, pr := range batch {
		pr.cb(pr.rec, err)
		size += int64(pr.size)
	}
	p.mu.Lock()
	p.buffered -= size
	tq.done += uint64(len(batch))
	p.broadcastLocked()
	p.mu.Unlock()
}

// sendState is a batch's request across its attempts.
type sendState struct {
	req   *varvev1.ProduceRequest
	idem  bool
	built bool // req holds the batch's records
}

// attempt sends the batch's request once, ending by deadline, and on
// success fills in the records' places.
func (p *Producer) attempt(tq *topicQueue, b *inflight.Batch[*sendBatch], deadline time.Time) error {
	ctx, cancel := context.WithDeadline(p.ctx, deadline)
	defer cancel()
	batch := b.Data.recs
	bytes := 0
	for _, pr := range batch {
		bytes += recordDataSize(&pr.rec)
	}
	res, err := p.c.produceRPC(ctx, b.Data.st.req, bytes)
	if err != nil {
		return err
	}
	p.noteTick(res.Header(), time.Now())
	results := res.Msg.GetResults()
	if len(results) != len(batch) {
		return connect.NewError(connect.CodeInternal, fmt.Errorf("cluster answered %d results for %d records", len(results), len(batch)))
	}
	for i, r := range results {
		batch[i].rec.Topic = tq.name
		batch[i].rec.Partition = r.GetPartition()
		batch[i].rec.ExplicitPartition = true
		batch[i].rec.Offset = r.GetOffset()
	}
	return nil
}

// build fills the request with the batch's records in the batch form
// (sdk/batch.go), choosing the partition of those without one: the batch
// form names every partition.
func (p *Producer) build(ctx context.Context, tq *topicQueue, batch []*pendingRecord, st *sendState) error {
	if tq.partitions <= 0 {
		n, err := p.c.partitionCount(ctx, tq.name)
		if err != nil {
			return err
		}
		tq.partitions = n
	}
	sticky := int32(-1)
	parts := make([]int32, len(batch))
	for i, pr := range batch {
		part := pr.part
		if part < 0 {
			switch {
			case p.opts.Partitioner != nil:
				part = p.opts.Partitioner(pr.rec.Key, tq.partitions)
			case pr.rec.Key != nil:
				part = murmur2.Partition(pr.rec.Key, tq.partitions)
			default:
				if sticky < 0 {
					sticky = rand.Int32N(tq.partitions)
				}
				part = sticky
			}
			if part < 0 || part >= tq.partitions {
				return connect.NewError(connect.CodeInvalidArgument,
					fmt.Errorf("partitioner chose partition %d of a topic with %d partitions", part, tq.partitions))
			}
		}
		parts[i] = part
	}
	return batchRequest(st.req, batch, parts, &tq.compress)
}

// batchError is the error of a resolved batch: its idempotence reason
// named by a sentinel, and the attempts counted.
func (p *Producer) batchError(tq *topicQueue, b *inflight.Batch[*sendBatch]) error {
	err := b.Err()
	if err == nil {
		return nil
	}
	// The topic may have been re-created with other partitions.
	tq.partitions = 0
	switch producerErrorReason(err) {
	case ReasonProducerFenced:
		err = p.seq.Fence(fmt.Errorf("%w: %w", ErrProducerFenced, err))
	case ReasonOutOfOrderSequence:
		err = fmt.Errorf("%w: %w", ErrOutOfOrderSequence, err)
	case ReasonUnknownProducer:
		err = fmt.Errorf("%w: %w", ErrUnknownProducer, err)
	}
	if errors.Is(err, ErrProducerClosed) {
		return err
	}
	n := len(b.Data.recs)
	if a := b.Attempts(); a > 1 {
		return fmt.Errorf("produce %d records to %s (after %d retries): %w", n, tq.name, a-1, err)
	}
	return fmt.Errorf("produce %d records to %s: %w", n, tq.name, err)
}

// batchPartitions returns the partitions of req (records or batches), in
// order of first appearance, and the records of each.
func batchPartitions(req *varvev1.ProduceRequest) (parts, counts []int32) {
	n, order := requestCounts(req)
	for _, p := range order {
		counts = append(counts, n[p])
	}
	return order, counts
}

// number gives each partition of req its first sequence from n.
func number(req *varvev1.ProduceRequest, n inflight.Numbers, parts []int32) {
	req.ProducerId, req.ProducerEpoch = n.ID, n.Epoch
	req.Sequences = req.Sequences[:0]
	for i, part := range parts {
		req.Sequences = append(req.Sequences, &varvev1.PartitionSequence{Partition: part, FirstSequence: n.First[i]})
	}
}

// initProducer takes an idempotent identity: the next epoch of id, or a
// new id when id is 0 or unknown. It retries until ctx is done.
func (p *Producer) initProducer(ctx context.Context, id int64) (int64, int32, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if p.opts.RequestTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, p.opts.RequestTimeout)
		}
		r, err := p.c.produce.InitProducer(actx, connect.NewRequest(&varvev1.InitProducerRequest{ProducerId: id}))
		cancel()
		if err == nil {
			p.c.log.Info("producer id assigned", "producer_id", r.Msg.GetProducerId(), "epoch", r.Msg.GetProducerEpoch())
			return r.Msg.GetProducerId(), r.Msg.GetProducerEpoch(), nil
		}
		if producerErrorReason(err) == ReasonUnknownProducer && id != 0 {
			id = 0 // expired: nothing of it can commit any more
			continue
		}
		if ctx.Err() != nil {
			return 0, 0, fmt.Errorf("init producer: %w", ErrProducerClosed)
		}
		if !Retriable(err) {
			return 0, 0, fmt.Errorf("init producer %d: %w", id, err)
		}
		if sleepCtx(ctx, p.retry.delay(err, attempt)) != nil {
			return 0, 0, fmt.Errorf("init producer: %w", ErrProducerClosed)
		}
	}
}

// ctxError gives a context error its Connect code.
func ctxError(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return err
}
