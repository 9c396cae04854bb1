package scan

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"golang.org/x/sync/semaphore"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// Scan defaults.
const (
	DefaultBatchRecords = 8192
	// DefaultInflightBytes bounds the decoded bytes a scan holds at once
	// (blocks being read, decoded or waiting for the consumer).
	DefaultInflightBytes = 64 << 20
	// scanCatchUp bounds how long a scan waits for the watched index to
	// reach the high watermarks etcd reported when the scan started.
	scanCatchUp = 10 * time.Second
	// entriesPage is how many index entries the planner copies at a time.
	entriesPage = 256
)

// RecordSchema is the Arrow schema of a scan of a topic without a schema:
// one row per record. A topic schema adds typed columns and ErrorColumn
// (see Request.Columns).
var RecordSchema = arrow.NewSchema([]arrow.Field{
	{Name: "topic", Type: arrow.BinaryTypes.String},
	{Name: "partition", Type: arrow.PrimitiveTypes.Int32},
	{Name: "offset", Type: arrow.PrimitiveTypes.Int64},
	{Name: "timestamp", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
	{Name: "key", Type: arrow.BinaryTypes.Binary, Nullable: true},
	{Name: "value", Type: arrow.BinaryTypes.Binary, Nullable: true},
	{Name: "headers", Type: arrow.ListOf(arrow.StructOf(
		arrow.Field{Name: "key", Type: arrow.BinaryTypes.String},
		arrow.Field{Name: "value", Type: arrow.BinaryTypes.Binary, Nullable: true},
	))},
}, nil)

// Request selects what a Scan reads. A record is returned when its
// offset is in [FromOffset, ToOffset), its timestamp in [FromTime, ToTime)
// and, if Keys is not empty, its key equals one of Keys.
type Request struct {
	Topic string
	// Partitions to read, in this order; empty means all, ascending.
	Partitions []int32
	// FromOffset is inclusive; offsets before the log start are skipped.
	FromOffset int64
	// ToOffset is exclusive; 0 means the partition's high watermark when the
	// scan starts. A scan never waits for records not yet committed.
	ToOffset int64
	// FromTime and ToTime are milliseconds since the epoch; ToTime is
	// exclusive and 0 means no bound.
	FromTime int64
	ToTime   int64
	Keys     [][]byte
	// Columns to return, always in schema order (empty: the default). The
	// record columns are those of RecordSchema; a topic with a schema adds
	// one typed column per field and ErrorColumn. By default a topic
	// without a schema returns every record column, and one with a schema
	// all but value and headers. An unknown name is ErrInvalidArgument.
	Columns []string

	// MaxBatchRecords caps the rows of one record batch (0: 8192).
	MaxBatchRecords int
	// Parallelism is how many blocks are read and decoded at once
	// (0: 2 × GOMAXPROCS, at least 4).
	Parallelism int
	// MaxInflightBytes bounds the decoded bytes held at once (0: 64 MiB). A
	// block larger than the bound is read alone.
	MaxInflightBytes int64
	// Alloc allocates the Arrow buffers (nil: memory.DefaultAllocator).
	Alloc memory.Allocator
}

// Progress counts the blocks a scan reads: only those overlapping the
// range, as the index tells.
type Progress struct {
	BlocksTotal, BlocksDone     int64
	RawBytesTotal, RawBytesDone int64
}

// Scanner streams the record batches of a scan. It is an
// array.RecordReader: batches come in offset order within a partition,
// partitions one after another. Each batch is valid until the next call to
// Next or Release; Retain it to keep it longer. Call Release when done.
type Scanner struct {
	r       *Reader
	req     Request
	parts   []partRange
	keys    map[string]struct{}
	topicID string
	alloc   memory.Allocator
	recycle *recycler // the record columns' buffers
	layout  *scanLayout

	parent context.Context // the scan's lifetime
	ctx    context.Context
	cancel context.CancelFunc
	sem    *semaphore.Weighted
	maxW   int64
	tasks  chan *scanTask // in output order
	work   chan *scanTask
	wg     sync.WaitGroup

	planErr error // set by the planner before it closes tasks

	refs    atomic.Int64
	cur     arrow.RecordBatch
	pending []arrow.RecordBatch
	curTask *scanTask
	err     error
	started bool

	total        Progress
	blocksDone   atomic.Int64
	rawBytesDone atomic.Int64
	// decodeRatio is the largest ratio of decoded key and value bytes to
	// an index entry's RawBytes seen so far, in thousandths: RawBytes of
	// a version 3 block are its stored batches, compressed by the
	// producer, so what a block decodes to is learned as the scan goes.
	decodeRatio atomic.Int64
}

// decodedBytes is what a block of rawBytes is expected to decode to.
func (s *Scanner) decodedBytes(rawBytes int64) int64 {
	return rawBytes * max(1000, s.decodeRatio.Load()) / 1000
}

// learnDecodeRatio notes that a block of rawBytes decoded to decoded.
func (s *Scanner) learnDecodeRatio(decoded, rawBytes int64) {
	if rawBytes <= 0 {
		return
	}
	r := decoded * 1000 / rawBytes
	for {
		cur := s.decodeRatio.Load()
		if r <= cur || s.decodeRatio.CompareAndSwap(cur, r) {
			return
		}
	}
}

type partRange struct {
	p      int32
	lo, hi int64
}

type scanTask struct {
	e       metadata.IndexEntry
	lo, hi  int64
	weight  int64
	done    chan struct{}
	batches []arrow.RecordBatch
	err     error
}

var _ array.RecordReader = (*Scanner)(nil)

// BlockReader reads the blocks a scan needs: a block's stored bytes, or its
// decoded records when they are already in memory (then stored is nil). A
// block that cannot be read back fails with blockcache.ErrDataLoss, a store
// that does not answer with blockcache.ErrUnavailable. blockcache.Reader
// implements it.
type BlockReader interface {
	ReadBlock(ctx context.Context, e metadata.IndexEntry) (stored []byte, cached []segment.Record, err error)
}

// Topics answers, linearizably, what a scan starts from: the topic (its
// partitions and schema) and its partitions' log start and high watermark.
// metadata.Client implements it.
type Topics interface {
	GetTopic(ctx context.Context, name string) (metadata.Topic, error)
	PartitionStates(ctx context.Context, topic string) (map[int32]metadata.PartitionState, error)
}

// Index is the watched copy of the segment index a scan plans from.
// metadata.Cache implements it.
type Index interface {
	Topic(name string) (metadata.Topic, bool)
	Partition(topic string, p int32) metadata.PartitionView
	Entries(topic string, p int32, from int64, max int) []metadata.IndexEntry
}

// Reader starts scans. It is safe for concurrent use.
type Reader struct {
	topics Topics
	index  Index
	blocks BlockReader
	log    *slog.Logger
}

// New makes a Reader of the topics, index and blocks given; log may be nil.
func New(topics Topics, index Index, blocks BlockReader, log *slog.Logger) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reader{topics: topics, index: index, blocks: blocks, log: log}
}

// Topic returns a topic from the watched index, else (linearizably) from
// etcd.
func (r *Reader) Topic(ctx context.Context, name string) (metadata.Topic, error) {
	if t, ok := r.index.Topic(name); ok {
		return t, nil
	}
	return r.topics.GetTopic(ctx, name)
}

// Scan starts reading a range of a topic as Arrow record batches. Bad
// input (an unknown topic or partition, a negative or inverted range) fails
// here, before anything is read. Read failures end the stream: Next returns
// false and Err tells why (ErrDataLoss naming the object for a corrupt
// block, ErrUnavailable when object storage fails).
func (r *Reader) Scan(ctx context.Context, req Request) (*Scanner, error) {
	// Linearizable, like the high watermarks below: a scan sees the
	// schema and partitions of the last UpdateTopic acknowledged.
	t, err := r.topics.GetTopic(ctx, req.Topic)
	if err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	layout, err := topicLayout(t, req.Columns)
	if err != nil {
		return nil, err
	}
	parts := req.Partitions
	if len(parts) == 0 {
		for p := range t.Partitions {
			parts = append(parts, p)
		}
	}
	seen := map[int32]bool{}
	for _, p := range parts {
		if p < 0 || p >= t.Partitions {
			return nil, fmt.Errorf("%w: scan %q: topic has %d partitions, got partition %d", metadata.ErrPartitionOutOfRange, req.Topic, t.Partitions, p)
		}
		if seen[p] {
			return nil, fmt.Errorf("%w: scan %q: partition %d listed twice", metadata.ErrInvalidArgument, req.Topic, p)
		}
		seen[p] = true
	}
	// Linearizable: the scan sees every record acknowledged before it.
	states, err := r.topics.PartitionStates(ctx, req.Topic)
	if err != nil {
		return nil, err
	}
	s := &Scanner{r: r, req: req, alloc: req.Alloc, parent: ctx, topicID: t.ID, layout: layout}
	if s.alloc == nil {
		s.alloc = memory.DefaultAllocator
	}
	if s.req.MaxBatchRecords <= 0 {
		s.req.MaxBatchRecords = DefaultBatchRecords
	}
	if s.req.Parallelism <= 0 {
		s.req.Parallelism = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if s.req.MaxInflightBytes <= 0 {
		s.req.MaxInflightBytes = DefaultInflightBytes
	}
	s.recycle = newRecycler(s.alloc, s.req.MaxInflightBytes/4)
	if len(req.Keys) > 0 {
		s.keys = make(map[string]struct{}, len(req.Keys))
		for _, k := range req.Keys {
			s.keys[string(k)] = struct{}{}
		}
	}
	for _, p := range parts {
		st := states[p]
		if err := r.waitIndex(ctx, req.Topic, p, st.Next); err != nil {
			return nil, err
		}
		pr := partRange{p: p, lo: max(req.FromOffset, st.Start), hi: st.Next}
		if req.ToOffset > 0 {
			pr.hi = min(pr.hi, req.ToOffset)
		}
		if pr.lo < pr.hi {
			s.parts = append(s.parts, pr)
		}
	}
	// Count what will be read, for progress reports.
	if err := s.forEachBlock(ctx, func(e metadata.IndexEntry, _, _ int64) error {
		s.total.BlocksTotal++
		s.total.RawBytesTotal += e.RawBytes
		return nil
	}); err != nil {
		return nil, err
	}
	s.maxW = s.req.MaxInflightBytes
	s.sem = semaphore.NewWeighted(s.maxW)
	s.tasks = make(chan *scanTask, 2*s.req.Parallelism)
	s.work = make(chan *scanTask, s.req.Parallelism)
	s.refs.Store(1)
	return s, nil
}

func (r *Request) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: scan %q: %s", metadata.ErrInvalidArgument, r.Topic, fmt.Sprintf(format, args...))
	}
	switch {
	case r.FromOffset < 0 || r.ToOffset < 0:
		return bad("offsets must not be negative (from %d, to %d)", r.FromOffset, r.ToOffset)
	case r.ToOffset > 0 && r.FromOffset > r.ToOffset:
		return bad("inverted offset range: from %d is after to %d", r.FromOffset, r.ToOffset)
	case r.FromTime < 0 || r.ToTime < 0:
		return bad("timestamps must not be negative (from %d, to %d)", r.FromTime, r.ToTime)
	case r.ToTime > 0 && r.FromTime > r.ToTime:
		return bad("inverted time range: from %s is after to %s",
			time.UnixMilli(r.FromTime).UTC().Format(time.RFC3339Nano), time.UnixMilli(r.ToTime).UTC().Format(time.RFC3339Nano))
	case r.MaxBatchRecords < 0 || r.Parallelism < 0 || r.MaxInflightBytes < 0:
		return bad("negative limits")
	}
	return nil
}

// waitIndex waits until the watched index reflects the partition up to
// next (etcd's answer may be a few milliseconds ahead of the watch).
func (r *Reader) waitIndex(ctx context.Context, topic string, p int32, next int64) error {
	deadline := time.NewTimer(scanCatchUp)
	defer deadline.Stop()
	for {
		v := r.index.Partition(topic, p)
		if v.State.Next >= next {
			return nil
		}
		select {
		case <-v.Changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%w: scan %s/%d: the index watch did not reach offset %d in %s", blockcache.ErrUnavailable, topic, p, next, scanCatchUp)
		}
	}
}

// forEachBlock calls fn, in output order, with every index entry that
// overlaps the scan's offsets and times, and the offsets [lo, hi) to take
// from it. It holds at most one page of entries at a time.
func (s *Scanner) forEachBlock(ctx context.Context, fn func(e metadata.IndexEntry, lo, hi int64) error) error {
	for _, pr := range s.parts {
		off := pr.lo
		for off < pr.hi {
			es := s.r.index.Entries(s.req.Topic, pr.p, off, entriesPage)
			if len(es) == 0 || es[0].Base > off {
				next, err := s.gap(pr.p, off)
				if err != nil {
					return err
				}
				off = next
				continue
			}
			for _, e := range es {
				if e.Base >= pr.hi {
					off = pr.hi
					break
				}
				if e.Base > off {
					next, err := s.gap(pr.p, off)
					if err != nil {
						return err
					}
					off = next
					break
				}
				lo, hi := off, min(e.End(), pr.hi)
				off = hi
				if e.MaxTS < s.req.FromTime || (s.req.ToTime > 0 && e.MinTS >= s.req.ToTime) {
					continue // no record of the block is in the time range
				}
				if err := fn(e, lo, hi); err != nil {
					return err
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return nil
}

// gap explains why the index has no block for off: the topic was deleted
// (ErrTopicNotFound), retention removed the records (the scan goes on from
// the new log start), or the index is not what it should be.
func (s *Scanner) gap(p int32, off int64) (int64, error) {
	if t, ok := s.r.index.Topic(s.req.Topic); !ok || t.ID != s.topicID {
		return 0, fmt.Errorf("topic %q was deleted while scanning: %w", s.req.Topic, metadata.ErrTopicNotFound)
	}
	if st := s.r.index.Partition(s.req.Topic, p).State; st.Start > off {
		return st.Start, nil
	}
	return 0, fmt.Errorf("%w: scan %s/%d: the index has no block for offset %d", blockcache.ErrUnavailable, s.req.Topic, p, off)
}

// Range is the offsets [From, To) of a partition a scan reads.
type Range struct {
	Partition int32
	From, To  int64
}

// Ranges returns the partitions the scan reads, in order, with the offsets
// fixed when it started; partitions with nothing in range are left out.
func (s *Scanner) Ranges() []Range {
	out := make([]Range, 0, len(s.parts))
	for _, pr := range s.parts {
		out = append(out, Range{Partition: pr.p, From: pr.lo, To: pr.hi})
	}
	return out
}

// Progress reports how much of the scan has been read.
func (s *Scanner) Progress() Progress {
	p := s.total
	p.BlocksDone, p.RawBytesDone = s.blocksDone.Load(), s.rawBytesDone.Load()
	return p
}

func (s *Scanner) start() {
	s.started = true
	s.ctx, s.cancel = context.WithCancel(s.parent)
	s.wg.Add(1 + s.req.Parallelism)
	go s.plan()
	for range s.req.Parallelism {
		go s.worker()
	}
}

// plan queues the blocks in output order, holding back while the decoded
// bytes in flight would exceed the bound.
func (s *Scanner) plan() {
	defer s.wg.Done()
	defer close(s.work)
	defer close(s.tasks)
	first := true
	err := s.forEachBlock(s.ctx, func(e metadata.IndexEntry, lo, hi int64) error {
		// Decoded records, their structs and their Arrow copy.
		w := min(2*s.decodedBytes(e.RawBytes)+128*e.Records+4096, s.maxW)
		if err := s.sem.Acquire(s.ctx, w); err != nil {
			return err
		}
		t := &scanTask{e: e, lo: lo, hi: hi, weight: w, done: make(chan struct{})}
		select {
		case s.tasks <- t:
		case <-s.ctx.Done():
			s.sem.Release(w)
			return s.ctx.Err()
		}
		select {
		case s.work <- t:
		case <-s.ctx.Done():
			t.err = s.ctx.Err()
			close(t.done)
			return s.ctx.Err()
		}
		if first {
			// Learn what blocks decode to before planning by it.
			first = false
			select {
			case <-t.done:
			case <-s.ctx.Done():
				return s.ctx.Err()
			}
		}
		return nil
	})
	s.planErr = err
}

// scanBlockFunc reads and converts one block (a variable so that the
// benchmark can compare decode paths).
var scanBlockFunc = (*Scanner).scanTaskBatches

func (s *Scanner) worker() {
	defer s.wg.Done()
	for t := range s.work {
		t.batches, t.err = scanBlockFunc(s, t)
		s.blocksDone.Add(1)
		s.rawBytesDone.Add(t.e.RawBytes)
		close(t.done)
	}
}

// Schema is the scan's schema: RecordSchema for a topic without a schema
// and no column list, else the columns asked or the typed default (see
// Request.Columns).
func (s *Scanner) Schema() *arrow.Schema { return s.layout.schema }

// Retain adds a reference.
func (s *Scanner) Retain() { s.refs.Add(1) }

// Release drops a reference; the last one stops the scan and frees every
// batch it holds.
func (s *Scanner) Release() {
	if s.refs.Add(-1) != 0 {
		return
	}
	s.stop()
}

func (s *Scanner) stop() {
	if s.cur != nil {
		s.cur.Release()
		s.cur = nil
	}
	for _, b := range s.pending {
		b.Release()
	}
	s.pending = nil
	if s.recycle != nil {
		defer s.recycle.close()
	}
	if !s.started {
		return
	}
	s.cancel()
	s.wg.Wait()
	for t := range s.tasks {
		<-t.done // every task is done once the planner and workers stopped
		for _, b := range t.batches {
			b.Release()
		}
	}
	s.started = false
	s.tasks = nil
}

// Next moves to the next batch. It returns false at the end of the scan or
// on an error (see Err).
func (s *Scanner) Next() bool {
	if s.cur != nil {
		s.cur.Release()
		s.cur = nil
	}
	if s.err != nil {
		return false
	}
	if !s.started {
		if s.tasks == nil {
			return false // released
		}
		s.start()
	}
	for {
		if err := s.ctx.Err(); err != nil {
			s.err = err
			s.stop()
			return false
		}
		if len(s.pending) > 0 {
			s.cur = s.pending[0]
			s.pending = s.pending[1:]
			return true
		}
		if s.curTask != nil {
			s.sem.Release(s.curTask.weight)
			s.curTask = nil
		}
		t, ok := <-s.tasks
		if !ok {
			s.err = s.planErr
			return false
		}
		<-t.done
		if t.err != nil {
			s.err = t.err
			for _, b := range t.batches {
				b.Release()
			}
			s.stop()
			return false
		}
		s.curTask, s.pending = t, slices.Clip(t.batches)
	}
}

// RecordBatch returns the current batch.
func (s *Scanner) RecordBatch() arrow.RecordBatch { return s.cur }

// Record returns the current batch.
//
// Deprecated: use RecordBatch.
func (s *Scanner) Record() arrow.RecordBatch { return s.cur }

// Err is the error that ended the scan, or nil at its normal end.
func (s *Scanner) Err() error { return s.err }
