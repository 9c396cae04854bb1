package fetch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"go.opentelemetry.io/otel/trace"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/internal/obs"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// ErrOffsetOutOfRange: the offset is before the log start or after the
// high watermark. A block that cannot be read fails with
// blockcache.ErrDataLoss or blockcache.ErrUnavailable.
var ErrOffsetOutOfRange = errors.New("offset out of range")

// Record is a fetched record.
type Record struct {
	Partition int32
	Offset    int64
	segment.Record
}

// Result is the answer to a Fetch.
type Result struct {
	Records []Record
	// Next is the offset to fetch next.
	Next int64
	// HighWatermark is the partition's next offset when served.
	HighWatermark  int64
	LogStartOffset int64
}

// DefaultMaxBytes is used when a fetch sets no byte limit.
const DefaultMaxBytes = 1 << 20

// Fetcher serves reads. It is safe for concurrent use.
type Fetcher struct {
	meta   IndexReader
	index  *metadata.Cache
	blocks *blockcache.Reader
	log    *slog.Logger

	fetchTime metric.Float64Histogram
	waiting   metric.Int64UpDownCounter
}

// NewFetcher makes a Fetcher reading the blocks of store through a
// blockcache.Reader that keeps decoded blocks in mem. index must be a Cache
// with entries.
func NewFetcher(store tier.Store, meta IndexReader, index *metadata.Cache, mem *blockcache.Memory, log *slog.Logger, mp metric.MeterProvider) *Fetcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	// The read path's first package path, kept so that dashboards keep
	// matching.
	m := mp.Meter("github.com/varve-io/varve/query")
	f := &Fetcher{meta: meta, index: index, blocks: blockcache.New(store, mem, log, mp), log: log}
	f.waiting, _ = m.Int64UpDownCounter("varve.fetch.waiting", metric.WithDescription("Long-polls parked at the end of a partition, waiting for new records."))
	f.fetchTime, _ = m.Float64Histogram("varve.fetch.duration", metric.WithUnit("s"), obs.LatencyBuckets, metric.WithDescription("Time to serve a fetch that returned records."))
	return f
}

// Blocks returns the reader of blocks (its memory tier is the block cache a
// node's ingester fills at flush).
func (f *Fetcher) Blocks() *blockcache.Reader { return f.blocks }

// SetTracerProvider makes block reads below the memory cache traced (see
// blockcache.Reader.SetTracerProvider).
func (f *Fetcher) SetTracerProvider(tp trace.TracerProvider) { f.blocks.SetTracerProvider(tp) }

// Topic returns a topic from the watched index, else from etcd.
func (f *Fetcher) Topic(ctx context.Context, name string) (metadata.Topic, error) {
	if t, ok := f.index.Topic(name); ok {
		return t, nil
	}
	return f.meta.GetTopic(ctx, name)
}

func (f *Fetcher) checkPartition(ctx context.Context, topic string, p int32) (metadata.Topic, error) {
	t, err := f.Topic(ctx, topic)
	if err != nil {
		return t, err
	}
	if p >= t.Partitions {
		// Partitions added an instant ago: this node's watch may lag.
		if t, err = f.meta.GetTopic(ctx, topic); err != nil {
			return t, err
		}
	}
	if p < 0 || p >= t.Partitions {
		return t, fmt.Errorf("%w: topic %q has %d partitions, got partition %d", metadata.ErrPartitionOutOfRange, topic, t.Partitions, p)
	}
	return t, nil
}

// Fetch returns records of one partition from offset on, up to about
// maxBytes (at least one record when one exists). When offset is the high
// watermark it waits up to maxWait for new records, woken by the metadata
// watch. A wait cut short by ctx (a client gone, a node draining) answers
// with no records.
func (f *Fetcher) Fetch(ctx context.Context, topic string, p int32, offset int64, maxBytes int, maxWait time.Duration) (Result, error) {
	return f.fetch(ctx, topic, p, offset, maxBytes, maxWait, false)
}

// fetch is Fetch; with position set it only finds the first record at or
// after offset (waiting as Fetch does) and, where the block has no
// compaction gaps, answers it without decoding the block: a Record with
// only its Offset (and Partition) set.
func (f *Fetcher) fetch(ctx context.Context, topic string, p int32, offset int64, maxBytes int, maxWait time.Duration, position bool) (Result, error) {
	t, err := f.checkPartition(ctx, topic, p)
	if err != nil {
		return Result{}, err
	}
	if offset < 0 {
		return Result{}, fmt.Errorf("%w: %s/%d: offset %d is negative", ErrOffsetOutOfRange, topic, p, offset)
	}
	f.blocks.Reading(topic, p)
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	deadline := time.Now().Add(maxWait)
	checkedEtcd := false
	for {
		view := f.index.Partition(topic, p)
		st := view.State
		if offset < st.Start {
			return Result{}, fmt.Errorf("%w: %s/%d: offset %d is before the log start %d", ErrOffsetOutOfRange, topic, p, offset, st.Start)
		}
		check := !checkedEtcd && (offset != st.Next || !lazyCatchUp(maxWait) || !time.Now().Before(deadline))
		if offset < st.Next || check {
			start := time.Now()
			ask := askNone
			if check {
				ask = askCatchUp
				checkedEtcd = true
			}
			res, err := f.read(ctx, topic, p, offset, maxBytes, st, ask, position)
			if err != nil {
				return Result{}, err
			}
			if len(res.Records) > 0 {
				f.fetchTime.Record(ctx, time.Since(start).Seconds())
				return res, nil
			}
			if res.Next > offset {
				// Compaction removed every record from offset to res.Next.
				offset = res.Next
				continue
			}
			st.Next = max(st.Next, res.HighWatermark)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			if !checkedEtcd {
				continue // the long poll's deferred catch-up
			}
			return Result{Next: offset, HighWatermark: st.Next, LogStartOffset: st.Start}, nil
		}
		timer := time.NewTimer(wait)
		f.waiting.Add(ctx, 1)
		select {
		case <-view.Changed:
			timer.Stop()
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			f.waiting.Add(context.WithoutCancel(ctx), -1)
			return Result{Next: offset, HighWatermark: st.Next, LogStartOffset: st.Start}, nil
		}
		f.waiting.Add(ctx, -1)
		// A topic deleted (and perhaps re-created) during the wait is not
		// the log this fetch started on.
		if now, ok := f.index.Topic(topic); !ok || now.ID != t.ID {
			return Result{}, fmt.Errorf("topic %q was deleted while fetching: %w", topic, metadata.ErrTopicNotFound)
		}
	}
}

// lazyCatchUp reports whether a fetch that waits up to maxWait at the tail
// defers its catch-up with etcd to its deadline: it waits for the watch
// first, so a long poll that new records wake costs etcd nothing, and one
// that times out catches up once before answering empty. Either way a
// record acknowledged before the call is answered (by the watch, or found
// by the catch-up), as when the catch-up comes first; only a fetch that
// does not wait (or not long enough to matter) catches up at once.
func lazyCatchUp(maxWait time.Duration) bool { return maxWait >= lazyCatchUpWait }

// lazyCatchUpWait is the shortest wait that defers the catch-up.
const lazyCatchUpWait = 10 * time.Millisecond

// ask says what read may ask etcd at the tail (offset at or past the
// watched high watermark, which may be stale).
type ask int

const (
	// askNone: the watched index is current enough; nothing at the tail.
	askNone ask = iota
	// askCatchUp: catch the watched index up with etcd (one shared round),
	// else look the offset up in etcd.
	askCatchUp
	// askLookup: look the offset up in etcd (a catch-up just failed).
	askLookup
)

// read collects records from offset across consecutive blocks, using the
// watched index. When that copy has no entry for offset — it trails etcd by
// milliseconds, or ask is set because the cache's high watermark may be
// stale — it asks etcd with one linearizable read and serves the block etcd
// names, so a record acknowledged an instant ago is always readable.
func (f *Fetcher) read(ctx context.Context, topic string, p int32, offset int64, maxBytes int, st metadata.PartitionState, ask ask, position bool) (Result, error) {
	res := Result{Next: offset, HighWatermark: st.Next, LogStartOffset: st.Start}
	entries := f.index.Entries(topic, p, offset, 16)
	if (len(entries) == 0 || entries[0].Base > offset) && ask == askCatchUp && offset >= st.Next {
		// At the tail: let the cache catch up with etcd (one shared,
		// cheap round for every tailing reader) instead of reading the
		// index in etcd per fetch; if it cannot, read etcd below.
		ask = askLookup
		if err := f.index.CatchUp(ctx); err == nil {
			ask = askNone
			st = f.index.Partition(topic, p).State
			res.HighWatermark, res.LogStartOffset = st.Next, st.Start
			entries = f.index.Entries(topic, p, offset, 16)
			if offset > st.Next {
				return Result{}, fmt.Errorf("%w: %s/%d: offset %d is after the high watermark %d", ErrOffsetOutOfRange, topic, p, offset, st.Next)
			}
		}
	}
	if len(entries) == 0 || entries[0].Base > offset {
		if offset >= st.Next && ask == askNone {
			return res, nil
		}
		e, est, found, _, err := f.meta.LookupIndex(ctx, topic, p, offset)
		if err != nil {
			return Result{}, err
		}
		res.HighWatermark, res.LogStartOffset = max(st.Next, est.Next), est.Start
		if offset > est.Next {
			return Result{}, fmt.Errorf("%w: %s/%d: offset %d is after the high watermark %d", ErrOffsetOutOfRange, topic, p, offset, est.Next)
		}
		if offset < est.Start {
			return Result{}, fmt.Errorf("%w: %s/%d: offset %d is before the log start %d", ErrOffsetOutOfRange, topic, p, offset, est.Start)
		}
		if !found {
			return res, nil
		}
		entries = []metadata.IndexEntry{e}
	}
	size := 0
	for _, e := range entries {
		if e.Base > res.Next {
			break // never skip records
		}
		if position && e.Span <= e.Records && res.Next < e.End() {
			// No gaps: the record at res.Next is in this block.
			res.Records = append(res.Records, Record{Partition: p, Offset: res.Next})
			res.HighWatermark = max(res.HighWatermark, e.End())
			return res, nil
		}
		recs, err := f.Block(ctx, e)
		if err != nil {
			if len(res.Records) > 0 {
				// Serve the intact records before this block; the next
				// fetch starts at it and gets its error.
				return res, nil
			}
			return Result{}, f.blockFailed(ctx, e, res.Next, err)
		}
		if e.Span > e.Records {
			// A compacted range: records carry their offset gaps, and the
			// offsets after the last one are gone too.
			off := e.Base - 1
			for _, r := range recs {
				if off += 1 + r.Gap; off < res.Next {
					continue
				}
				sz := len(r.Key) + len(r.Value) + 32
				if size > 0 && size+sz > maxBytes {
					return res, nil
				}
				size += sz
				res.Records = append(res.Records, Record{Partition: p, Offset: off, Record: r})
				res.Next = off + 1
			}
			res.Next = max(res.Next, e.End())
		}
		for i := int(res.Next - e.Base); i < len(recs) && e.Span <= e.Records; i++ {
			r := recs[i]
			sz := len(r.Key) + len(r.Value) + 32
			if size > 0 && size+sz > maxBytes {
				return res, nil
			}
			size += sz
			res.Records = append(res.Records, Record{Partition: p, Offset: e.Base + int64(i), Record: r})
			res.Next = e.Base + int64(i) + 1
		}
		res.HighWatermark = max(res.HighWatermark, e.End())
		if size >= maxBytes {
			break
		}
	}
	return res, nil
}

// blockFailed refines a block read at offset that failed as data loss. If
// the entry left the index meanwhile — retention advanced the log start, or
// compaction swapped the entry, and garbage collection then deleted the
// object after its grace period — the loss is not real: the answer is
// OUT_OF_RANGE with the log start, or UNAVAILABLE so the client retries on
// the new entry.
func (f *Fetcher) blockFailed(ctx context.Context, e metadata.IndexEntry, offset int64, err error) error {
	if !errors.Is(err, blockcache.ErrDataLoss) {
		return err
	}
	now, st, found, _, lerr := f.meta.LookupIndex(ctx, e.Topic, e.Partition, offset)
	switch {
	case lerr != nil:
		return err
	case offset < st.Start:
		return fmt.Errorf("%w: %s/%d: offset %d is before the log start %d", ErrOffsetOutOfRange, e.Topic, e.Partition, offset, st.Start)
	case found && (now.Object != e.Object || now.Off != e.Off):
		return fmt.Errorf("%w: %s/%d offset %d: the index entry changed while reading (compaction); retry", blockcache.ErrUnavailable, e.Topic, e.Partition, offset)
	}
	return err
}

// Block returns the decoded records of an index entry's block (see
// blockcache.Reader.Block).
func (f *Fetcher) Block(ctx context.Context, e metadata.IndexEntry) ([]segment.Record, error) {
	return f.blocks.Block(ctx, e)
}
