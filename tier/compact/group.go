package compact

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/varve-io/varve/internal/randhex"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// At 1,000 partitions a partition's share of a few seconds of data is a
// few KB: one object and one etcd transaction per partition would be 1,000
// PUTs and 1,000 swaps every pass. Small jobs (GroupBytes) of many
// partitions are compacted together instead: their outputs are blocks of
// one object (one PUT), and their swaps go into shared etcd transactions
// (compaction.SwapMany, as many per transaction as etcd's operation limit
// allows). Each partition's entries still point at its own blocks, so
// reads, merges, retention and GC see per-partition entries as before; an
// object is collected once no partition's entry names it.

// passBatch partitions are claimed, planned and grouped at a time, in
// groups of at most groupPartitions (so that Workers groups run at once):
// two transactions of swapsPerTxn swaps of one new entry each (a level-0
// run of sequencer records in one topic, planned from the watched index:
// compaction.GroupCost), so that a group fills the transactions it makes.
const (
	swapsPerTxn     = 63
	groupPartitions = 2 * swapsPerTxn
	passBatch       = DefaultWorkers * groupPartitions
)

// groupJob is one partition's job in a group.
type groupJob struct {
	topic string
	p     int32
	job
}

// planBatch plans the claimed partitions from the watched index (which
// reflects every swap made before the claims; fresh: from etcd reads): the small jobs of dense
// topics into groups of at most groupPartitions partitions and
// TargetBytes of input, every other job on its own. The objects
// several of the planned partitions read are shared (objects.go).
func (c *Compactor) planBatch(ctx context.Context, claimed []metadata.TopicPartition, fresh bool) ([]func() (Stats, error), error) {
	type plan struct {
		t       metadata.Topic
		p       int32
		entries []metadata.IndexEntry // a compacted topic's
		jobs    []job
	}
	var plans []plan
	var reads [][]metadata.IndexEntry
	var errs []error
	for _, tp := range claimed {
		t, ok := c.index.Topic(tp.Topic)
		entries, sn, seenOK := c.index.SnapshotSeen(tp.Topic, tp.Partition)
		seen := &sn
		if fresh || !seenOK {
			seen = nil
		}
		if fresh {
			var err error
			if t, err = c.meta.GetTopic(ctx, tp.Topic); err == nil {
				entries, _, err = c.meta.IndexEntries(ctx, tp.Topic, tp.Partition)
			}
			if ok = err == nil; !ok && !errors.Is(err, metadata.ErrTopicNotFound) {
				errs = append(errs, err)
			}
		}
		if !ok {
			continue // deleted since the pass saw it
		}
		if t.CleanupPolicy == metadata.CleanupCompact {
			plans = append(plans, plan{t: t, p: tp.Partition, entries: entries})
			continue
		}
		jobs := c.planDense(entries)
		if len(jobs) == 0 {
			continue
		}
		if len(jobs) == 1 {
			jobs[0].seen = seen
		}
		var read []metadata.IndexEntry
		for _, j := range jobs {
			read = append(read, j.old...)
		}
		reads = append(reads, read)
		plans = append(plans, plan{t: t, p: tp.Partition, jobs: jobs})
	}
	if objs, _ := ctx.Value(passObjectsKey{}).(*passObjects); objs != nil {
		objs.share(reads)
	}
	var tasks []func() (Stats, error)
	// A partition may have several small jobs (new level-0 entries and a
	// merge): its i-th goes into a group of slot i, so that no group (no
	// transaction) holds two swaps of one partition. Its jobs' runs do not
	// overlap, so they may swap in any order.
	type slot struct {
		group []groupJob
		size  int64
	}
	var slots []*slot
	flush := func(sl *slot) {
		if len(sl.group) > 0 {
			g := sl.group
			tasks = append(tasks, func() (Stats, error) { return c.runGroup(ctx, g) })
		}
		sl.group, sl.size = nil, 0
	}
	for _, pl := range plans {
		if pl.jobs == nil {
			tasks = append(tasks, func() (Stats, error) { return c.compactKeys(ctx, pl.t, pl.p, pl.entries) })
			continue
		}
		var big []job
		n := 0
		for _, j := range pl.jobs {
			size := storedBytes(j.old)
			if size >= c.cfg.GroupBytes {
				big = append(big, j)
				continue
			}
			if n == len(slots) {
				slots = append(slots, &slot{})
			}
			sl := slots[n]
			n++
			if sl.size+size > c.cfg.TargetBytes || len(sl.group) == groupPartitions {
				flush(sl)
			}
			sl.group = append(sl.group, groupJob{pl.t.Name, pl.p, j})
			sl.size += size
		}
		if len(big) > 0 {
			tasks = append(tasks, func() (Stats, error) {
				var st Stats
				for _, j := range big {
					js, err := c.runJob(ctx, pl.t, pl.p, j, nil)
					st.add(js)
					if err != nil {
						return st, err
					}
				}
				return st, nil
			})
		}
	}
	for _, sl := range slots {
		flush(sl)
	}
	return tasks, errors.Join(errs...)
}

func storedBytes(es []metadata.IndexEntry) int64 {
	var n int64
	for _, e := range es {
		n += e.Len
	}
	return n
}

// groupKey names a group's object: l<level>/_shared/<time>-<node>-<random>.vseg
// (level: the highest of its blocks).
func groupKey(level int, nodeID string) string {
	return fmt.Sprintf("l%d/_shared/%s-%s-%s%s", level, time.Now().UTC().Format("20060102T150405.000Z"), nodeID, randhex.String(4), tier.SegmentSuffix)
}

// runGroup rewrites the group's jobs into one object, PUTs it and swaps
// the partitions' entries in as few etcd transactions as the operation
// limit allows. A partition whose input fails to read is left out (its
// error returned); a transaction that loses a race leaves its
// partitions' blocks unreferenced in the object.
func (c *Compactor) runGroup(ctx context.Context, jobs []groupJob) (Stats, error) {
	var st Stats
	var errs []error
	w := segment.NewWriter(c.cfg.Level)
	type done struct {
		j   groupJob
		out output
		st  Stats
	}
	var outs []done
	level := 0
	for _, j := range jobs {
		out, js, err := c.rewriteTo(ctx, w, j.topic, j.p, j.old, j.level, nil)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if len(out.entries) > 0 {
			outs = append(outs, done{j, out, js})
			level = max(level, j.level)
		}
	}
	if len(outs) == 0 {
		return st, errors.Join(errs...)
	}
	obj, _, err := w.Finish()
	if err != nil {
		return st, errors.Join(append(errs, fmt.Errorf("compact a group of %d partitions: %w", len(outs), err))...)
	}
	key := groupKey(level, c.cfg.NodeID)
	// The swaps must apply before the GC may collect the object.
	ctx, cancel := context.WithDeadline(ctx, time.Now().Add(c.cfg.MaxSwapDelay))
	defer cancel()
	if err := c.store.PutIfAbsent(ctx, key, obj); err != nil {
		c.runs.Add(ctx, int64(len(outs)), metric.WithAttributes(attribute.String("result", "error")))
		return st, errors.Join(append(errs, fmt.Errorf("compact a group of %d partitions: put %s: %w", len(outs), key, err))...)
	}
	var read int64
	for _, d := range outs {
		read += d.st.BytesRead
	}
	c.bytes.Add(ctx, read, metric.WithAttributes(attribute.String("io", "read")))
	c.bytes.Add(ctx, int64(len(obj)), metric.WithAttributes(attribute.String("io", "write")))
	st.BytesWritten = int64(len(obj))
	for i := 0; i < len(outs); {
		// As many swaps as fit in one transaction.
		var swaps []compaction.Swap
		j := i
		for ; j < len(outs); j++ {
			d := outs[j]
			for k := range d.out.entries {
				d.out.entries[k].Object = key
			}
			swaps = append(swaps, d.j.swap(d.j.topic, d.j.p, d.out.entries))
			if j > i && compaction.GroupCost(swaps) > compaction.MaxGroupOps {
				swaps = swaps[:len(swaps)-1]
				break
			}
		}
		if err := c.swapGroup(ctx, swaps); err != nil {
			if !errors.Is(err, compaction.ErrSwapConflict) && !errors.Is(err, ErrPaused) {
				errs = append(errs, err)
			} else if errors.Is(err, compaction.ErrSwapConflict) {
				st.Conflicts += len(swaps)
			}
		} else {
			for _, d := range outs[i:j] {
				st.Jobs++
				st.EntriesIn += len(d.j.old)
				st.EntriesOut += len(d.out.entries)
				st.BytesRead += d.st.BytesRead
				st.RecordsIn += d.st.RecordsIn
				st.RecordsOut += d.st.RecordsOut
			}
		}
		i = j
	}
	return st, errors.Join(errs...)
}

// swapGroup is swap for the swaps of one transaction.
func (c *Compactor) swapGroup(ctx context.Context, swaps []compaction.Swap) error {
	if len(swaps) == 1 {
		_, err := c.swap(ctx, swaps[0], Stats{})
		return err
	}
	if paused, err := c.isPaused(ctx); err != nil || paused {
		if err == nil {
			err = ErrPaused
		}
		return fmt.Errorf("compact %d partitions: before the swap: %w", len(swaps), err)
	}
	if c.beforeSwap != nil {
		for _, s := range swaps {
			if err := c.beforeSwap(s); err != nil {
				return err
			}
		}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < time.Second {
		c.runs.Add(ctx, int64(len(swaps)), metric.WithAttributes(attribute.String("result", "error")))
		return fmt.Errorf("compact %d partitions: the swap is due %v after the PUT at the latest (max_swap_delay); giving up, the output is left to garbage collection", len(swaps), c.cfg.MaxSwapDelay)
	}
	if err := c.state.SwapMany(ctx, swaps); err != nil {
		result := "error"
		if errors.Is(err, compaction.ErrSwapConflict) {
			result = "conflict"
			c.log.Info("compaction lost a race; its output is left to garbage collection", "partitions", len(swaps), "err", err)
		}
		c.runs.Add(ctx, int64(len(swaps)), metric.WithAttributes(attribute.String("result", result)))
		return err
	}
	c.runs.Add(ctx, int64(len(swaps)), metric.WithAttributes(attribute.String("result", "ok")))
	c.log.Debug("compacted a group", "partitions", len(swaps))
	return nil
}
