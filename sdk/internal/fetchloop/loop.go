package fetchloop

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/sdk/internal/backoff"
)

// Position sentinels, the values of sdk.OffsetEarliest and sdk.OffsetLatest:
// resolved to offsets by the next Poll.
const (
	Earliest int64 = -2
	Latest   int64 = -1
)

// Batch is one fetch's answer (sdk.FetchResult).
type Batch[R any] struct {
	Records       []R
	NextOffset    int64
	HighWatermark int64
}

// Request is one partition of a FetchPartitions call.
type Request struct {
	Partition int32
	Offset    int64
}

// Result is one partition's answer to a FetchPartitions call: its batch,
// or its own error (the other partitions are answered as usual).
type Result[R any] struct {
	Partition int32
	Batch     *Batch[R]
	Err       error
}

// Cluster is what a Loop asks the cluster (sdk.Client).
type Cluster[R any] interface {
	PartitionCount(ctx context.Context, topic string) (int32, error)
	ListOffsets(ctx context.Context, topic string, spec varvev1.OffsetSpec, ts time.Time, partitions ...int32) (map[int32]int64, error)
	// FetchPartitions fetches many partitions in one call, each up to
	// maxBytes, long-polling up to maxWait until any has records. The
	// error is the whole call's; a partition's failure is its Result's.
	FetchPartitions(ctx context.Context, topic string, reqs []Request, maxBytes int32, maxWait time.Duration) ([]Result[R], error)
}

// ResetEvent is a position that was out of range and moved (sdk.OffsetResetEvent).
type ResetEvent struct {
	Partition        int32
	From, To         int64
	LogStart, LogEnd int64
}

// Options configures a Loop; package sdk fills them from ConsumerOptions,
// defaults applied.
type Options[R any] struct {
	Cluster    Cluster[R]
	MaxWait    time.Duration
	MaxBytes   int32
	FromLatest bool
	// Offset is a record's offset.
	Offset func(R) int64
	// Reset applies the offset-reset policy to a position out of the log
	// [logStart, logEnd] of p: where it moves to, or the error Poll returns.
	Reset func(p int32, from, logStart, logEnd int64, fetchErr error) (int64, error)
	// OnReset, if set, is called from Poll with each reset.
	OnReset func(ResetEvent)
	// CtxError gives the error of a done context its Connect code.
	CtxError func(error) error
}

// Loop reads one topic's assigned partitions (sdk.Consumer): the
// partitions that need a fetch go out together as one long-poll
// FetchPartitions call, so a consumer of many partitions makes one request
// per round, not one per partition. Poll must not be called concurrently
// with itself; the other methods may be called from any goroutine.
type Loop[R any] struct {
	topic string
	opts  Options[R]

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	notify chan struct{} // capacity 1: a fetch completed

	mu       sync.Mutex
	rot      int // rotates the order of a call's partitions (fairness)
	closed   bool
	all      bool    // assigned every partition of the topic
	assigned []int32 // sorted; nil while all is unresolved
	parts    map[int32]*partState[R]
}

type partState[R any] struct {
	pos   int64 // next offset to return, or Earliest/Latest
	hwm   int64 // high watermark of the last fetch, -1 before one
	fetch *fetchCall[R]
}

// fetchCall is one partition's outstanding fetch, part of a batchCall.
// Seek replaces (and abandons) it, so a completed call whose partState
// still points to it matches the position.
type fetchCall[R any] struct {
	batch     *batchCall
	partition int32
	abandoned bool
	done      bool
	from      int64 // the offset fetched from (moved if it was out of range)
	res       *Batch[R]
	err       error
	reset     *ResetEvent // set when from was moved
}

// batchCall is one FetchPartitions call (with its retries) for the
// fetchCalls of several partitions; cancelled once all are abandoned.
type batchCall struct {
	cancel context.CancelFunc
	live   int // fetchCalls not abandoned
}

// abandonLocked drops f (Seek, Assign): its answer will be ignored, and
// the call is cancelled when no partition of it is left.
func (f *fetchCall[R]) abandonLocked() {
	if f.abandoned {
		return
	}
	f.abandoned = true
	if f.batch.live--; f.batch.live == 0 {
		f.batch.cancel()
	}
}

// New returns a loop over topic with every partition assigned. Close it to
// stop its fetches.
func New[R any](topic string, opts Options[R]) *Loop[R] {
	ctx, cancel := context.WithCancel(context.Background())
	return &Loop[R]{
		topic: topic, opts: opts,
		ctx: ctx, cancel: cancel,
		notify: make(chan struct{}, 1),
		all:    true,
		parts:  make(map[int32]*partState[R]),
	}
}

// Assign replaces the assigned partitions; none means every partition of
// the topic. Positions are kept: a partition assigned again resumes where
// it was.
func (c *Loop[R]) Assign(partitions ...int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next []int32
	if len(partitions) > 0 {
		next = slices.Clone(partitions)
		slices.Sort(next)
		next = slices.Compact(next)
	}
	for _, p := range c.assigned {
		if _, keep := slices.BinarySearch(next, p); !keep {
			c.stopFetchLocked(p)
		}
	}
	c.all = len(next) == 0
	c.assigned = next
}

// Seek sets the position of a partition to offset, or to Earliest or
// Latest (resolved by the next Poll). It may be called for a
// partition before it is assigned.
func (c *Loop[R]) Seek(partition int32, offset int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopFetchLocked(partition)
	c.stateLocked(partition).pos = offset
}

// SeekSpec moves every assigned partition to the offset of spec (at t).
func (c *Loop[R]) SeekSpec(ctx context.Context, spec varvev1.OffsetSpec, t time.Time) error {
	parts, err := c.assignment(ctx)
	if err != nil {
		return err
	}
	offs, err := c.opts.Cluster.ListOffsets(ctx, c.topic, spec, t, parts...)
	if err != nil {
		return err
	}
	for _, p := range parts {
		o, ok := offs[p]
		if !ok {
			return fmt.Errorf("seek %s/%d: %w", c.topic, p,
				connect.NewError(connect.CodeInternal, errors.New("partition missing from the list offsets answer")))
		}
		c.Seek(p, o)
	}
	return nil
}

// Position returns the offset of the next record Poll returns from
// partition, or -1 when it is not known yet (before the first Poll, or
// after a Seek to Earliest or Latest).
func (c *Loop[R]) Position(partition int32) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.parts[partition]; ok && st.pos >= 0 {
		return st.pos
	}
	return -1
}

// HighWatermark returns the partition's next offset as of the consumer's
// last fetch of it, or -1 before one. HighWatermark minus Position is the
// consumer's lag.
func (c *Loop[R]) HighWatermark(partition int32) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := c.parts[partition]; ok {
		return st.hwm
	}
	return -1
}

// Poll returns the next records of the assigned partitions. It fetches
// every partition that has no fetch outstanding in one FetchPartitions
// call (long-polling up to MaxWait at the end of the log) and returns as
// soon as any brought records, with whatever has arrived; or with no
// records once every partition's fetch came back empty; or with ctx's
// error. Records are in offset order within a partition.
//
// A failed fetch (after retries of retriable failures) is returned as the
// error, possibly together with records of other partitions: handle the
// records first. Positions advance past returned records only.
func (c *Loop[R]) Poll(ctx context.Context) ([]R, error) {
	parts, err := c.assignment(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.resolvePositions(ctx, parts); err != nil {
		return nil, err
	}
	empty := make(map[int32]bool)
	for {
		var (
			recs        []R
			firstErr    error
			needResolve bool
			resets      []ResetEvent
			todo        []int32
		)
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("poll %s: consumer closed", c.topic)
		}
		parts = c.assigned
		ready := 0 // size recs once: records are large and fetches return many
		for _, p := range parts {
			if st := c.parts[p]; st != nil && st.fetch != nil && st.fetch.done && st.fetch.err == nil {
				ready += len(st.fetch.res.Records)
			}
		}
		if ready > 0 {
			recs = make([]R, 0, ready)
		}
		for _, p := range parts {
			st := c.stateLocked(p)
			if f := st.fetch; f != nil && f.done {
				st.fetch = nil
				if f.reset != nil {
					resets = append(resets, *f.reset)
				}
				if f.err != nil {
					if firstErr == nil {
						firstErr = f.err
					}
				} else {
					// st.pos is still the offset the fetch started from:
					// Seek replaces the fetch.
					st.hwm = f.res.HighWatermark
					n := 0
					for _, r := range f.res.Records {
						if c.opts.Offset(r) >= f.from {
							recs = append(recs, r)
							n++
						}
					}
					st.pos = max(f.from, f.res.NextOffset)
					if n == 0 {
						empty[p] = true
					}
				}
			}
			if st.pos < 0 {
				needResolve = true
				continue
			}
			if st.fetch == nil {
				todo = append(todo, p)
			}
		}
		if len(todo) > 0 {
			c.startBatchLocked(todo)
		}
		c.mu.Unlock()
		if c.opts.OnReset != nil {
			for _, ev := range resets {
				c.opts.OnReset(ev)
			}
		}
		if len(recs) > 0 || firstErr != nil {
			return recs, firstErr
		}
		if allEmpty(parts, empty) {
			return nil, nil
		}
		if needResolve {
			if err := c.resolvePositions(ctx, parts); err != nil {
				return nil, err
			}
			continue
		}
		select {
		case <-c.notify:
		case <-ctx.Done():
			return nil, fmt.Errorf("poll %s: %w", c.topic, c.opts.CtxError(ctx.Err()))
		}
	}
}

// Close stops the consumer's fetches and waits for them to end.
func (c *Loop[R]) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

func (c *Loop[R]) stateLocked(p int32) *partState[R] {
	st := c.parts[p]
	if st == nil {
		st = &partState[R]{pos: Earliest, hwm: -1}
		if c.opts.FromLatest {
			st.pos = Latest
		}
		c.parts[p] = st
	}
	return st
}

func (c *Loop[R]) stopFetchLocked(p int32) {
	if st := c.parts[p]; st != nil && st.fetch != nil {
		st.fetch.abandonLocked()
		st.fetch = nil
	}
}

// assignment returns the assigned partitions, asking the cluster for the
// topic's partition count when every partition is assigned.
func (c *Loop[R]) assignment(ctx context.Context) ([]int32, error) {
	c.mu.Lock()
	if !c.all || c.assigned != nil {
		parts := c.assigned
		c.mu.Unlock()
		return parts, nil
	}
	c.mu.Unlock()
	n, err := c.opts.Cluster.PartitionCount(ctx, c.topic)
	if err != nil {
		return nil, err
	}
	parts := make([]int32, n)
	for i := range parts {
		parts[i] = int32(i)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.all && c.assigned == nil {
		c.assigned = parts
	}
	return c.assigned, nil
}

// resolvePositions turns Earliest and Latest positions of parts
// into offsets.
func (c *Loop[R]) resolvePositions(ctx context.Context, parts []int32) error {
	for _, sentinel := range []int64{Earliest, Latest} {
		var todo []int32
		c.mu.Lock()
		for _, p := range parts {
			if st := c.stateLocked(p); st.pos == sentinel {
				todo = append(todo, p)
			}
		}
		c.mu.Unlock()
		if len(todo) == 0 {
			continue
		}
		spec := varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST
		if sentinel == Latest {
			spec = varvev1.OffsetSpec_OFFSET_SPEC_LATEST
		}
		offs, err := c.opts.Cluster.ListOffsets(ctx, c.topic, spec, time.Time{}, todo...)
		if err != nil {
			return err
		}
		c.mu.Lock()
		for _, p := range todo {
			if o, ok := offs[p]; ok {
				if st := c.stateLocked(p); st.pos == sentinel {
					st.pos = o
				}
			}
		}
		c.mu.Unlock()
	}
	// Any other negative position is invalid: start over per the options.
	c.mu.Lock()
	bad := false
	for _, p := range parts {
		if st := c.stateLocked(p); st.pos < 0 && st.pos != Earliest && st.pos != Latest {
			st.pos = Earliest
			bad = true
		}
	}
	c.mu.Unlock()
	if bad {
		return c.resolvePositions(ctx, parts)
	}
	return nil
}

// startBatchLocked starts one FetchPartitions call for parts (each at its
// position), in an order rotated at every call so that when the call's
// total byte limit runs out it is not always the same partitions that
// get nothing.
func (c *Loop[R]) startBatchLocked(parts []int32) {
	ctx, cancel := context.WithCancel(c.ctx)
	b := &batchCall{cancel: cancel, live: len(parts)}
	calls := make([]*fetchCall[R], len(parts))
	rot := c.rot % len(parts)
	c.rot++
	for i := range parts {
		p := parts[(i+rot)%len(parts)]
		st := c.parts[p]
		f := &fetchCall[R]{batch: b, partition: p, from: st.pos}
		st.fetch = f
		calls[i] = f
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		c.runBatch(ctx, calls)
	}()
}

// member is one partition of a running batch: where it fetches from now,
// its retries and its reset.
type member[R any] struct {
	f       *fetchCall[R]
	offset  int64
	attempt int
	checked bool // an out-of-range answer was checked against the log
	reset   *ResetEvent
	err     error
}

// runBatch fetches calls' partitions together, retrying retriable
// failures (of the call, or of single partitions, each with its own
// count, as Fetch per partition did) and applying the OffsetReset policy
// once per partition to an out-of-range offset. Each partition's answer
// is handed to Poll as soon as it is final; the partitions still retrying
// or moved by a reset are fetched again together.
func (c *Loop[R]) runBatch(ctx context.Context, calls []*fetchCall[R]) {
	retry := backoff.Default()
	pending := make([]*member[R], len(calls))
	for i, f := range calls {
		pending[i] = &member[R]{f: f, offset: f.from}
	}
	callAttempt := 0
	for len(pending) > 0 {
		c.mu.Lock()
		pending = slices.DeleteFunc(pending, func(m *member[R]) bool { return m.f.abandoned })
		c.mu.Unlock()
		if len(pending) == 0 {
			return
		}
		reqs := make([]Request, len(pending))
		for i, m := range pending {
			reqs[i] = Request{Partition: m.f.partition, Offset: m.offset}
		}
		results, err := c.opts.Cluster.FetchPartitions(ctx, c.topic, reqs, c.opts.MaxBytes, c.opts.MaxWait)
		if err != nil {
			if ctx.Err() == nil && backoff.Retriable(err) && callAttempt < retry.Retries &&
				backoff.Sleep(ctx, retry.Delay(err, callAttempt)) == nil {
				callAttempt++
				continue
			}
			for _, m := range pending {
				m.err = err
			}
			c.finish(pending, nil)
			return
		}
		byPart := make(map[int32]Result[R], len(results))
		for _, r := range results {
			byPart[r.Partition] = r
		}
		var (
			done, next []*member[R]
			batches    = make(map[*member[R]]*Batch[R])
			delay      time.Duration
		)
		for _, m := range pending {
			p := m.f.partition
			r, ok := byPart[p]
			switch {
			case !ok:
				r.Err = fmt.Errorf("fetch %s/%d: %w", c.topic, p,
					connect.NewError(connect.CodeInternal, errors.New("partition missing from the answer")))
			case r.Err == nil && r.Batch == nil:
				r.Err = fmt.Errorf("fetch %s/%d: %w", c.topic, p,
					connect.NewError(connect.CodeInternal, errors.New("partition answered without records or error")))
			}
			if r.Err == nil {
				batches[m] = r.Batch
				done = append(done, m)
				continue
			}
			m.err = r.Err
			if ctx.Err() != nil {
				done = append(done, m)
				continue
			}
			if connect.CodeOf(m.err) == connect.CodeOutOfRange && !m.checked {
				m.checked = true
				ev, rerr := c.resetOffset(ctx, p, m.offset, m.err)
				if rerr != nil {
					m.err = rerr
					done = append(done, m)
					continue
				}
				if ev != nil {
					m.reset, m.offset = ev, ev.To
					next = append(next, m) // at once, without counting an attempt
					continue
				}
				// In range after all (the serving node's view trailed):
				// retry as any retriable failure.
				m.err = connect.NewError(connect.CodeUnavailable, m.err)
			}
			if !backoff.Retriable(m.err) || m.attempt >= retry.Retries {
				done = append(done, m)
				continue
			}
			delay = max(delay, retry.Delay(m.err, m.attempt))
			m.attempt++
			next = append(next, m)
		}
		c.finish(done, batches)
		pending = next
		if len(pending) > 0 && delay > 0 && backoff.Sleep(ctx, delay) != nil {
			c.finish(pending, nil)
			return
		}
	}
}

// finish hands members' answers (their batch, else their err) to Poll.
func (c *Loop[R]) finish(ms []*member[R], batches map[*member[R]]*Batch[R]) {
	if len(ms) == 0 {
		return
	}
	c.mu.Lock()
	for _, m := range ms {
		f := m.f
		f.done, f.res, f.from, f.reset = true, batches[m], m.offset, m.reset
		if f.res == nil {
			f.err = m.err
			if f.err == nil {
				f.err = fmt.Errorf("fetch %s/%d: %w", c.topic, f.partition, c.opts.CtxError(context.Canceled))
			}
		}
	}
	c.mu.Unlock()
	select { // wake Poll
	case c.notify <- struct{}{}:
	default:
	}
}

// resetOffset applies the OffsetReset policy to offset, which a fetch of p
// answered out of range (fetchErr). It returns the move, nil when offset is
// within the log after all, or the error of OffsetResetNone.
func (c *Loop[R]) resetOffset(ctx context.Context, p int32, offset int64, fetchErr error) (*ResetEvent, error) {
	start, err := c.opts.Cluster.ListOffsets(ctx, c.topic, varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST, time.Time{}, p)
	if err != nil {
		return nil, err
	}
	end, err := c.opts.Cluster.ListOffsets(ctx, c.topic, varvev1.OffsetSpec_OFFSET_SPEC_LATEST, time.Time{}, p)
	if err != nil {
		return nil, err
	}
	s, sok := start[p]
	e, eok := end[p]
	if !sok || !eok {
		return nil, fmt.Errorf("list offsets of %s/%d: %w", c.topic, p,
			connect.NewError(connect.CodeInternal, errors.New("partition missing from the answer")))
	}
	if offset >= s && offset <= e {
		return nil, nil
	}
	to, err := c.opts.Reset(p, offset, s, e, fetchErr)
	if err != nil {
		return nil, err
	}
	return &ResetEvent{Partition: p, From: offset, To: to, LogStart: s, LogEnd: e}, nil
}

func allEmpty(parts []int32, empty map[int32]bool) bool {
	for _, p := range parts {
		if !empty[p] {
			return false
		}
	}
	return true
}
