package sdk

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/murmur2"
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
	DefaultRetries          = 10
	DefaultRetryBackoff     = 50 * time.Millisecond
	DefaultMaxRetryBackoff  = 5 * time.Second
	DefaultRequestTimeout   = 30 * time.Second
)

// ProducerOptions configures a Producer. Zero fields take the defaults.
type ProducerOptions struct {
	// Linger is how long a topic's first pending record waits for others to
	// join its batch (default 5ms; negative sends as soon as possible).
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
	// Retries is how often a batch is retried after a retriable failure
	// (Unavailable, ResourceExhausted, DeadlineExceeded, Aborted); default
	// 10, negative for none. Other failures fail the batch at once.
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
	if o.Retries == 0 {
		o.Retries = DefaultRetries
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
// Each topic has at most one batch in flight, so records of a topic (and
// so of each of its partitions) are stored in the order they were given to
// Produce, retries included. A batch that finally fails fails all its
// records; later batches are still sent.
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

	idem idemState
}

// idemState is the idempotent producer's identity. Senders hold gate
// shared while a batch is in flight; a new epoch or id is taken with gate
// held exclusively, so no batch is in flight under the old one. The fields
// are guarded by Producer.mu.
type idemState struct {
	gate     sync.RWMutex
	id       int64
	epoch    int32
	gen      uint64 // counts identities
	ready    bool
	needBump bool  // a batch failed: its sequences are uncertain
	fenced   error // set once; every later batch fails with it
	seqs     map[seqKey]int32
}

type seqKey struct {
	topic string
	p     int32
}

// topicQueue is one topic's pending records and its sender goroutine.
type topicQueue struct {
	name         string
	wake         chan struct{} // capacity 1
	pending      []*pendingRecord
	pendingBytes int
	enqueued     uint64 // records ever enqueued
	done         uint64 // records ever completed, in enqueue order

	partitions int32 // for the Partitioner; only the sender touches it
}

// Identity returns the idempotent producer's id and epoch (0, 0 before its
// first batch or without idempotence).
func (p *Producer) Identity() (id int64, epoch int32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idem.id, p.idem.epoch
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
	return &Producer{
		c: c, opts: opts,
		retry:    retryPolicy{retries: opts.Retries, base: opts.RetryBackoff, maxDelay: opts.MaxRetryBackoff},
		ctx:      ctx,
		cancel:   cancel,
		progress: make(chan struct{}),
		topics:   make(map[string]*topicQueue),
	}
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

// runTopic is a topic's sender: it waits for a batch to be due, sends it,
// and repeats, until the producer is closed and the queue is empty.
func (p *Producer) runTopic(tq *topicQueue) {
	defer p.wg.Done()
	var timer, idle *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if idle != nil {
			idle.Stop()
		}
	}()
	for {
		p.mu.Lock()
		if p.ctx.Err() != nil {
			// Close gave up: fail whatever is left.
			batch := p.takeLocked(tq, len(tq.pending), 1<<62)
			p.mu.Unlock()
			p.complete(tq, batch, fmt.Errorf("produce to %s: %w", tq.name, ErrProducerClosed))
			return
		}
		if len(tq.pending) == 0 {
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			if idle == nil {
				idle = time.NewTimer(topicIdleTimeout)
			} else {
				idle.Reset(topicIdleTimeout)
			}
			select {
			case <-tq.wake:
				idle.Stop()
			case <-p.ctx.Done():
				idle.Stop()
			case <-idle.C:
				// Retire the idle topic's sender; Produce starts a new one.
				p.mu.Lock()
				if len(tq.pending) == 0 {
					delete(p.topics, tq.name)
					p.mu.Unlock()
					return
				}
				p.mu.Unlock()
			}
			continue
		}
		due := p.closed || p.flushing > 0 || p.opts.Linger < 0 || tq.pendingBytes >= p.opts.MaxBatchBytes
		if !due {
			if wait := p.opts.Linger - time.Since(tq.pending[0].at); wait > 0 {
				p.mu.Unlock()
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case <-tq.wake:
					timer.Stop()
				case <-p.ctx.Done():
					timer.Stop()
				}
				continue
			}
		}
		batch := p.takeLocked(tq, len(tq.pending), p.opts.MaxBatchBytes)
		p.mu.Unlock()
		p.complete(tq, batch, p.send(tq, batch))
	}
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

// send sends one batch, with retries, and on success fills in the
// records' Topic, Partition and Offset.
//
// With idempotence the batch's records of each partition carry a sequence
// number; every retry resends the same numbers, so the cluster stores the
// batch once and answers a duplicate with the original offsets.
func (p *Producer) send(tq *topicQueue, batch []*pendingRecord) error {
	st := &sendState{
		idem: !p.opts.DisableIdempotence,
		req:  &varvev1.ProduceRequest{Topic: tq.name, Records: make([]*varvev1.ProduceRecord, len(batch))},
	}
	st.needPartitioner = st.idem || p.partitionerChooses(batch)
	var gen uint64
	if st.idem {
		var err error
		if gen, err = p.idemAcquire(); err != nil {
			return fmt.Errorf("produce %d records to %s: %w", len(batch), tq.name, err)
		}
		defer p.idem.gate.RUnlock()
	}
	for attempt := 0; ; attempt++ {
		err := p.attempt(tq, batch, st)
		if err == nil {
			return nil
		}
		if p.ctx.Err() != nil {
			p.markUncertain(st.idem && st.numbered)
			return fmt.Errorf("produce %d records to %s: %w", len(batch), tq.name, ErrProducerClosed)
		}
		reason := producerErrorReason(err)
		if reason == ReasonUnknownProducer && attempt < p.retry.retries {
			// The id expired: nothing of it can commit any more, so the
			// batch is safe to renumber under a new id.
			p.idem.gate.RUnlock()
			gen, err = p.reinit(gen, true)
			p.idem.gate.RLock()
			if err == nil {
				st.numbered = false
				continue
			}
		}
		if reason != "" || !Retriable(err) || attempt >= p.retry.retries {
			return p.failBatch(tq, len(batch), attempt, reason, err, st.idem && st.numbered)
		}
		delay := p.retry.delay(err, attempt)
		p.c.log.Debug("retrying produce", "topic", tq.name, "records", len(batch), "attempt", attempt+1, "delay", delay, "err", err)
		if sleepCtx(p.ctx, delay) != nil {
			p.markUncertain(st.idem && st.numbered)
			return fmt.Errorf("produce %d records to %s: %w", len(batch), tq.name, ErrProducerClosed)
		}
	}
}

// sendState is a batch's request across the attempts of send.
type sendState struct {
	req             *varvev1.ProduceRequest
	idem            bool
	needPartitioner bool // the producer chooses partitions (else the cluster)
	built           bool // req holds the batch's records
	numbered        bool // req carries sequence numbers
}

// partitionerChooses reports whether the batch has records whose
// partition the producer's own Partitioner chooses without idempotence.
func (p *Producer) partitionerChooses(batch []*pendingRecord) bool {
	if p.opts.Partitioner == nil {
		return false
	}
	for _, pr := range batch {
		if pr.part < 0 {
			return true
		}
	}
	return false
}

// attempt sends the batch once: it builds and numbers the request the
// first time, and on success fills in the records' places.
func (p *Producer) attempt(tq *topicQueue, batch []*pendingRecord, st *sendState) error {
	actx, cancel := p.attemptContext()
	defer cancel()
	if !st.built {
		if err := p.build(actx, tq, batch, st); err != nil {
			return err
		}
		st.built = true
	}
	if st.idem && !st.numbered {
		p.number(st.req)
		st.numbered = true
	}
	bytes := 0
	for _, pr := range batch {
		bytes += recordDataSize(&pr.rec)
	}
	res, err := p.c.produceRPC(actx, st.req, bytes)
	if err != nil {
		return err
	}
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
	st.needPartitioner = true
	if st.needPartitioner && tq.partitions <= 0 {
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
		if st.needPartitioner && part < 0 {
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
	return batchRequest(st.req, batch, parts)
}

// failBatch is the error of a batch that is not retried (any more): its
// idempotence reason named by a sentinel, and the retries counted.
func (p *Producer) failBatch(tq *topicQueue, n, attempt int, reason string, err error, uncertain bool) error {
	// The topic may have been re-created with other partitions.
	tq.partitions = 0
	switch reason {
	case ReasonProducerFenced:
		err = p.fence(fmt.Errorf("%w: %w", ErrProducerFenced, err))
	case ReasonOutOfOrderSequence:
		err = fmt.Errorf("%w: %w", ErrOutOfOrderSequence, err)
	case ReasonUnknownProducer:
		err = fmt.Errorf("%w: %w", ErrUnknownProducer, err)
	}
	p.markUncertain(uncertain)
	if attempt > 0 {
		return fmt.Errorf("produce %d records to %s (after %d retries): %w", n, tq.name, attempt, err)
	}
	return fmt.Errorf("produce %d records to %s: %w", n, tq.name, err)
}

// number gives each partition of req its first sequence and advances the
// producer's sequences.
func (p *Producer) number(req *varvev1.ProduceRequest) {
	counts, order := requestCounts(req)
	p.mu.Lock()
	defer p.mu.Unlock()
	req.ProducerId, req.ProducerEpoch = p.idem.id, p.idem.epoch
	req.Sequences = req.Sequences[:0]
	for _, part := range order {
		k := seqKey{req.Topic, part}
		first := p.idem.seqs[k]
		p.idem.seqs[k] = first + counts[part]
		if first+counts[part] > 1<<30 {
			p.idem.needBump = true // restart sequences well before they wrap
		}
		req.Sequences = append(req.Sequences, &varvev1.PartitionSequence{Partition: part, FirstSequence: first})
	}
}

// idemAcquire takes the gate shared, once the producer has a usable
// identity, and returns its generation.
func (p *Producer) idemAcquire() (uint64, error) {
	for {
		p.idem.gate.RLock()
		p.mu.Lock()
		fenced, need, gen := p.idem.fenced, !p.idem.ready || p.idem.needBump, p.idem.gen
		p.mu.Unlock()
		if fenced != nil {
			p.idem.gate.RUnlock()
			return 0, fenced
		}
		if !need {
			return gen, nil
		}
		p.idem.gate.RUnlock()
		if _, err := p.reinit(gen, false); err != nil {
			return 0, err
		}
	}
}

// reinit takes a new identity unless another sender already replaced
// generation gen: the next epoch of the current id, or a new id when
// newID is set, the id is unknown, or there is none yet.
func (p *Producer) reinit(gen uint64, newID bool) (uint64, error) {
	p.idem.gate.Lock()
	defer p.idem.gate.Unlock()
	p.mu.Lock()
	if p.idem.gen != gen || p.idem.fenced != nil {
		g, err := p.idem.gen, p.idem.fenced
		p.mu.Unlock()
		return g, err
	}
	id := p.idem.id
	if !p.idem.ready && id == 0 {
		id = p.opts.ProducerID
	}
	if newID {
		id = 0
	}
	p.mu.Unlock()
	var res *varvev1.InitProducerResponse
	for attempt := 0; ; attempt++ {
		actx, cancel := p.attemptContext()
		r, err := p.c.produce.InitProducer(actx, connect.NewRequest(&varvev1.InitProducerRequest{ProducerId: id}))
		cancel()
		if err == nil {
			res = r.Msg
			break
		}
		if producerErrorReason(err) == ReasonUnknownProducer && id != 0 {
			id = 0 // expired: nothing of it can commit any more
			continue
		}
		if p.ctx.Err() != nil {
			return gen, fmt.Errorf("init producer: %w", ErrProducerClosed)
		}
		if !Retriable(err) || attempt >= p.retry.retries {
			return gen, fmt.Errorf("init producer %d: %w", id, err)
		}
		if sleepCtx(p.ctx, p.retry.delay(err, attempt)) != nil {
			return gen, fmt.Errorf("init producer: %w", ErrProducerClosed)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idem.id, p.idem.epoch = res.GetProducerId(), res.GetProducerEpoch()
	p.idem.gen++
	p.idem.ready, p.idem.needBump = true, false
	p.idem.seqs = map[seqKey]int32{}
	p.c.log.Info("producer id assigned", "producer_id", p.idem.id, "epoch", p.idem.epoch)
	return p.idem.gen, nil
}

// markUncertain notes that a numbered batch failed: it may or may not be
// stored, so its sequences cannot be reused or skipped. The next batch
// starts a new epoch.
func (p *Producer) markUncertain(numbered bool) {
	if !numbered {
		return
	}
	p.mu.Lock()
	p.idem.needBump = true
	p.mu.Unlock()
}

func (p *Producer) fence(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idem.fenced == nil {
		p.idem.fenced = err
	}
	return p.idem.fenced
}

func (p *Producer) attemptContext() (context.Context, context.CancelFunc) {
	if p.opts.RequestTimeout > 0 {
		return context.WithTimeout(p.ctx, p.opts.RequestTimeout)
	}
	return context.WithCancel(p.ctx)
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
