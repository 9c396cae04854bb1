package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/varve-io/varve/internal/murmur2"
	"github.com/varve-io/varve/internal/randhex"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// Errors callers branch on.
var (
	// ErrBackpressure: the node's buffer is full; retry after the advised delay.
	ErrBackpressure = errors.New("ingest buffer full")
	// ErrRecordTooLarge: a record exceeds the topic's max_record_bytes.
	ErrRecordTooLarge = errors.New("record too large")
	// ErrClosed: the node is draining and accepts no new records.
	ErrClosed = errors.New("ingest node is shutting down")
	// ErrFlushFailed: the records could not be stored or committed; they were
	// not acknowledged and are safe to retry.
	ErrFlushFailed = errors.New("flush failed")
	// ErrOutcomeUnknown: etcd stopped answering while committing; the records
	// may be committed, and a retry may store them twice (the idempotent
	// producer removes that risk).
	ErrOutcomeUnknown = errors.New("commit outcome unknown")
)

// BackpressureError carries retry advice with ErrBackpressure.
type BackpressureError struct {
	RetryAfter time.Duration
	Pending    int64
	Limit      int64
}

func (e *BackpressureError) Error() string {
	return fmt.Sprintf("%v: %d of %d bytes pending; retry after %v", ErrBackpressure, e.Pending, e.Limit, e.RetryAfter)
}

func (e *BackpressureError) Unwrap() error { return ErrBackpressure }

// Config tunes an Ingester. Zero values take the defaults.
type Config struct {
	// NodeID names this node in object keys and logs.
	NodeID string
	// FlushBytes seals the open file once its records reach this size.
	FlushBytes int
	// Linger seals the open file at the next multiple of Linger on the
	// wall clock after its first record (flushDelay): at most this long.
	Linger time.Duration
	// MaxBufferBytes bounds records held in memory (open plus flushing);
	// past it Produce returns a BackpressureError.
	MaxBufferBytes int64
	// ObjectPrefix is prepended to segment object keys.
	ObjectPrefix string
	// PutTimeout bounds the retries of one segment PUT.
	PutTimeout time.Duration
	// PutHedgeMin is the least a segment PUT runs alone before the same
	// bytes are PUT again under a new key (it is hedged after twice the p90
	// of the node's recent PUTs, and not before this; hedge.go). Zero takes
	// DefaultPutHedgeMin; negative never hedges.
	PutHedgeMin time.Duration
	// MaxInflight bounds the files being stored or committed at once. When
	// the pipeline is full at linger time, the open file keeps filling
	// until a slot frees, so flushes grow with load instead of queueing.
	MaxInflight int
	// ProducerStateTTL is how long an idempotent producer's state lives
	// after its last commit (default DefaultProducerStateTTL).
	ProducerStateTTL time.Duration
	// OrderWait bounds how long an idempotent producer's batch that
	// arrives ahead of its sequence (a gap) waits for the earlier batches
	// to reach this node before it is refused as out of order (default
	// DefaultOrderWait). Pipelined requests of one producer are decided
	// concurrently, so one may overtake its predecessor on the way in.
	OrderWait time.Duration
	// TracerProvider, if set, traces every flush (ingest.flush, with its
	// ingest.put and ingest.commit), linked to the produce requests it
	// answers (docs/observability.md).
	TracerProvider trace.TracerProvider
}

// Defaults.
const (
	DefaultFlushBytes     = 8 << 20
	DefaultLinger         = 100 * time.Millisecond
	DefaultMaxBufferBytes = 256 << 20
	DefaultObjectPrefix   = "segments/"
	// DefaultProducerStateTTL is Kafka's producer id expiration (24h).
	DefaultProducerStateTTL = metadata.DefaultProducerStateTTL
	DefaultOrderWait        = 500 * time.Millisecond
	DefaultPutHedgeMin      = 50 * time.Millisecond
)

func (c *Config) fill() {
	if c.NodeID == "" {
		c.NodeID = randhex.String(4)
	}
	if c.FlushBytes <= 0 {
		c.FlushBytes = DefaultFlushBytes
	}
	if c.Linger <= 0 {
		c.Linger = DefaultLinger
	}
	if c.MaxBufferBytes <= 0 {
		c.MaxBufferBytes = DefaultMaxBufferBytes
	}
	if c.ObjectPrefix == "" {
		c.ObjectPrefix = DefaultObjectPrefix
	}
	if c.PutTimeout <= 0 {
		c.PutTimeout = 30 * time.Second
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 4
	}
	if c.ProducerStateTTL <= 0 {
		c.ProducerStateTTL = DefaultProducerStateTTL
	}
	if c.OrderWait <= 0 {
		c.OrderWait = DefaultOrderWait
	}
	if c.PutHedgeMin == 0 {
		c.PutHedgeMin = DefaultPutHedgeMin
	}
}

// Record is a record to produce. Partition -1 lets the node place it.
type Record struct {
	Partition int32
	segment.Record
}

// Result is where a produced record landed.
type Result struct {
	Partition int32
	Offset    int64
}

// Flushed describes a committed segment, for the read cache of a node that
// also serves fetches.
type Flushed struct {
	Object string
	Blocks []FlushedBlock
}

// FlushedBlock is one committed block and its records.
type FlushedBlock struct {
	Info    segment.BlockInfo
	Base    int64
	Records []segment.Record
	// Stored is the block's bytes as stored (Info's byte range of the
	// object), for a cache that keeps them: fetches of record batches
	// then ship them as they are.
	Stored []byte
}

// Ingester is the write path of one node. It is safe for concurrent use.
type Ingester struct {
	cfg   Config
	hedge putHedge
	// fullAt is when a file was last sealed because it reached
	// flush_bytes (UnixNano; 0: never): see NextFlush.
	fullAt atomic.Int64
	store  tier.Store
	meta   Committer
	topics *metadata.Cache
	log    *slog.Logger
	m      instruments
	// OnFlushed, if set before the first Produce, is called after each
	// successful commit, in commit order.
	OnFlushed func(Flushed)
	// OnStored, if set before the first Produce, is called once a
	// segment is stored, before its commit, with its blocks' stored bytes
	// (no Records, no Base): a read cache filled then holds a block before
	// any index entry names it, so no fetch reads a fresh block from the
	// bucket. Calls run concurrently, in no order; a block whose commit
	// then fails is never named by the index.
	OnStored func(Flushed)

	mu      sync.Mutex
	open    *file
	last    *file        // the most recently sealed file
	pending atomic.Int64 // bytes accepted and not yet answered
	pendRec atomic.Int64 // records accepted and not yet answered
	closed  bool
	seq     uint64
	sticky  map[string]int32
	// grow holds the bytes of records each partition's block took in the
	// last sealed file (newBlockLocked makes room for them).
	grow map[tpKey]int

	// Idempotent batches buffered or being committed, per producer and
	// partition, in append order; idemDone counts removals.
	idem     map[idemKey][]*pendingBatch
	idemDone uint64
	// idemChanged, when not nil, is closed at the next change of the held
	// batches or remembered states (batches waiting for a predecessor
	// wait on it).
	idemChanged chan struct{}
	// pcache remembers producers' states, to accept their next batches
	// without reading etcd.
	pcache *producerCache

	inflight int           // files sealed and not yet answered
	putSlots chan struct{} // bounds concurrent PUTs
	queue    chan *file    // sealed files in seal order, for the committer
	stopped  chan struct{}
}

type tpKey struct {
	topic string
	p     int32
}

type idemKey struct {
	id int64
	tp tpKey
}

// pendingBatch is an idempotent batch held by this node: batch j of the
// block tp of file f.
type pendingBatch struct {
	b  metadata.ProducerBatch
	f  *file
	tp tpKey
	j  int
}

// Idempotence identifies a request of an idempotent producer: every record
// names its partition, and Sequences gives the first sequence of each
// partition's records.
type Idempotence struct {
	ProducerID int64
	Epoch      int32
	Sequences  map[int32]int32
}

// file is one open (then sealed) segment: a block builder per partition.
type file struct {
	id       uint64
	blocks   map[tpKey]*segment.BlockBuilder
	order    []*segment.BlockBuilder
	bytes    int64
	records  int
	opened   time.Time
	timer    *time.Timer
	lingered bool // linger expired while the pipeline was full

	// Idempotent producers' batches per block, and their distinct ids.
	batches   map[tpKey][]metadata.ProducerBatch
	producers map[tpKey]map[int64]bool

	putDone chan struct{}
	trace   flushTrace // the flush's span and the requests it answers

	// Set by the flush pipeline, read after done is closed.
	object   string
	obj      []byte // the object's bytes
	infos    []segment.BlockInfo
	bases    map[tpKey]int64
	errs     map[tpKey]error
	batchRes map[tpKey][]metadata.BatchResult
	err      error
	done     chan struct{}
}

// New starts an Ingester. topics must be a Cache of the same etcd.
func New(cfg Config, store tier.Store, meta Committer, topics *metadata.Cache, log *slog.Logger, mp metric.MeterProvider) (*Ingester, error) {
	cfg.fill()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m, err := newInstruments(mp, cfg.TracerProvider)
	if err != nil {
		return nil, err
	}
	if rc, ok := meta.(RetryCounter); ok {
		if err := observeRetries(mp, rc); err != nil {
			return nil, err
		}
	}
	in := &Ingester{
		cfg: cfg, hedge: putHedge{min: cfg.PutHedgeMin}, store: store, meta: meta, topics: topics, log: log, m: m,
		sticky:   map[string]int32{},
		idem:     map[idemKey][]*pendingBatch{},
		pcache:   newProducerCache(),
		putSlots: make(chan struct{}, cfg.MaxInflight),
		// Sealed files are bounded by memory: at most MaxInflight lingered
		// files plus MaxBufferBytes/FlushBytes full ones.
		queue:   make(chan *file, cfg.MaxInflight+int(cfg.MaxBufferBytes/int64(cfg.FlushBytes))+16),
		stopped: make(chan struct{}),
	}
	go in.commitLoop()
	return in, nil
}

// Config returns the effective configuration.
func (in *Ingester) Config() Config { return in.cfg }

// topic returns the topic config, from the watched cache or, on a miss (a
// topic created an instant ago) or when the cached config has fewer
// partitions than recs name (partitions added an instant ago, and this
// node's watch has not seen it yet), from etcd.
func (in *Ingester) topic(ctx context.Context, name string, recs []Record) (metadata.Topic, error) {
	return in.topicFor(ctx, name, maxPartition(recs))
}

// topicFor is topic for a request whose largest partition is maxP.
func (in *Ingester) topicFor(ctx context.Context, name string, maxP int32) (metadata.Topic, error) {
	if t, ok := in.topics.Topic(name); ok && t.Partitions > maxP {
		return t, nil
	}
	return in.meta.GetTopic(ctx, name)
}

func maxPartition(recs []Record) int32 {
	m := int32(-1)
	for i := range recs {
		m = max(m, recs[i].Partition)
	}
	return m
}

// Produce appends records to topic and returns, in request order, where each
// landed, once all of them are stored and committed. Either every record is
// accepted into the buffer or none is; validation errors change nothing.
func (in *Ingester) Produce(ctx context.Context, topicName string, recs []Record) ([]Result, error) {
	return in.produce(ctx, topicName, recs, nil)
}

// ProduceIdempotent is Produce for an idempotent producer: each partition's
// records in recs form one batch of idem's producer, which is committed at
// most once whatever the retries, through any node. A retry of a committed
// batch is answered with its original offsets; a gap or a fenced epoch is
// refused with metadata.ErrOutOfOrderSequence or ErrProducerFenced and
// changes nothing.
func (in *Ingester) ProduceIdempotent(ctx context.Context, topicName string, recs []Record, idem Idempotence) ([]Result, error) {
	return in.produce(ctx, topicName, recs, &idem)
}

func (in *Ingester) produce(ctx context.Context, topicName string, recs []Record, idem *Idempotence) ([]Result, error) {
	if err := metadata.ValidateTopicName(topicName); err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: produce to %q: empty batch", metadata.ErrInvalidArgument, topicName)
	}
	t, err := in.topic(ctx, topicName, recs)
	if err != nil {
		return nil, err
	}
	size, err := in.checkRecords(t, recs)
	if err != nil {
		return nil, err
	}
	if idem != nil {
		return in.produceIdempotent(ctx, t, &produceReq{recs: recs}, size, idem)
	}

	in.mu.Lock()
	f, err := in.acceptLocked(ctx, size)
	if err != nil {
		in.mu.Unlock()
		return nil, err
	}
	positions := in.appendLocked(f, t, recs)
	in.addAndUnlock(ctx, f, size, size, len(recs))
	if err := await(ctx, f, topicName); err != nil {
		return nil, err
	}
	out := make([]Result, len(recs))
	for i, ps := range positions {
		if err := f.errs[ps.tp]; err != nil {
			return nil, err
		}
		out[i] = Result{Partition: ps.tp.p, Offset: f.bases[ps.tp] + int64(ps.idx)}
	}
	return out, nil
}

// checkRecords validates a request's records against topic t and the
// node's buffer, stamps those without a timestamp, and returns their
// encoded size. An error changes nothing else.
func (in *Ingester) checkRecords(t metadata.Topic, recs []Record) (int64, error) {
	var size int64
	now := time.Now().UnixMilli()
	for i := range recs {
		r := &recs[i]
		if r.Partition < -1 || r.Partition >= t.Partitions {
			return 0, fmt.Errorf("%w: record %d: topic %q has %d partitions, got partition %d",
				metadata.ErrPartitionOutOfRange, i, t.Name, t.Partitions, r.Partition)
		}
		sz := segment.EncodedSize(r.Record)
		if sz > int(t.MaxRecordBytes) {
			return 0, fmt.Errorf("%w: record %d is %d bytes, topic %q allows %d (max_record_bytes)",
				ErrRecordTooLarge, i, sz, t.Name, t.MaxRecordBytes)
		}
		for _, h := range r.Headers {
			if h.Key == "" {
				return 0, fmt.Errorf("%w: record %d has a header with an empty key", metadata.ErrInvalidArgument, i)
			}
		}
		if r.Timestamp == 0 {
			r.Timestamp = now
		}
		// Blocks are batch blocks: count the record's Kafka encoding.
		size += int64(segment.BatchEncodedSize(r.Record))
	}
	if size > in.cfg.MaxBufferBytes {
		return 0, fmt.Errorf("%w: batch of %d bytes exceeds the node's buffer of %d bytes; send smaller batches",
			metadata.ErrInvalidArgument, size, in.cfg.MaxBufferBytes)
	}
	return size, nil
}

// position is where a record was appended: index idx of block tp.
type position struct {
	tp  tpKey
	idx int
}

// appendLocked appends recs to the blocks of f, placing the records that
// name no partition, and returns where each went.
func (in *Ingester) appendLocked(f *file, t metadata.Topic, recs []Record) []position {
	positions := make([]position, len(recs))
	for i := range recs {
		p := recs[i].Partition
		if p < 0 {
			p = in.placeLocked(t, recs[i].Key)
		}
		k := tpKey{t.Name, p}
		b := f.blocks[k]
		if b == nil {
			b = in.newBlockLocked(f, k)
		}
		positions[i] = position{k, b.Len()}
		b.Append(recs[i].Record)
	}
	return positions
}

// acceptLocked checks the buffer bound and returns the open file.
func (in *Ingester) acceptLocked(ctx context.Context, size int64) (*file, error) {
	if in.closed {
		return nil, ErrClosed
	}
	if pending := in.pending.Load(); pending+size > in.cfg.MaxBufferBytes {
		in.m.backpressure.Add(ctx, 1)
		return nil, &BackpressureError{RetryAfter: 2 * in.cfg.Linger, Pending: pending, Limit: in.cfg.MaxBufferBytes}
	}
	f := in.open
	if f == nil {
		f = in.newFileLocked()
	}
	return f, nil
}

// placeLocked picks a partition: murmur2 of the key, or the topic's sticky
// partition (chosen at random per open file) for records without a key.
func (in *Ingester) placeLocked(t metadata.Topic, key []byte) int32 {
	if key != nil {
		return murmur2.Partition(key, t.Partitions)
	}
	p, ok := in.sticky[t.Name]
	if !ok || p >= t.Partitions {
		p = rand.Int32N(t.Partitions)
		in.sticky[t.Name] = p
	}
	return p
}

func (in *Ingester) newFileLocked() *file {
	in.seq++
	// Sized for as many blocks as the last file had: at 1,000 partitions
	// the maps otherwise grow from nothing every tick.
	n := len(in.grow)
	f := &file{
		id:      in.seq,
		blocks:  make(map[tpKey]*segment.BlockBuilder, n),
		opened:  time.Now(),
		done:    make(chan struct{}),
		putDone: make(chan struct{}),
	}
	in.open = f
	f.batches = make(map[tpKey][]metadata.ProducerBatch, n)
	f.producers = make(map[tpKey]map[int64]bool, n)
	f.timer = time.AfterFunc(flushDelay(f.opened, in.cfg.Linger), func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		if in.open != f {
			return
		}
		if in.inflight < in.cfg.MaxInflight {
			in.sealLocked()
		} else {
			f.lingered = true // sealed when a slot frees
		}
	})
	return f
}

// flushDelay is how long a file opened at now stays open: until the next
// multiple of linger on the wall clock (at most linger). Every ingest node
// seals its file at the same ticks, so the sequencer receives their commits
// together and writes them as one batch (sequencer.Config.Gather): etcd
// writes, sequencer records and the fetch nodes' wake-ups follow the ticks,
// not the number of ingest nodes. Clocks need agree only to a few
// milliseconds (NTP does far better); a skewed node's commits become
// batches of their own, each waiting out the gather.
func flushDelay(now time.Time, linger time.Duration) time.Duration {
	return linger - time.Duration(now.UnixNano()%int64(linger))
}

// NextFlush is how long from now until this node's next seal tick, and the
// tick's period (linger). It is 0, 0 while files fill to flush_bytes before
// their tick (one did in the last two ticks): seals then come sooner than
// the tick, and a producer holding its records for the tick would only
// delay them.
func (in *Ingester) NextFlush(now time.Time) (next, every time.Duration) {
	lg := in.cfg.Linger
	if now.Sub(time.Unix(0, in.fullAt.Load())) < 2*lg {
		return 0, 0
	}
	return flushDelay(now, lg), lg
}

// sealLocked hands the open file to the flush pipeline.
func (in *Ingester) sealLocked() {
	f := in.open
	if f == nil {
		return
	}
	in.open = nil
	f.timer.Stop()
	// Only the last file's partitions: the map stays as large as one
	// file's blocks, and a partition that went quiet loses its hint.
	grow := make(map[tpKey]int, len(f.order))
	for _, b := range f.order {
		if n := b.RecordBytes(); n > 0 {
			grow[tpKey{b.Topic(), b.Partition()}] = n
		}
	}
	in.grow = grow
	// Sticky partitions change with every file, as Kafka's do per batch.
	clear(in.sticky)
	in.inflight++
	in.last = f
	in.startFlushSpan(f)
	in.queue <- f
	go func() {
		in.putSlots <- struct{}{}
		in.put(f)
		<-in.putSlots
		if f.err == nil && in.OnStored != nil {
			in.OnStored(in.storedBlocks(f))
		}
		close(f.putDone)
	}()
}

// commitLoop commits stored files in seal order, so one node's commits keep
// the order its producers sent in, while several PUTs run ahead.
func (in *Ingester) commitLoop() {
	defer close(in.stopped)
	for f := range in.queue {
		<-f.putDone
		if f.err == nil {
			in.commit(f)
		}
		in.pending.Add(-f.bytes)
		in.pendRec.Add(-int64(f.records))
		in.endFlushSpan(f)
		// Remember the commit's producer states before answering, so a
		// producer's next batch, sent on the answer, finds them (and no
		// held batch changing under its read).
		in.mu.Lock()
		in.rememberCommitsLocked(f)
		in.forgetBatchesLocked(f)
		in.idemChangedLocked()
		in.mu.Unlock()
		close(f.done)
		if f.err == nil && in.OnFlushed != nil {
			in.OnFlushed(in.flushed(f))
		}
		f.obj = nil // only OnFlushed's Stored slices may keep it
		in.mu.Lock()
		in.inflight--
		if in.last == f {
			in.last = nil // answered; do not keep its records alive
		}
		if o := in.open; o != nil && o.lingered && !in.closed {
			in.sealLocked()
		}
		in.mu.Unlock()
	}
}

func (in *Ingester) put(f *file) {
	ctx, end := in.startStepSpan(f, "ingest.put")
	defer func() { end(f.err) }()
	ctx, cancel := context.WithTimeout(ctx, in.cfg.PutTimeout)
	defer cancel()
	start := time.Now()
	obj, infos, err := segment.Build(f.order)
	if err != nil {
		f.err = fmt.Errorf("%w: build segment: %v", ErrFlushFailed, err)
		return
	}
	f.infos = infos
	f.obj = obj
	f.object = in.objectKey(f)
	backoff := 10 * time.Millisecond
	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		var key string
		key, err = in.putHedged(ctx, f.object, obj, func() string { return in.objectKey(f) })
		if err == nil {
			f.object = key
			in.hedge.observe(time.Since(t0))
		}
		if err == nil || (attempt > 0 && errors.Is(err, tier.ErrExists)) {
			// After a failed attempt, "exists" means that attempt stored it:
			// nobody else writes this randomly named key.
			break
		}
		if errors.Is(err, tier.ErrExists) {
			f.object = in.objectKey(f) // a name collision: pick another
			continue
		}
		if errors.Is(err, syscall.ENOSPC) {
			// A full disk does not clear in milliseconds: refuse the batch
			// now (nothing was stored) rather than hold producers until
			// the put timeout. The next flush tries again.
			in.log.Error("segment put failed: no space left on device", "object", f.object, "err", err)
			f.err = fmt.Errorf("%w: no space left on device writing segment %s: %w", ErrFlushFailed, f.object, err)
			return
		}
		in.log.Warn("segment put failed, retrying", "object", f.object, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			f.err = fmt.Errorf("%w: put %s: %v", ErrFlushFailed, f.object, err)
			return
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	in.putTraced(ctx, f, len(obj))
	in.m.putSeconds.Record(ctx, time.Since(start).Seconds())
	in.m.objectBytes.Add(ctx, int64(len(obj)))
	in.m.flushes.Add(ctx, 1)
}

func (in *Ingester) commit(f *file) {
	ctx, end := in.startStepSpan(f, "ingest.commit")
	defer func() { end(f.err) }()
	start := time.Now()
	appends := make([]metadata.Append, len(f.infos))
	for i, bi := range f.infos {
		appends[i] = metadata.Append{
			Topic: bi.Topic, Partition: bi.Partition, Object: f.object,
			Off: bi.Offset, Len: bi.Length, Records: bi.Records,
			MinTS: bi.MinTimestamp, MaxTS: bi.MaxTimestamp, RawBytes: bi.RawBytes,
			Batches: f.batches[tpKey{bi.Topic, bi.Partition}],
		}
	}
	res, err := in.meta.Commit(metadata.WithCaller(ctx, metadata.CallerIngest), f.object, appends)
	f.bases = make(map[tpKey]int64, len(res))
	f.errs = make(map[tpKey]error)
	f.batchRes = make(map[tpKey][]metadata.BatchResult)
	for i, r := range res {
		k := tpKey{appends[i].Topic, appends[i].Partition}
		f.bases[k] = r.Base
		f.batchRes[k] = r.Batches
		if r.Err != nil {
			switch {
			case errors.Is(r.Err, metadata.ErrNotCommitted):
				f.errs[k] = fmt.Errorf("%w: commit %s: %v", ErrFlushFailed, f.object, r.Err)
			case errors.Is(r.Err, metadata.ErrCommitUnknown):
				f.errs[k] = fmt.Errorf("%w: commit %s: %v", ErrOutcomeUnknown, f.object, r.Err)
			default:
				f.errs[k] = r.Err
			}
		}
	}
	if err != nil {
		in.log.Error("commit failed; records not acknowledged", "object", f.object, "err", err)
		if len(res) == 0 {
			f.err = fmt.Errorf("%w: commit %s: %v", ErrFlushFailed, f.object, err)
		}
	}
	in.m.commitSeconds.Record(context.Background(), time.Since(start).Seconds())
	in.m.flushSeconds.Record(context.Background(), time.Since(f.opened).Seconds())
}

func (in *Ingester) flushed(f *file) Flushed {
	out := Flushed{Object: f.object}
	for i, b := range f.order {
		k := tpKey{b.Topic(), b.Partition()}
		if f.errs[k] != nil {
			continue
		}
		recs, err := b.Decode()
		if err != nil {
			continue
		}
		bi := f.infos[i]
		out.Blocks = append(out.Blocks, FlushedBlock{Info: bi, Base: f.bases[k], Records: recs,
			Stored: f.obj[bi.Offset : bi.Offset+bi.Length : bi.Offset+bi.Length]})
	}
	return out
}

// storedBlocks describes f's blocks as stored, for OnStored.
func (in *Ingester) storedBlocks(f *file) Flushed {
	out := Flushed{Object: f.object, Blocks: make([]FlushedBlock, len(f.infos))}
	for i, bi := range f.infos {
		out.Blocks[i] = FlushedBlock{Info: bi, Stored: f.obj[bi.Offset : bi.Offset+bi.Length : bi.Offset+bi.Length]}
	}
	return out
}

func (in *Ingester) objectKey(f *file) string {
	return tier.FlushKey(in.cfg.ObjectPrefix, in.cfg.NodeID, f.id, time.Now())
}

// Flush seals the open file and waits until everything accepted so far is
// committed (or failed).
func (in *Ingester) Flush(ctx context.Context) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return ErrClosed
	}
	f := in.open
	if f != nil {
		if in.inflight < in.cfg.MaxInflight {
			in.sealLocked()
		} else {
			f.lingered = true // sealed as soon as a slot frees
		}
	} else {
		f = in.last // commits run in seal order: its answer comes last
	}
	in.mu.Unlock()
	if f == nil {
		return nil
	}
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close drains the node: it stops accepting records, flushes and commits
// what it holds (so waiting producers are answered) and stops.
func (in *Ingester) Close(ctx context.Context) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		<-in.stopped
		return nil
	}
	in.closed = true
	in.sealLocked()
	close(in.queue)
	in.mu.Unlock()
	select {
	case <-in.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain ingest: %w", ctx.Err())
	}
}

// Pending returns the bytes and the number of records accepted and not yet
// answered.
func (in *Ingester) Pending() (bytes, records int64) {
	return in.pending.Load(), in.pendRec.Load()
}

// addAndUnlock accounts records (size bytes in the file, raw uncompressed)
// just appended to f, seals f when full, and unlocks in.mu.
func (in *Ingester) addAndUnlock(ctx context.Context, f *file, size, raw int64, records int) {
	f.bytes += size
	f.records += records
	in.traceRequestLocked(ctx, f)
	in.pending.Add(size)
	in.pendRec.Add(int64(records))
	if f.bytes >= int64(in.cfg.FlushBytes) {
		in.fullAt.Store(time.Now().UnixNano())
		in.sealLocked()
	}
	in.mu.Unlock()
	in.m.records.Add(ctx, int64(records))
	in.m.bytes.Add(ctx, raw)
}

// await waits until f is stored and committed and returns its error.
func await(ctx context.Context, f *file, topicName string) error {
	select {
	case <-f.done:
	case <-ctx.Done():
		// The records may still be committed; the caller did not wait.
		return fmt.Errorf("produce to %q: %w", topicName, ctx.Err())
	}
	return f.err
}
