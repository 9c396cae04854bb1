package compact

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
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
// two nested transactions of swapsPerTxn swaps of one new entry each (a
// level-0 run of sequencer records in one topic, planned from the watched
// index: compaction.GroupCost within compaction.NestedGroupOps). The
// batch's groups swap together once all are stored (pendingSwaps): one
// etcd transaction for the batch.
const (
	swapsPerTxn     = 55
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
func (c *Compactor) planBatch(ctx context.Context, claimed []metadata.TopicPartition, fresh bool, pend *pendingSwaps) ([]func() (Stats, error), error) {
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
		// A partition's only job swaps fenced on the view; so do its
		// several jobs (disjoint runs) when none writes a partition state
		// (none seen: written only through the sequencer), which then swap
		// in one transaction (compaction.SwapGroups). Otherwise the first
		// swap would make the others' fenced writes fail.
		if len(jobs) == 1 || (seen != nil && seen.PartitionModRev == 0) {
			for i := range jobs {
				jobs[i].seen = seen
			}
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
			tasks = append(tasks, func() (Stats, error) { return c.runGroup(ctx, g, pend) })
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
					js, err := c.runJob(ctx, pl.t, pl.p, j, nil, pend)
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

// runGroup rewrites the group's jobs into one object and PUTs it; its
// swaps, in as few nested transactions as the operation limit allows,
// join pend, which the batch applies once all its groups are stored. A
// partition whose input fails to read is left out (its error returned); a
// transaction that loses a race leaves its partitions' blocks
// unreferenced in the object.
func (c *Compactor) runGroup(ctx context.Context, jobs []groupJob, pend *pendingSwaps) (Stats, error) {
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
	due := time.Now().Add(c.cfg.MaxSwapDelay)
	pctx, cancel := context.WithDeadline(ctx, due)
	defer cancel()
	if err := c.store.PutIfAbsent(pctx, key, obj); err != nil {
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
		// As many swaps as fit in one nested transaction.
		var swaps []compaction.Swap
		var cst Stats
		j := i
		for ; j < len(outs); j++ {
			d := outs[j]
			for k := range d.out.entries {
				d.out.entries[k].Object = key
			}
			swaps = append(swaps, d.j.swap(d.j.topic, d.j.p, d.out.entries))
			if j > i && compaction.GroupCost(swaps) > compaction.NestedGroupOps {
				swaps = swaps[:len(swaps)-1]
				break
			}
			cst.Jobs++
			cst.EntriesIn += len(d.j.old)
			cst.EntriesOut += len(d.out.entries)
			cst.BytesRead += d.st.BytesRead
			cst.RecordsIn += d.st.RecordsIn
			cst.RecordsOut += d.st.RecordsOut
		}
		pend.add(swaps, cst, due)
		i = j
	}
	return st, errors.Join(errs...)
}

// pendingSwaps are the swaps of a batch's groups, stored and waiting for
// the batch's other groups: swapped together (compaction.SwapGroups),
// they cost one etcd transaction per compaction.MaxNestedGroups of them.
type pendingSwaps struct {
	mu     sync.Mutex
	groups [][]compaction.Swap
	stats  []Stats     // what each group adds when it applies
	due    []time.Time // when each group's object may be collected
	// singles are swaps of jobs stored alone, packed into groups
	// (packSingles) when the batch swaps.
	singles     []compaction.Swap
	singleStats []Stats
	singleDue   []time.Time
}

func (ps *pendingSwaps) add(swaps []compaction.Swap, st Stats, due time.Time) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.groups = append(ps.groups, swaps)
	ps.stats = append(ps.stats, st)
	ps.due = append(ps.due, due)
}

// addSingle adds the swap of a job stored alone (storePending): such
// swaps are packed into groups when the batch swaps (packSingles).
func (ps *pendingSwaps) addSingle(swap compaction.Swap, st Stats, due time.Time) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.singles = append(ps.singles, swap)
	ps.singleStats = append(ps.singleStats, st)
	ps.singleDue = append(ps.singleDue, due)
}

// packSingles turns the single swaps into groups of as many as fit in one
// nested transaction, with no partition twice in a group (a partition's
// swaps go in groups of their own, which SwapGroups allows when neither
// writes its state), each group due when its earliest swap is.
func (ps *pendingSwaps) packSingles() {
	type bin struct {
		swaps []compaction.Swap
		parts map[metadata.TopicPartition]bool
		st    Stats
		due   time.Time
	}
	var bins []*bin
	for i, s := range ps.singles {
		tp := metadata.TopicPartition{Topic: s.Topic, Partition: s.Partition}
		var in *bin
		for _, b := range bins {
			if !b.parts[tp] && compaction.GroupCost(append(slices.Clip(b.swaps), s)) <= compaction.NestedGroupOps {
				in = b
				break
			}
		}
		if in == nil {
			in = &bin{parts: map[metadata.TopicPartition]bool{}, due: ps.singleDue[i]}
			bins = append(bins, in)
		}
		in.swaps = append(in.swaps, s)
		in.parts[tp] = true
		in.st.add(ps.singleStats[i])
		if ps.singleDue[i].Before(in.due) {
			in.due = ps.singleDue[i]
		}
	}
	for _, b := range bins {
		ps.groups = append(ps.groups, b.swaps)
		ps.stats = append(ps.stats, b.st)
		ps.due = append(ps.due, b.due)
	}
	ps.singles, ps.singleStats, ps.singleDue = nil, nil, nil
}

// swapPending applies the batch's pending swaps, unless compaction is
// paused or a group is due (its output then is an orphan).
func (c *Compactor) swapPending(ctx context.Context, ps *pendingSwaps) (Stats, error) {
	var st Stats
	ps.packSingles()
	if len(ps.groups) == 0 {
		return st, nil
	}
	jobs := 0
	for _, g := range ps.groups {
		jobs += len(g)
	}
	if paused, err := c.isPaused(ctx); err != nil || paused {
		if err == nil {
			err = ErrPaused
		}
		return st, fmt.Errorf("compact %d partitions: before the swap: %w", jobs, err)
	}
	errs := make([]error, len(ps.groups))
	late := make([]bool, len(ps.groups)) // counted as errors already
	var groups [][]compaction.Swap
	var at []int
	first := ps.due[0]
	for g, swaps := range ps.groups {
		if c.beforeSwap != nil {
			for _, s := range swaps {
				if errs[g] = c.beforeSwap(s); errs[g] != nil {
					break
				}
			}
		}
		if errs[g] == nil && time.Until(ps.due[g]) < time.Second {
			late[g] = true
			c.runs.Add(ctx, int64(len(swaps)), metric.WithAttributes(attribute.String("result", "error")))
			errs[g] = fmt.Errorf("compact %d partitions: the swap is due %v after the PUT at the latest (max_swap_delay); giving up, the output is left to garbage collection", len(swaps), c.cfg.MaxSwapDelay)
		}
		if errs[g] == nil {
			groups = append(groups, swaps)
			at = append(at, g)
			if ps.due[g].Before(first) {
				first = ps.due[g]
			}
		}
	}
	if len(groups) > 0 {
		sctx, cancel := context.WithDeadline(ctx, first)
		defer cancel()
		// A partition with two jobs has a swap in two groups: if either
		// writes the partition state they go to etcd one after the other.
		for _, round := range disjointRounds(groups) {
			var rg [][]compaction.Swap
			for _, i := range round {
				rg = append(rg, groups[i])
			}
			for k, err := range c.state.SwapGroups(sctx, rg) {
				errs[at[round[k]]] = err
			}
		}
	}
	var out []error
	conflicts := 0
	for g, err := range errs {
		swaps := ps.groups[g]
		switch {
		case err == nil:
			st.add(ps.stats[g])
			c.runs.Add(ctx, int64(len(swaps)), metric.WithAttributes(attribute.String("result", "ok")))
		case errors.Is(err, compaction.ErrSwapConflict):
			st.Conflicts += len(swaps)
			conflicts += len(swaps)
			c.runs.Add(ctx, int64(len(swaps)), metric.WithAttributes(attribute.String("result", "conflict")))
		default:
			if !late[g] {
				c.runs.Add(ctx, int64(len(swaps)), metric.WithAttributes(attribute.String("result", "error")))
			}
			out = append(out, err)
		}
	}
	if conflicts > 0 {
		c.log.Info("compaction lost a race; its output is left to garbage collection", "partitions", conflicts)
	}
	c.log.Debug("compacted groups", "groups", len(ps.groups), "partitions", jobs, "conflicts", conflicts)
	return st, errors.Join(out...)
}

// disjointRounds splits groups (by index) into rounds in which no
// partition has two swaps unless neither writes its state
// (compaction.SwapGroups), each group in the first round it fits.
func disjointRounds(groups [][]compaction.Swap) [][]int {
	var rounds [][]int
	var in []map[metadata.TopicPartition]bool // partition → a swap writes its state
	for g, swaps := range groups {
		r := 0
		for ; r < len(rounds); r++ {
			if !slices.ContainsFunc(swaps, func(s compaction.Swap) bool {
				writes, ok := in[r][metadata.TopicPartition{Topic: s.Topic, Partition: s.Partition}]
				return ok && (writes || s.WritesState())
			}) {
				break
			}
		}
		if r == len(rounds) {
			rounds = append(rounds, nil)
			in = append(in, map[metadata.TopicPartition]bool{})
		}
		rounds[r] = append(rounds[r], g)
		for _, s := range swaps {
			tp := metadata.TopicPartition{Topic: s.Topic, Partition: s.Partition}
			in[r][tp] = in[r][tp] || s.WritesState()
		}
	}
	return rounds
}
