package fetch

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"github.com/varve-io/varve/metadata"
)

// MaxFetchPartitions is the most partitions one FetchPartitions call may
// read: every partition of the largest topic (the proto documents 10,000).
const MaxFetchPartitions = metadata.MaxPartitions

// PartitionFetch is one partition of a FetchPartitions call.
type PartitionFetch struct {
	Partition int32
	Offset    int64
	// MaxBytes is the soft limit of this partition's answer (0:
	// DefaultMaxBytes), as Kafka's max.partition.fetch.bytes.
	MaxBytes int
}

// PartitionResult is the answer for one partition of a FetchPartitions
// call: Fetch's Result (or, with batches, FetchBatches'), or Err.
type PartitionResult struct {
	Partition int32
	// Records (without batches) or Batches (with batches), as Fetch and
	// FetchBatches answer them.
	Records []Record
	Batches []byte
	// Next is the offset to fetch next: the offset asked for when no
	// records came.
	Next           int64
	HighWatermark  int64
	LogStartOffset int64
	// Err is this partition's failure (ErrOffsetOutOfRange, a block that
	// cannot be read, an outage); the other fields are then unset.
	Err error
}

// FetchPartitions is Fetch (or, with batches, FetchBatches) over many
// partitions of one topic: every partition is answered at once, in the
// order given, each up to its own MaxBytes and all together up to about
// maxBytes (at least one record when one is available; the partitions
// after the total is reached get none). When no partition has records (and
// none failed) it waits up to maxWait, woken by the metadata watch of any
// of them, and then answers every partition again. One partition's
// failure is its result's Err; the error returned is for the whole call:
// metadata.ErrInvalidArgument for no partitions, too many or one listed
// twice, metadata.ErrPartitionOutOfRange, metadata.ErrTopicNotFound (also
// when the topic is deleted during the wait). A wait cut short by ctx
// answers with no records.
func (f *Fetcher) FetchPartitions(ctx context.Context, topic string, parts []PartitionFetch, maxBytes int, maxWait time.Duration, batches bool) ([]PartitionResult, error) {
	t, err := f.checkPartitions(ctx, topic, parts)
	if err != nil {
		return nil, err
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	deadline := time.Now().Add(maxWait)
	out := make([]PartitionResult, len(parts))
	offsets := make([]int64, len(parts))
	views := make([]metadata.PartitionView, len(parts))
	for i, pf := range parts {
		offsets[i] = pf.Offset
		f.blocks.Reading(topic, pf.Partition)
	}
	checked := false
	for {
		start := time.Now()
		tail, beyond := false, false
		for i, pf := range parts {
			views[i] = f.index.Partition(topic, pf.Partition)
			tail = tail || offsets[i] >= views[i].State.Next
			beyond = beyond || offsets[i] > views[i].State.Next
		}
		a := askNone
		if !checked && tail && (beyond || !lazyCatchUp(maxWait) || !time.Now().Before(deadline)) {
			// One catch-up of the watched index for every partition at
			// its tail (Fetch does one per call), then none. A long poll
			// defers it to its deadline (see lazyCatchUp).
			checked = true
			if err := f.index.CatchUp(ctx); err != nil {
				a = askLookup
			} else {
				for i, pf := range parts {
					views[i] = f.index.Partition(topic, pf.Partition)
				}
			}
		}
		budget, answered, got := maxBytes, false, false
		for i, pf := range parts {
			st := views[i].State
			r := PartitionResult{Partition: pf.Partition, Next: offsets[i], HighWatermark: st.Next, LogStartOffset: st.Start}
			if budget > 0 {
				limit := pf.MaxBytes
				if limit <= 0 {
					limit = DefaultMaxBytes
				}
				pa := a
				if pa == askLookup && offsets[i] <= st.Next {
					// The catch-up failed: only a partition asked past
					// what the cache knows needs etcd's index (it may be
					// a record the watch has not brought yet); one at the
					// cache's tail waits for the watch like the others,
					// rather than a read of etcd per partition.
					pa = askNone
				}
				if pa == askNone && offsets[i] == st.Next && offsets[i] >= st.Start {
					// At the tail the index has nothing to read yet: r
					// answers no records. (A record committed since the
					// view was read closed its Changed channel, so the
					// wait below returns at once and reads it.)
					out[i] = r
					continue
				}
				r = f.once(ctx, topic, pf.Partition, offsets[i], min(limit, budget), st, pa, batches)
				offsets[i] = max(offsets[i], r.Next) // compaction gaps skipped
				budget -= r.size()
				got = got || len(r.Records) > 0 || len(r.Batches) > 0
				answered = answered || got || r.Err != nil
			}
			out[i] = r
		}
		if got {
			f.fetchTime.Record(ctx, time.Since(start).Seconds())
		}
		if answered {
			return out, nil
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			if !checked && tail {
				continue // the long poll's deferred catch-up
			}
			return out, nil
		}
		if !f.waitAny(ctx, views, wait) && (ctx.Err() != nil || checked || !tail) {
			return out, nil
		}
		// A topic deleted (and perhaps re-created) during the wait is not
		// the log this fetch started on.
		if now, ok := f.index.Topic(topic); !ok || now.ID != t.ID {
			return nil, fmt.Errorf("topic %q was deleted while fetching: %w", topic, metadata.ErrTopicNotFound)
		}
	}
}

// size is what r counts against a FetchPartitions call's total: the bytes
// of its batches, or its records measured as read measures them.
func (r *PartitionResult) size() int {
	n := len(r.Batches)
	for i := range r.Records {
		n += len(r.Records[i].Key) + len(r.Records[i].Value) + 32
	}
	return n
}

// checkPartitions refuses a FetchPartitions call as a whole: no
// partitions, too many, one twice, or one the topic does not have.
func (f *Fetcher) checkPartitions(ctx context.Context, topic string, parts []PartitionFetch) (metadata.Topic, error) {
	if len(parts) == 0 {
		return metadata.Topic{}, fmt.Errorf("%w: fetch %q: no partitions", metadata.ErrInvalidArgument, topic)
	}
	if len(parts) > MaxFetchPartitions {
		return metadata.Topic{}, fmt.Errorf("%w: fetch %q: %d partitions, at most %d per call", metadata.ErrInvalidArgument, topic, len(parts), MaxFetchPartitions)
	}
	seen := make(map[int32]struct{}, len(parts))
	highest := int32(-1)
	for _, pf := range parts {
		if _, dup := seen[pf.Partition]; dup {
			return metadata.Topic{}, fmt.Errorf("%w: fetch %q: partition %d is listed twice", metadata.ErrInvalidArgument, topic, pf.Partition)
		}
		seen[pf.Partition] = struct{}{}
		highest = max(highest, pf.Partition)
	}
	t, err := f.checkPartition(ctx, topic, highest)
	if err != nil {
		return t, err
	}
	for _, pf := range parts {
		if pf.Partition < 0 {
			return t, fmt.Errorf("%w: topic %q has %d partitions, got partition %d", metadata.ErrPartitionOutOfRange, topic, t.Partitions, pf.Partition)
		}
	}
	return t, nil
}

// once answers p from offset without waiting, as one round of fetch (or
// FetchBatches) does, from the partition state st the caller read before:
// records, none at the tail, or the partition's error.
func (f *Fetcher) once(ctx context.Context, topic string, p int32, offset int64, maxBytes int, st metadata.PartitionState, a ask, batches bool) PartitionResult {
	fail := func(err error) PartitionResult { return PartitionResult{Partition: p, Err: err} }
	for {
		switch {
		case offset < 0:
			return fail(fmt.Errorf("%w: %s/%d: offset %d is negative", ErrOffsetOutOfRange, topic, p, offset))
		case offset < st.Start:
			return fail(fmt.Errorf("%w: %s/%d: offset %d is before the log start %d", ErrOffsetOutOfRange, topic, p, offset, st.Start))
		case offset > st.Next && a == askNone:
			// The watched index is caught up (or was when the call began).
			return fail(fmt.Errorf("%w: %s/%d: offset %d is after the high watermark %d", ErrOffsetOutOfRange, topic, p, offset, st.Next))
		}
		limit := maxBytes
		if batches {
			limit = 1 // position only, as FetchBatches
		}
		res, err := f.read(ctx, topic, p, offset, limit, st, a, batches)
		if err != nil {
			return fail(err)
		}
		if len(res.Records) == 0 && res.Next > offset {
			// Compaction removed every record from offset to res.Next.
			offset, a = res.Next, askNone
			st = f.index.Partition(topic, p).State
			continue
		}
		out := PartitionResult{Partition: p, Records: res.Records, Next: res.Next, HighWatermark: max(st.Next, res.HighWatermark), LogStartOffset: res.LogStartOffset}
		if !batches || len(res.Records) == 0 {
			return out
		}
		br, err := f.batchesFrom(ctx, topic, p, res, maxBytes)
		if err != nil {
			return fail(err)
		}
		return PartitionResult{Partition: p, Batches: br.Batches, Next: br.Next, HighWatermark: br.HighWatermark, LogStartOffset: br.LogStartOffset}
	}
}

// waitAny waits up to wait for a change of any of views' partitions: true
// when one changed, false when the wait ended or ctx is done.
func (f *Fetcher) waitAny(ctx context.Context, views []metadata.PartitionView, wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	f.waiting.Add(ctx, 1)
	defer f.waiting.Add(context.WithoutCancel(ctx), -1)
	// One select over every partition's change channel (reflect.Select
	// takes up to 65,536 cases; MaxFetchPartitions is far below).
	cases := make([]reflect.SelectCase, 0, len(views)+2)
	cases = append(cases,
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)})
	for _, v := range views {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(v.Changed)})
	}
	chosen, _, _ := reflect.Select(cases)
	return chosen >= 2
}

// View is the watched state of a partition and a channel closed at its
// next change: taken before a FetchPartitions with no wait, it lets a
// caller reading several topics wait for all of them with WaitAny (a
// change between the two is not missed).
func (f *Fetcher) View(topic string, p int32) metadata.PartitionView {
	return f.index.Partition(topic, p)
}

// WaitAny waits up to wait for a change of any of views' partitions: true
// when one changed, false when the wait ended or ctx is done.
func (f *Fetcher) WaitAny(ctx context.Context, views []metadata.PartitionView, wait time.Duration) bool {
	return f.waitAny(ctx, views, wait)
}
