package sdk

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// DefaultMaxWait is how long a consumer's fetch waits for new records.
const DefaultMaxWait = 500 * time.Millisecond

// OffsetReset is what a consumer does when its position in a partition is
// out of range: past the end of the log (a Seek beyond it, or a log that
// was re-created) or before its start (records removed by retention). It
// is Kafka's auto.offset.reset.
type OffsetReset int

const (
	// OffsetResetLatest (the zero value, Kafka's default) moves the
	// position to the partition's end: only records produced from then on.
	OffsetResetLatest OffsetReset = iota
	// OffsetResetEarliest moves the position to the partition's log start.
	OffsetResetEarliest
	// OffsetResetNone moves nothing: Poll returns an error wrapping
	// ErrOffsetOutOfRange (with connect.CodeOutOfRange).
	OffsetResetNone
)

// String returns the policy's name: latest, earliest or none.
func (r OffsetReset) String() string {
	switch r {
	case OffsetResetLatest:
		return "latest"
	case OffsetResetEarliest:
		return "earliest"
	case OffsetResetNone:
		return "none"
	}
	return fmt.Sprintf("OffsetReset(%d)", int(r))
}

// ParseOffsetReset parses latest, earliest or none.
func ParseOffsetReset(s string) (OffsetReset, error) {
	for _, r := range []OffsetReset{OffsetResetLatest, OffsetResetEarliest, OffsetResetNone} {
		if s == r.String() {
			return r, nil
		}
	}
	return 0, fmt.Errorf("offset reset %q: must be latest, earliest or none", s)
}

// ErrOffsetOutOfRange is wrapped by the error of a Poll whose position in
// a partition is out of range under OffsetResetNone (an
// *OffsetOutOfRangeError).
var ErrOffsetOutOfRange = errors.New("offset out of range")

// OffsetOutOfRangeError is the error of a Poll whose position in a
// partition is out of range under OffsetResetNone. It wraps
// ErrOffsetOutOfRange and the fetch's *connect.Error (CodeOutOfRange).
type OffsetOutOfRangeError struct {
	Topic     string
	Partition int32
	Offset    int64
	// LogStart and LogEnd are the partition's log start and next offset.
	LogStart, LogEnd int64
	Err              error
}

func (e *OffsetOutOfRangeError) Error() string {
	return fmt.Sprintf("offset out of range: %s/%d: offset %d is outside the log [%d, %d) and the offset reset policy is none",
		e.Topic, e.Partition, e.Offset, e.LogStart, e.LogEnd)
}

func (e *OffsetOutOfRangeError) Unwrap() []error { return []error{ErrOffsetOutOfRange, e.Err} }

// OffsetResetEvent tells that a consumer moved an out-of-range position.
type OffsetResetEvent struct {
	Topic     string
	Partition int32
	// From is the position that was out of range, To where it moved.
	From, To int64
	// LogStart and LogEnd are the partition's log start and next offset
	// when the reset happened.
	LogStart, LogEnd int64
	Policy           OffsetReset
}

// ConsumerOptions configures a Consumer. Zero fields take the defaults.
type ConsumerOptions struct {
	// MaxWait is how long each partition's fetch waits at the end of the log
	// for new records (default 500ms), and so about the longest a Poll
	// without records takes.
	MaxWait time.Duration
	// MaxBytes is the soft limit of one partition's fetch (default: the
	// cluster's, 1 MiB).
	MaxBytes int32
	// FromLatest makes partitions without a position start at their end
	// (only new records) instead of at their log start.
	FromLatest bool
	// OffsetReset is what happens when a position is out of range (default
	// OffsetResetLatest, as Kafka's auto.offset.reset).
	OffsetReset OffsetReset
	// OnOffsetReset, if set, is called from Poll each time a position was
	// out of range and moved per OffsetReset, before the records read from
	// the new position are returned.
	OnOffsetReset func(OffsetResetEvent)
}

// Consumer reads one topic's assigned partitions (there are no consumer
// groups yet). Poll long-polls every assigned partition concurrently. Poll
// must not be called concurrently with itself; the other methods may be
// called from any goroutine.
//
// A consumer's position in a partition is the offset of the next record
// Poll returns. Partitions start at their log start (or end, with
// FromLatest) unless Seek says otherwise. When a position falls out of the
// log (records removed by retention, or a position past the end) the
// consumer applies ConsumerOptions.OffsetReset: it moves the position to
// the end (the default) or the start and tells OnOffsetReset, or, with
// OffsetResetNone, Poll returns an error wrapping ErrOffsetOutOfRange.
type Consumer struct {
	c     *Client
	topic string
	opts  ConsumerOptions

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	notify chan struct{} // capacity 1: a fetch completed

	mu       sync.Mutex
	closed   bool
	all      bool    // assigned every partition of the topic
	assigned []int32 // sorted; nil while all is unresolved
	parts    map[int32]*partState
}

type partState struct {
	pos   int64 // next offset to return, or OffsetEarliest/OffsetLatest
	hwm   int64 // high watermark of the last fetch, -1 before one
	fetch *fetchCall
}

// fetchCall is one outstanding fetch. Seek replaces (and cancels) it, so a
// completed call whose partState still points to it matches the position.
type fetchCall struct {
	cancel context.CancelFunc
	done   bool
	from   int64 // the offset fetched from (moved if it was out of range)
	res    *FetchResult
	err    error
	reset  *OffsetResetEvent // set when from was moved
}

// NewConsumer returns a consumer of topic with every partition assigned.
// Close it to stop its fetches.
func (c *Client) NewConsumer(topic string, opts ConsumerOptions) *Consumer {
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Consumer{
		c: c, topic: topic, opts: opts,
		ctx: ctx, cancel: cancel,
		notify: make(chan struct{}, 1),
		all:    true,
		parts:  make(map[int32]*partState),
	}
}

// Topic returns the consumer's topic.
func (c *Consumer) Topic() string { return c.topic }

// Assign replaces the assigned partitions; none means every partition of
// the topic. Positions are kept: a partition assigned again resumes where
// it was.
func (c *Consumer) Assign(partitions ...int32) {
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

// Seek sets the position of a partition to offset, or to OffsetEarliest or
// OffsetLatest (resolved by the next Poll). It may be called for a
// partition before it is assigned.
func (c *Consumer) Seek(partition int32, offset int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopFetchLocked(partition)
	c.stateLocked(partition).pos = offset
}

// SeekToStart moves every assigned partition to its log start.
func (c *Consumer) SeekToStart(ctx context.Context) error {
	return c.seekSpec(ctx, varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST, time.Time{})
}

// SeekToEnd moves every assigned partition to its end: only records
// produced from now on are returned.
func (c *Consumer) SeekToEnd(ctx context.Context) error {
	return c.seekSpec(ctx, varvev1.OffsetSpec_OFFSET_SPEC_LATEST, time.Time{})
}

// SeekToTime moves every assigned partition to its first record with a
// timestamp at or after t, or to its end when there is none.
func (c *Consumer) SeekToTime(ctx context.Context, t time.Time) error {
	return c.seekSpec(ctx, varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP, t)
}

func (c *Consumer) seekSpec(ctx context.Context, spec varvev1.OffsetSpec, t time.Time) error {
	parts, err := c.assignment(ctx)
	if err != nil {
		return err
	}
	offs, err := c.c.ListOffsets(ctx, c.topic, spec, t, parts...)
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
// after a Seek to OffsetEarliest or OffsetLatest).
func (c *Consumer) Position(partition int32) int64 {
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
func (c *Consumer) HighWatermark(partition int32) int64 {
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
func (c *Consumer) Poll(ctx context.Context) ([]Record, error) {
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
			recs        []Record
			firstErr    error
			needResolve bool
			resets      []OffsetResetEvent
		)
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("poll %s: consumer closed", c.topic)
		}
		parts = c.assigned
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
						if r.Offset >= f.from {
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
		if c.opts.OnOffsetReset != nil {
			for _, ev := range resets {
				c.opts.OnOffsetReset(ev)
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
			return nil, fmt.Errorf("poll %s: %w", c.topic, ctxError(ctx.Err()))
		}
	}
}

// Close stops the consumer's fetches and waits for them to end.
func (c *Consumer) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

func (c *Consumer) stateLocked(p int32) *partState {
	st := c.parts[p]
	if st == nil {
		st = &partState{pos: OffsetEarliest, hwm: -1}
		if c.opts.FromLatest {
			st.pos = OffsetLatest
		}
		c.parts[p] = st
	}
	return st
}

func (c *Consumer) stopFetchLocked(p int32) {
	if st := c.parts[p]; st != nil && st.fetch != nil {
		st.fetch.cancel()
		st.fetch = nil
	}
}

// assignment returns the assigned partitions, asking the cluster for the
// topic's partition count when every partition is assigned.
func (c *Consumer) assignment(ctx context.Context) ([]int32, error) {
	c.mu.Lock()
	if !c.all || c.assigned != nil {
		parts := c.assigned
		c.mu.Unlock()
		return parts, nil
	}
	c.mu.Unlock()
	n, err := c.c.partitionCount(ctx, c.topic)
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

// resolvePositions turns OffsetEarliest and OffsetLatest positions of parts
// into offsets.
func (c *Consumer) resolvePositions(ctx context.Context, parts []int32) error {
	for _, sentinel := range []int64{OffsetEarliest, OffsetLatest} {
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
		if sentinel == OffsetLatest {
			spec = varvev1.OffsetSpec_OFFSET_SPEC_LATEST
		}
		offs, err := c.c.ListOffsets(ctx, c.topic, spec, time.Time{}, todo...)
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
		if st := c.stateLocked(p); st.pos < 0 && st.pos != OffsetEarliest && st.pos != OffsetLatest {
			st.pos = OffsetEarliest
			bad = true
		}
	}
	c.mu.Unlock()
	if bad {
		return c.resolvePositions(ctx, parts)
	}
	return nil
}

func (c *Consumer) startFetchLocked(p int32, st *partState) {
	ctx, cancel := context.WithCancel(c.ctx)
	f := &fetchCall{cancel: cancel, from: st.pos}
	st.fetch = f
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		res, from, reset, err := c.fetch(ctx, p, f.from)
		c.mu.Lock()
		f.done, f.res, f.from, f.err, f.reset = true, res, from, err, reset
		c.mu.Unlock()
		signal(c.notify)
	}()
}

// fetch fetches partition p from offset, retrying retriable failures and
// applying the OffsetReset policy once to an out-of-range offset. It
// returns the offset it finally fetched from, and the reset if it moved.
func (c *Consumer) fetch(ctx context.Context, p int32, offset int64) (*FetchResult, int64, *OffsetResetEvent, error) {
	retry := defaultRetry()
	var reset *OffsetResetEvent
	checked := false
	for attempt := 0; ; attempt++ {
		res, err := c.c.fetchBatches(ctx, c.topic, p, offset, c.opts.MaxBytes, c.opts.MaxWait)
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
		if !Retriable(err) || attempt >= retry.retries {
			return nil, offset, reset, err
		}
		if sleepCtx(ctx, retry.delay(err, attempt)) != nil {
			return nil, offset, reset, err
		}
	}
}

// resetOffset applies the OffsetReset policy to offset, which a fetch of p
// answered out of range (fetchErr). It returns the move, nil when offset is
// within the log after all, or the error of OffsetResetNone.
func (c *Consumer) resetOffset(ctx context.Context, p int32, offset int64, fetchErr error) (*OffsetResetEvent, error) {
	start, err := c.c.ListOffsets(ctx, c.topic, varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST, time.Time{}, p)
	if err != nil {
		return nil, err
	}
	end, err := c.c.ListOffsets(ctx, c.topic, varvev1.OffsetSpec_OFFSET_SPEC_LATEST, time.Time{}, p)
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
	ev := &OffsetResetEvent{Topic: c.topic, Partition: p, From: offset, LogStart: s, LogEnd: e, Policy: c.opts.OffsetReset}
	switch c.opts.OffsetReset {
	case OffsetResetEarliest:
		ev.To = s
	case OffsetResetNone:
		return nil, &OffsetOutOfRangeError{Topic: c.topic, Partition: p, Offset: offset, LogStart: s, LogEnd: e, Err: fetchErr}
	default:
		ev.To = e
	}
	c.c.log.Warn("offset out of range: position reset", "topic", c.topic, "partition", p, "from", offset, "to", ev.To, "policy", c.opts.OffsetReset.String())
	return ev, nil
}

func allEmpty(parts []int32, empty map[int32]bool) bool {
	for _, p := range parts {
		if !empty[p] {
			return false
		}
	}
	return true
}
