package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/sdk/internal/fetchloop"
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
	// MaxWait is how long a fetch waits at the end of the log for new
	// records (default 500ms), and so about the longest a Poll without
	// records takes.
	MaxWait time.Duration
	// MaxBytes is the soft limit of one partition's records in a fetch
	// (default: the cluster's, 1 MiB; the fetch of all partitions together
	// is limited by the node's fetch_max_bytes).
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
// groups yet). Poll long-polls every assigned partition at once, in one
// FetchPartitions call for all of them. Poll
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
	l     *fetchloop.Loop[Record]
	topic string
}

// NewConsumer returns a consumer of topic with every partition assigned.
// Close it to stop its fetches.
func (c *Client) NewConsumer(topic string, opts ConsumerOptions) *Consumer {
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	lo := fetchloop.Options[Record]{
		Cluster: consumerCluster{c}, MaxWait: opts.MaxWait, MaxBytes: opts.MaxBytes, FromLatest: opts.FromLatest,
		Offset: func(r Record) int64 { return r.Offset },
		Reset: func(p int32, from, s, e int64, fetchErr error) (int64, error) {
			return c.resetOffset(topic, opts.OffsetReset, p, from, s, e, fetchErr)
		},
		CtxError: ctxError,
	}
	if opts.OnOffsetReset != nil {
		lo.OnReset = func(ev fetchloop.ResetEvent) {
			opts.OnOffsetReset(OffsetResetEvent{Topic: topic, Partition: ev.Partition, From: ev.From, To: ev.To,
				LogStart: ev.LogStart, LogEnd: ev.LogEnd, Policy: opts.OffsetReset})
		}
	}
	return &Consumer{l: fetchloop.New(topic, lo), topic: topic}
}

// resetOffset applies policy to a position of topic/p out of the log
// [s, e] (a fetch answered fetchErr): where it moves, or the error of
// OffsetResetNone.
func (c *Client) resetOffset(topic string, policy OffsetReset, p int32, offset, s, e int64, fetchErr error) (int64, error) {
	var to int64
	switch policy {
	case OffsetResetEarliest:
		to = s
	case OffsetResetNone:
		return 0, &OffsetOutOfRangeError{Topic: topic, Partition: p, Offset: offset, LogStart: s, LogEnd: e, Err: fetchErr}
	default:
		to = e
	}
	c.log.Warn("offset out of range: position reset", "topic", topic, "partition", p, "from", offset, "to", to, "policy", policy.String())
	return to, nil
}

// consumerCluster is the cluster as a Consumer's fetch loop asks it.
type consumerCluster struct{ c *Client }

func (cc consumerCluster) PartitionCount(ctx context.Context, topic string) (int32, error) {
	return cc.c.partitionCount(ctx, topic)
}

func (cc consumerCluster) ListOffsets(ctx context.Context, topic string, spec varvev1.OffsetSpec, ts time.Time, partitions ...int32) (map[int32]int64, error) {
	return cc.c.ListOffsets(ctx, topic, spec, ts, partitions...)
}

func (cc consumerCluster) FetchPartitions(ctx context.Context, topic string, reqs []fetchloop.Request, maxBytes int32, maxWait time.Duration) ([]fetchloop.Result[Record], error) {
	return cc.c.fetchPartitions(ctx, topic, reqs, maxBytes, maxWait)
}

// fetchPartitions fetches many partitions of topic in one FetchPartitions
// call asking for the stored record batches and decoding them here, so
// the node ships stored bytes instead of rebuilding records: each
// partition up to maxBytes, the whole answer up to the node's limit. Hooks get one OnFetch event per partition, as if each
// had been fetched alone (Latency is the call's). A partition's failure is
// its Result's Err, wrapped as Fetch wraps it.
func (c *Client) fetchPartitions(ctx context.Context, topic string, reqs []fetchloop.Request, maxBytes int32, maxWait time.Duration) ([]fetchloop.Result[Record], error) {
	if t := c.noFetchPartitions.Load(); t != 0 && time.Since(time.Unix(0, t)) < fetchPartitionsRecheck {
		return c.fetchEach(ctx, topic, reqs, maxBytes, maxWait), nil
	}
	start := time.Now()
	req := &varvev1.FetchPartitionsRequest{Topic: topic, MaxWaitMs: durationMs(maxWait), RecordBatches: true,
		Partitions: make([]*varvev1.FetchPartition, len(reqs))}
	from := make(map[int32]int64, len(reqs))
	for i, r := range reqs {
		req.Partitions[i] = &varvev1.FetchPartition{Partition: r.Partition, Offset: r.Offset, MaxBytes: maxBytes}
		from[r.Partition] = r.Offset
	}
	res, err := c.batchFetcher().FetchPartitions(ctx, connect.NewRequest(req))
	if connect.CodeOf(err) == connect.CodeUnimplemented {
		// A node older than FetchPartitions (or without the fetch role,
		// which Fetch then reports).
		c.noFetchPartitions.Store(time.Now().UnixNano())
		return c.fetchEach(ctx, topic, reqs, maxBytes, maxWait), nil
	}
	if err != nil {
		for _, r := range reqs {
			c.fetched(topic, r.Partition, nil, start, err)
		}
		return nil, fmt.Errorf("fetch %s (%d partitions): %w", topic, len(reqs), err)
	}
	out := make([]fetchloop.Result[Record], 0, len(reqs))
	for _, pr := range res.Msg.GetPartitions() {
		p := pr.GetPartition()
		offset, asked := from[p]
		if !asked {
			continue
		}
		if pe := pr.GetError(); pe != nil {
			err := partitionError(pe)
			c.fetched(topic, p, nil, start, err)
			out = append(out, fetchloop.Result[Record]{Partition: p, Err: fmt.Errorf("fetch %s/%d at offset %d: %w", topic, p, offset, err)})
			continue
		}
		var recs []Record
		if bs := pr.GetRecordBatches(); len(bs) > 0 {
			if recs, err = decodeFetched(topic, p, bs, offset); err != nil {
				err = connect.NewError(connect.CodeDataLoss, fmt.Errorf("fetch %s/%d at offset %d: %w", topic, p, offset, err))
				c.fetched(topic, p, nil, start, err)
				out = append(out, fetchloop.Result[Record]{Partition: p, Err: err})
				continue
			}
		} else {
			recs = fromProtoRecords(topic, pr.GetRecords())
		}
		c.fetched(topic, p, recs, start, nil)
		out = append(out, fetchloop.Result[Record]{Partition: p, Batch: &fetchloop.Batch[Record]{
			Records: recs, NextOffset: pr.GetNextOffset(), HighWatermark: pr.GetHighWatermark()}})
	}
	return out, nil
}

// fetchPartitionsRecheck is how long a client that met a node without
// FetchPartitions fetches partition by partition before trying it again.
const fetchPartitionsRecheck = time.Minute

// fetchEach is fetchPartitions for a node without FetchPartitions: one
// Fetch per partition, all at once. When one brings records or fails, the
// others' long-polls are cut short and asked again without waiting, so the
// answer comes as soon as a FetchPartitions call's would.
func (c *Client) fetchEach(ctx context.Context, topic string, reqs []fetchloop.Request, maxBytes int32, maxWait time.Duration) []fetchloop.Result[Record] {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]fetchloop.Result[Record], len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() {
			res, err := c.fetchBatches(wctx, topic, r.Partition, r.Offset, maxBytes, maxWait)
			if err != nil && wctx.Err() != nil && ctx.Err() == nil {
				res, err = c.fetchBatches(ctx, topic, r.Partition, r.Offset, maxBytes, 0)
			}
			if err != nil || len(res.Records) > 0 {
				cancel()
			}
			out[i] = fetchloop.Result[Record]{Partition: r.Partition, Err: err}
			if err == nil {
				out[i].Batch = &fetchloop.Batch[Record]{Records: res.Records, NextOffset: res.NextOffset, HighWatermark: res.HighWatermark}
			}
		})
	}
	wg.Wait()
	return out
}

// partitionError is one partition's error of a FetchPartitions answer as
// the *connect.Error a Fetch of it alone would have returned.
func partitionError(pe *varvev1.FetchPartitionError) *connect.Error {
	code := connect.Code(pe.GetCode())
	if pe.GetCode() <= 0 || pe.GetCode() > int32(connect.CodeUnauthenticated) {
		code = connect.CodeUnknown
	}
	err := connect.NewError(code, errors.New(pe.GetMessage()))
	for _, d := range pe.GetDetails() {
		if ed, derr := connect.NewErrorDetail(d); derr == nil {
			err.AddDetail(ed)
		}
	}
	return err
}

// Topic returns the consumer's topic.
func (c *Consumer) Topic() string { return c.topic }

// Assign replaces the assigned partitions; none means every partition of
// the topic. Positions are kept: a partition assigned again resumes where
// it was.
func (c *Consumer) Assign(partitions ...int32) { c.l.Assign(partitions...) }

// Seek sets the position of a partition to offset, or to OffsetEarliest or
// OffsetLatest (resolved by the next Poll). It may be called for a
// partition before it is assigned.
func (c *Consumer) Seek(partition int32, offset int64) { c.l.Seek(partition, offset) }

// SeekToStart moves every assigned partition to its log start.
func (c *Consumer) SeekToStart(ctx context.Context) error {
	return c.l.SeekSpec(ctx, varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST, time.Time{})
}

// SeekToEnd moves every assigned partition to its end: only records
// produced from now on are returned.
func (c *Consumer) SeekToEnd(ctx context.Context) error {
	return c.l.SeekSpec(ctx, varvev1.OffsetSpec_OFFSET_SPEC_LATEST, time.Time{})
}

// SeekToTime moves every assigned partition to its first record with a
// timestamp at or after t, or to its end when there is none.
func (c *Consumer) SeekToTime(ctx context.Context, t time.Time) error {
	return c.l.SeekSpec(ctx, varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP, t)
}

// Position returns the offset of the next record Poll returns from
// partition, or -1 when it is not known yet (before the first Poll, or
// after a Seek to OffsetEarliest or OffsetLatest).
func (c *Consumer) Position(partition int32) int64 { return c.l.Position(partition) }

// HighWatermark returns the partition's next offset as of the consumer's
// last fetch of it, or -1 before one. HighWatermark minus Position is the
// consumer's lag.
func (c *Consumer) HighWatermark(partition int32) int64 { return c.l.HighWatermark(partition) }

// Poll returns the next records of the assigned partitions. It fetches
// the partitions that have no fetch outstanding in one FetchPartitions
// call (long-polling up to MaxWait at the end of the log) and returns as
// soon as any brought records, with whatever has arrived; or with no
// records once every partition's fetch came back empty; or with ctx's
// error. Records are in offset order within a partition.
//
// A failed fetch (after retries of retriable failures) is returned as the
// error, possibly together with records of other partitions: handle the
// records first. Positions advance past returned records only.
func (c *Consumer) Poll(ctx context.Context) ([]Record, error) { return c.l.Poll(ctx) }

// Close stops the consumer's fetches and waits for them to end.
func (c *Consumer) Close() { c.l.Close() }
