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

// Cluster is what a Loop asks the cluster (sdk.Client).
type Cluster[R any] interface {
	PartitionCount(ctx context.Context, topic string) (int32, error)
	ListOffsets(ctx context.Context, topic string, spec varvev1.OffsetSpec, ts time.Time, partitions ...int32) (map[int32]int64, error)
	Fetch(ctx context.Context, topic string, partition int32, offset int64, maxBytes int32, maxWait time.Duration) (*Batch[R], error)
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

// Loop reads one topic's assigned partitions, keeping one long-poll fetch
// outstanding per partition (sdk.Consumer). Poll must not be called
// concurrently with itself; the other methods may be called from any
// goroutine.
type Loop[R any] struct {
	topic string
	opts  Options[R]

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	notify chan struct{} // capacity 1: a fetch completed

	mu       sync.Mutex
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

// fetchCall is one outstanding fetch. Seek replaces (and cancels) it, so a
// completed call whose partState still points to it matches the position.
type fetchCall[R any] struct {
	cancel context.CancelFunc
	done   bool
	from   int64 // the offset fetched from (moved if it was out of range)
	res    *Batch[R]
	err    error
	reset  *ResetEvent // set when from was moved
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

// Poll returns the next records of the assigned partitions. It keeps one
// fetch outstanding per partition (long-polling up to MaxWait at the end of
// the log) and returns as soon as any brought records, with whatever has
// arrived; or with no records once every partition's fetch came back
// empty; or with ctx's error. Records are in offset order within a
// partition.
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
				c.startFetchLocked(p, st)
			}
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
		st.fetch.cancel()
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

func (c *Loop[R]) startFetchLocked(p int32, st *partState[R]) {
	ctx, cancel := context.WithCancel(c.ctx)
	f := &fetchCall[R]{cancel: cancel, from: st.pos}
	st.fetch = f
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		res, from, reset, err := c.fetch(ctx, p, f.from)
		c.mu.Lock()
		f.done, f.res, f.from, f.err, f.reset = true, res, from, err, reset
		c.mu.Unlock()
		select { // wake Poll
		case c.notify <- struct{}{}:
		default:
		}
	}()
}

// fetch fetches partition p from offset, retrying retriable failures and
// applying the OffsetReset policy once to an out-of-range offset. It
// returns the offset it finally fetched from, and the reset if it moved.
func (c *Loop[R]) fetch(ctx context.Context, p int32, offset int64) (*Batch[R], int64, *ResetEvent, error) {
	retry := backoff.Default()
	var reset *ResetEvent
	checked := false
	for attempt := 0; ; attempt++ {
		res, err := c.opts.Cluster.Fetch(ctx, c.topic, p, offset, c.opts.MaxBytes, c.opts.MaxWait)
		if err == nil {
			return res, offset, reset, nil
		}
		if ctx.Err() != nil {
			return nil, offset, reset, err
		}
		if connect.CodeOf(err) == connect.CodeOutOfRange && !checked {
			checked = true
			ev, rerr := c.resetOffset(ctx, p, offset, err)
			if rerr != nil {
				return nil, offset, reset, rerr
			}
			if ev != nil {
				reset = ev
				offset = ev.To
				attempt--
				continue
			}
			// In range after all (the serving node's view trailed):
			// retry as any retriable failure.
			err = connect.NewError(connect.CodeUnavailable, err)
		}
		if !backoff.Retriable(err) || attempt >= retry.Retries {
			return nil, offset, reset, err
		}
		if backoff.Sleep(ctx, retry.Delay(err, attempt)) != nil {
			return nil, offset, reset, err
		}
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
