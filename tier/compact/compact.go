package compact

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/varve-io/varve/internal/defaults"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// Defaults of Config.
const (
	DefaultInterval    = 30 * time.Second
	DefaultTargetBytes = 128 << 20
	DefaultMinEntries  = 16
	// DefaultBlockBytes is the uncompressed size of the blocks compaction
	// writes (about 2 MiB stored for JSON): one ranged GET per consumer
	// read stays small while an index entry covers thousands of records.
	DefaultBlockBytes = 8 << 20
	// DefaultMergeObjects small objects of one level in a row merge into
	// one of the next level.
	DefaultMergeObjects = 4
	DefaultClaimTTL     = 15 * time.Second
	// DefaultRecordMaxAge is Config.RecordMaxAge's default.
	DefaultRecordMaxAge = 5 * time.Minute
	// DefaultWorkers partitions are compacted at once.
	DefaultWorkers = 4
	// DefaultClaimBatch partitions are claimed per etcd transaction.
	DefaultClaimBatch = compaction.MaxClaimBatch
	// DefaultObjectCacheBytes bounds the objects a pass reads whole and
	// shares among its jobs.
	DefaultObjectCacheBytes = 256 << 20
	// DefaultGroupBytes is Config.GroupBytes' default.
	DefaultGroupBytes = 4 << 20
	// DefaultMaxSwapDelay is half the GC's default grace period.
	DefaultMaxSwapDelay = 7*time.Minute + 30*time.Second
	// MaxLevel is the last level: its objects are never merged again.
	// Levels are tiers: MergeObjects small objects of level L merge into
	// one of level L+1, so a partition's small objects number about
	// (MergeObjects-1) per level, logarithmic in its level-1 objects
	// (MergeObjects^15 of them before level 16).
	MaxLevel = 16
)

// Config configures a Compactor. Zero fields take the defaults.
type Config struct {
	// NodeID names the compactor in claims and object keys.
	NodeID string
	// Interval is the time between passes over every partition.
	Interval time.Duration
	// TargetBytes is the stored size compaction aims for per object.
	TargetBytes int64
	// MinEntries is how many level-0 entries in a row make a partition
	// worth compacting (for a compacted topic: how many not yet compacted).
	MinEntries int
	// BlockBytes is the uncompressed size of an output block.
	BlockBytes int
	// MergeObjects is how many small objects of one level in a row merge
	// into one of the next level.
	MergeObjects int
	// ClaimTTL is the lease of the compactor's partition claims.
	ClaimTTL time.Duration
	// Level is the zstd level of the objects written.
	Level segment.Level
	// MaxSwapDelay bounds the time from a job's PUT to its swap. The
	// garbage collector deletes an unreferenced object once it is older
	// than its grace period; a swap later than that could make the index
	// point at a deleted object, so a job that is late gives up (its
	// output is an orphan). Keep it well below the GC grace (half of it).
	MaxSwapDelay time.Duration
	// RecordMaxAge bounds how long a block committed through the
	// sequencer stays only in its batch record: a partition holding a
	// record entry first seen longer ago than this is compacted even with
	// fewer than MinEntries level-0 entries, so one idle partition does
	// not keep every record from being pruned (docs/compaction.md).
	RecordMaxAge time.Duration
	// Workers is how many partitions a pass compacts at once: a job is
	// mostly waiting on S3 and etcd round trips, and a pass over 1,000
	// partitions one after the other would take longer than the interval.
	Workers int
	// Rewrites is how many jobs decode and encode blocks at once (the CPU
	// of a pass), at most Workers; default half the cores, at least one,
	// so that a pass leaves cores to ingest and fetch on a shared node.
	Rewrites int
	// ClaimBatch is how many partitions are claimed (and released) per
	// etcd transaction, at most compaction.MaxClaimBatch.
	ClaimBatch int
	// ObjectCacheBytes bounds the objects (level-0 flushes, groups) a pass
	// reads whole, once, for all its partitions whose blocks they hold
	// (objects.go).
	ObjectCacheBytes int64
	// GroupBytes: jobs that read fewer stored bytes than this are
	// compacted together with other partitions' small jobs, into one
	// object and swapped in shared etcd transactions (group.go).
	// Negative: every job on its own.
	GroupBytes int64
	// Now is the clock (tests move it); it decides tombstone expiry and
	// the minimum compaction lag.
	Now func() time.Time
	// Compactors, when set, counts the compactors running in the cluster
	// (the node's: its live nodes with the compact role). A compactor
	// keeps its claims from pass to pass, up to its share of the
	// partitions; nil: it keeps them all.
	Compactors func(ctx context.Context) (int, error)
}

func (c *Config) fill() {
	defaults.Positive(&c.Interval, DefaultInterval)
	defaults.Positive(&c.TargetBytes, DefaultTargetBytes)
	defaults.Positive(&c.MinEntries, DefaultMinEntries)
	c.MinEntries = max(c.MinEntries, 2) // one entry alone merges nothing
	defaults.Positive(&c.BlockBytes, DefaultBlockBytes)
	c.BlockBytes = min(c.BlockBytes, segment.MaxBlockRawBytes/2)
	if c.MergeObjects <= 1 {
		c.MergeObjects = DefaultMergeObjects
	}
	defaults.Positive(&c.ClaimTTL, DefaultClaimTTL)
	defaults.Positive(&c.MaxSwapDelay, DefaultMaxSwapDelay)
	defaults.Positive(&c.RecordMaxAge, DefaultRecordMaxAge)
	defaults.Positive(&c.Workers, DefaultWorkers)
	defaults.Positive(&c.Rewrites, max(1, runtime.GOMAXPROCS(0)/2))
	c.Rewrites = min(c.Rewrites, c.Workers)
	defaults.Positive(&c.ClaimBatch, DefaultClaimBatch)
	c.ClaimBatch = min(c.ClaimBatch, compaction.MaxClaimBatch)
	defaults.Positive(&c.ObjectCacheBytes, DefaultObjectCacheBytes)
	if c.GroupBytes == 0 {
		c.GroupBytes = DefaultGroupBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Stats says what a pass (or one partition's compaction) did.
type Stats struct {
	// Jobs counts swaps that applied; Conflicts those that lost to a
	// concurrent change (their output is an orphan for the GC).
	Jobs, Conflicts int
	// EntriesIn and EntriesOut count the index entries replaced and
	// written by the applied swaps.
	EntriesIn, EntriesOut int
	// BytesRead and BytesWritten count stored bytes.
	BytesRead, BytesWritten int64
	// RecordsIn and RecordsOut count records read and written (they differ
	// only for compacted topics).
	RecordsIn, RecordsOut int64
}

func (s *Stats) add(o Stats) {
	s.Jobs += o.Jobs
	s.Conflicts += o.Conflicts
	s.EntriesIn += o.EntriesIn
	s.EntriesOut += o.EntriesOut
	s.BytesRead += o.BytesRead
	s.BytesWritten += o.BytesWritten
	s.RecordsIn += o.RecordsIn
	s.RecordsOut += o.RecordsOut
}

// ErrPaused: compaction is paused cluster-wide; the job stopped before its
// swap.
var ErrPaused = errors.New("compaction is paused")

// Compactor compacts every partition it finds in its index cache. It is
// safe for concurrent use, and several Compactors (on several nodes) may
// run against one cluster.
type Compactor struct {
	cfg   Config
	store tier.Store
	meta  *metadata.Client
	state *compaction.Client // swaps, claims and the pause switch
	index *metadata.Cache
	log   *slog.Logger

	claimMu sync.Mutex
	claimer *compaction.Claimer
	// held are the partitions claimer's lease holds (kept from pass to
	// pass: a partition with work every pass is claimed once); busy those
	// a batch of a pass works on now (a concurrent CompactPartition skips
	// them).
	held, busy map[metadata.TopicPartition]bool

	paused         atomic.Bool
	backlogBytes   atomic.Int64
	backlogEntries atomic.Int64

	bytes metric.Int64Counter
	runs  metric.Int64Counter

	// seenMu guards seen: when this compactor first saw each sequencer
	// record (RecordMaxAge); batches no pass sees any more are forgotten.
	seenMu sync.Mutex
	seen   map[uint64]time.Time

	// beforeSwap, when set (tests), runs after the output is stored and
	// before the swap; an error abandons the job there, like a crash.
	beforeSwap func(compaction.Swap) error

	wake chan struct{}
	// rewrites holds a token per rewrite running (Config.Rewrites).
	rewrites chan struct{}
}

// New makes a Compactor. index must be a Cache with entries.
func New(cfg Config, store tier.Store, meta *metadata.Client, index *metadata.Cache, log *slog.Logger, mp metric.MeterProvider) (*Compactor, error) {
	cfg.fill()
	if cfg.NodeID == "" {
		return nil, errors.New("compactor: NodeID is empty")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	c := &Compactor{cfg: cfg, seen: map[uint64]time.Time{}, busy: map[metadata.TopicPartition]bool{}, store: store, meta: meta, state: compaction.New(meta), index: index, log: log.With("role", "compact"), wake: make(chan struct{}, 1), rewrites: make(chan struct{}, cfg.Rewrites)}
	m := mp.Meter("github.com/varve-io/varve/tier/compact")
	c.bytes, _ = m.Int64Counter("varve.compaction.bytes", metric.WithDescription("Stored bytes compaction read (io=read) and wrote (io=write)."))
	c.runs, _ = m.Int64Counter("varve.compaction.runs", metric.WithDescription("Compaction jobs by result: ok (swapped), conflict (lost to a concurrent change), error."))
	_, _ = m.Int64ObservableGauge("varve.compaction.backlog.bytes", metric.WithDescription("Stored bytes of level-0 (not yet compacted) blocks, as of the last pass."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(c.backlogBytes.Load())
			return nil
		}))
	_, _ = m.Int64ObservableGauge("varve.compaction.backlog.entries", metric.WithDescription("Level-0 (not yet compacted) index entries, as of the last pass."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(c.backlogEntries.Load())
			return nil
		}))
	_, _ = m.Int64ObservableGauge("varve.compaction.paused", metric.WithDescription("1 while compaction is paused cluster-wide."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			v := int64(0)
			if c.paused.Load() {
				v = 1
			}
			o.Observe(v)
			return nil
		}))
	return c, nil
}

// Run compacts every Interval (and when Trigger is called) until ctx ends.
func (c *Compactor) Run(ctx context.Context) {
	defer c.closeClaimer()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := c.state.WatchPaused(wctx, func(p bool) {
		if c.paused.Swap(p) != p {
			c.log.Info("compaction pause changed", "paused", p)
			if !p {
				c.Trigger()
			}
		}
	}); err != nil {
		c.log.Warn("watch compaction pause", "err", err)
	}
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := c.RunOnce(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("compaction pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
	}
}

// Trigger asks Run for a pass now.
func (c *Compactor) Trigger() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Backlog returns the level-0 entries and their stored bytes as of the
// last pass.
func (c *Compactor) Backlog() (entries, bytes int64) {
	return c.backlogEntries.Load(), c.backlogBytes.Load()
}

func (c *Compactor) isPaused(ctx context.Context) (bool, error) {
	p, err := c.state.Paused(ctx)
	if err != nil {
		return false, err
	}
	c.paused.Store(p)
	return p, nil
}

// RunOnce makes one pass: it finds the partitions with work in the
// watched index, claims them ClaimBatch at a time (one etcd transaction
// per batch; partitions another compactor holds are skipped), brings the
// watched index up to date once per batch, and compacts the claimed
// partitions on Workers goroutines, small jobs of many partitions in
// groups (group.go). The objects the pass reads for several partitions
// are read whole, once (ObjectCacheBytes).
func (c *Compactor) RunOnce(ctx context.Context) (Stats, error) {
	var backlogEntries, backlogBytes int64
	now := c.cfg.Now()
	live := map[uint64]bool{}
	defer c.forgetRecords(live)
	var todo []metadata.TopicPartition
	for _, tp := range c.index.Partitions() {
		if ctx.Err() != nil {
			return Stats{}, ctx.Err()
		}
		entries, _, _ := c.index.Snapshot(tp.Topic, tp.Partition)
		for _, e := range entries {
			if e.Level == 0 {
				backlogEntries++
				backlogBytes += e.Len
			}
			if e.Record != 0 && !live[e.Record] {
				live[e.Record] = true
				c.sawRecord(e.Record, now)
			}
		}
		t, ok := c.index.Topic(tp.Topic)
		if !ok || !c.hasWork(t, entries) {
			continue
		}
		todo = append(todo, tp)
	}
	total, err := c.compactMany(ctx, todo)
	c.trimClaims(ctx, todo)
	if len(todo) > 0 && ctx.Err() == nil && c.index.CatchUp(ctx) == nil {
		// What is left after the pass, its own swaps included.
		backlogEntries, backlogBytes = c.level0()
	} else {
		// The backlog as seen before this pass, less what it compacted.
		backlogEntries = max(backlogEntries-int64(total.EntriesIn), 0)
		backlogBytes = max(backlogBytes-total.BytesRead, 0)
	}
	c.backlogEntries.Store(backlogEntries)
	c.backlogBytes.Store(backlogBytes)
	return total, err
}

// level0 counts the level-0 entries and their bytes in the watched index.
func (c *Compactor) level0() (entries, bytes int64) {
	for _, tp := range c.index.Partitions() {
		es, _, _ := c.index.Snapshot(tp.Topic, tp.Partition)
		for _, e := range es {
			if e.Level == 0 {
				entries++
				bytes += e.Len
			}
		}
	}
	return entries, bytes
}

// compactMany compacts tps: claims in batches, the claimed partitions on
// the worker pool. Swap conflicts and a pause are not errors.
func (c *Compactor) compactMany(ctx context.Context, tps []metadata.TopicPartition) (Stats, error) {
	var (
		mu    sync.Mutex
		total Stats
		errs  []error
	)
	note := func(st Stats, err error) {
		mu.Lock()
		defer mu.Unlock()
		total.add(st)
		if err != nil && !errors.Is(err, ErrPaused) && !errors.Is(err, compaction.ErrSwapConflict) {
			errs = append(errs, err)
		}
	}
	if len(tps) == 0 {
		return total, nil
	}
	if p, err := c.isPaused(ctx); err != nil || p {
		return total, err
	}
	cl, err := c.getClaimer(ctx)
	if err != nil {
		return total, err
	}
	ctx = context.WithValue(ctx, passObjectsKey{}, newPassObjects(c.store, c.cfg.ObjectCacheBytes))
	for len(tps) > 0 && ctx.Err() == nil && !c.paused.Load() {
		batch := tps[:min(len(tps), passBatch)]
		tps = tps[len(batch):]
		claimed, toClaim := c.takeHeld(cl, batch)
		for len(toClaim) > 0 {
			part := toClaim[:min(len(toClaim), c.cfg.ClaimBatch)]
			toClaim = toClaim[len(part):]
			ok, _, err := cl.ClaimMany(ctx, part)
			if err != nil {
				note(Stats{}, err)
				break
			}
			claimed = append(claimed, c.hold(cl, part, ok)...)
		}
		// The watched index now holds every swap made under a claim
		// released before these were taken: plan from it. If it cannot
		// catch up (a progress request etcd dropped, a slow watch), plan
		// from reads of etcd instead, each of every sequencer record.
		fresh := false
		if err := c.index.CatchUp(ctx); err != nil {
			c.log.Info("compaction plans from etcd: the watched index did not catch up", "partitions", len(claimed), "err", err)
			fresh = true
		}
		pend := &pendingSwaps{}
		tasks, err := c.planBatch(ctx, claimed, fresh, pend)
		if err != nil {
			note(Stats{}, err)
		}
		sem := make(chan struct{}, c.cfg.Workers)
		var wg sync.WaitGroup
		for _, task := range tasks {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				note(task())
			})
		}
		wg.Wait()
		note(c.swapPending(ctx, pend))
		c.done(claimed)
	}
	return total, errors.Join(errs...)
}

// takeHeld splits tps into those cl holds already (marked busy: the
// caller works on them) and those it has to claim; a partition another
// batch of this compactor works on is in neither.
func (c *Compactor) takeHeld(cl *compaction.Claimer, tps []metadata.TopicPartition) (held, toClaim []metadata.TopicPartition) {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	for _, tp := range tps {
		switch {
		case c.busy[tp]:
		case c.claimer == cl && c.held[tp]:
			c.busy[tp] = true
			held = append(held, tp)
		default:
			toClaim = append(toClaim, tp)
		}
	}
	return held, toClaim
}

// hold notes the claims ClaimMany took (ok) of tps as held and busy and
// returns them.
func (c *Compactor) hold(cl *compaction.Claimer, tps []metadata.TopicPartition, ok []bool) []metadata.TopicPartition {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	var out []metadata.TopicPartition
	for i, tp := range tps {
		if !ok[i] {
			continue
		}
		if c.claimer == cl {
			c.held[tp] = true
		}
		c.busy[tp] = true
		out = append(out, tp)
	}
	return out
}

// done ends a batch's work on tps; their claims stay held.
func (c *Compactor) done(tps []metadata.TopicPartition) {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	for _, tp := range tps {
		delete(c.busy, tp)
	}
}

// trimClaims gives back the claims the compactor should not keep after a
// pass: those of partitions gone from the watched index (a deleted topic),
// and, when Config.Compactors counts others, those over its share of the
// partitions (the ones without work in this pass, busy, first), so that
// a compactor that starts finds partitions to claim. Claims kept cost no
// transaction in the next pass; a claim the lease loses goes with it.
func (c *Compactor) trimClaims(ctx context.Context, busy []metadata.TopicPartition) {
	c.claimMu.Lock()
	cl, n := c.claimer, len(c.held)
	c.claimMu.Unlock()
	if cl == nil || n == 0 {
		return
	}
	all := c.index.Partitions()
	share := len(all)
	if c.cfg.Compactors != nil {
		if k, err := c.cfg.Compactors(ctx); err != nil {
			c.log.Warn("count compactors", "err", err)
		} else if k > 1 {
			share = (len(all) + k - 1) / k
		}
	}
	exists := make(map[metadata.TopicPartition]bool, len(all))
	for _, tp := range all {
		exists[tp] = true
	}
	worked := make(map[metadata.TopicPartition]bool, len(busy))
	for _, tp := range busy {
		worked[tp] = true
	}
	var drop, keep []metadata.TopicPartition
	c.claimMu.Lock()
	for tp := range c.held {
		switch {
		case c.busy[tp]:
		case !exists[tp]:
			drop = append(drop, tp)
		default:
			keep = append(keep, tp)
		}
	}
	// Idle ones first, then in partition order.
	slices.SortFunc(keep, func(a, b metadata.TopicPartition) int {
		if worked[a] != worked[b] {
			if worked[a] {
				return 1
			}
			return -1
		}
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	if over := len(keep) - share; over > 0 {
		drop = append(drop, keep[:over]...)
	}
	for _, tp := range drop {
		delete(c.held, tp)
	}
	c.claimMu.Unlock()
	for len(drop) > 0 {
		part := drop[:min(len(drop), c.cfg.ClaimBatch)]
		drop = drop[len(part):]
		if !c.release(ctx, cl, part) {
			// Still ours: held, so that a later pass compacts them (a
			// claim this compactor holds but forgot would stop every
			// compactor from taking the partition while its lease lives).
			c.claimMu.Lock()
			if c.claimer == cl {
				for _, tp := range part {
					c.held[tp] = true
				}
			}
			c.claimMu.Unlock()
		}
	}
}

// release gives back claims, even when ctx has ended; false if etcd did
// not answer.
func (c *Compactor) release(ctx context.Context, cl *compaction.Claimer, tps []metadata.TopicPartition) bool {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := cl.ReleaseMany(rctx, tps); err != nil {
		c.log.Warn("release compaction claims", "partitions", len(tps), "err", err)
		return false
	}
	return true
}

// hasWork is the cheap check on the cached index before claiming.
func (c *Compactor) hasWork(t metadata.Topic, entries []metadata.IndexEntry) bool {
	if t.CleanupPolicy == metadata.CleanupCompact {
		_, ok := c.planKeys(t, entries)
		return ok
	}
	return len(c.planDense(entries)) > 0
}

func (c *Compactor) getClaimer(ctx context.Context) (*compaction.Claimer, error) {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	if c.claimer != nil && !c.claimer.Lost() {
		return c.claimer, nil
	}
	cl, err := c.state.NewClaimer(ctx, c.cfg.NodeID, c.cfg.ClaimTTL)
	if err != nil {
		return nil, err
	}
	c.claimer = cl
	// A new lease holds nothing: the old one's claims expire with it.
	c.held = map[metadata.TopicPartition]bool{}
	return cl, nil
}

func (c *Compactor) closeClaimer() {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	if c.claimer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.claimer.Close(ctx)
		c.claimer, c.held = nil, nil
	}
}

// Close releases the compactor's claims (Run does it when it returns).
func (c *Compactor) Close() { c.closeClaimer() }

// CompactPartition compacts one partition under its claim, planned from
// the watched index brought up to date after the claim. It returns
// without doing anything when another compactor holds the claim.
func (c *Compactor) CompactPartition(ctx context.Context, topic string, p int32) (Stats, error) {
	return c.compactMany(ctx, []metadata.TopicPartition{{Topic: topic, Partition: p}})
}

// sawRecord notes when this compactor first saw sequencer record batch.
func (c *Compactor) sawRecord(batch uint64, now time.Time) {
	c.seenMu.Lock()
	if _, ok := c.seen[batch]; !ok {
		c.seen[batch] = now
	}
	c.seenMu.Unlock()
}

// forgetRecords drops the first-seen times of records a pass no longer
// saw (compacted, pruned).
func (c *Compactor) forgetRecords(live map[uint64]bool) {
	c.seenMu.Lock()
	for b := range c.seen {
		if !live[b] {
			delete(c.seen, b)
		}
	}
	c.seenMu.Unlock()
}

// coldRecord reports whether e is a record entry whose record this
// compactor first saw at least RecordMaxAge ago (or never: a fresh read
// found it first).
func (c *Compactor) coldRecord(e metadata.IndexEntry) bool {
	if e.Record == 0 {
		return false
	}
	c.seenMu.Lock()
	at, ok := c.seen[e.Record]
	c.seenMu.Unlock()
	return ok && c.cfg.Now().Sub(at) >= c.cfg.RecordMaxAge
}

// job is one swap: a contiguous run of entries rewritten at level.
type job struct {
	old   []metadata.IndexEntry
	level int
	// seen is the watched index's view the job was planned from (nil:
	// planned from etcd reads, or one of several jobs of a partition with
	// a partition state, which may swap in any order: the first would move
	// the others' view; planBatch): its swap is first tried fenced on it,
	// without a read (compaction.Swap.Seen).
	seen *metadata.Seen
}

// swap returns the swap of the job's entries by entries.
func (j job) swap(topic string, p int32, entries []metadata.IndexEntry) compaction.Swap {
	return compaction.Swap{Topic: topic, Partition: p, Old: j.old, New: entries, Seen: j.seen}
}

// planDense groups a partition's entries into jobs: runs of level-0
// entries (at least MinEntries) into level-1 objects of about TargetBytes,
// and runs of small objects of level L ≥ 1 (at least MergeObjects) into
// level L+1.
func (c *Compactor) planDense(entries []metadata.IndexEntry) []job {
	var jobs []job
	for i := 0; i < len(entries); {
		lvl := entries[i].Level
		j := i
		for j < len(entries) && entries[j].Level == lvl {
			j++
		}
		run := entries[i:j]
		i = j
		switch lvl {
		case 0:
			// Sequencer record entries are compacted like level-0 keys;
			// a run holding a cold one is compacted however short.
			minCount, minLen := c.cfg.MinEntries, 2
			if slices.ContainsFunc(run, c.coldRecord) {
				minCount, minLen = 1, 1
			}
			jobs = append(jobs, c.chunk(run, 1, minCount, minLen, func(e []metadata.IndexEntry) int { return len(e) })...)
		default:
			if lvl >= MaxLevel {
				continue
			}
			// Only small objects merge; a run of them between big ones.
			for _, small := range c.smallRuns(run) {
				jobs = append(jobs, c.chunk(small, lvl+1, c.cfg.MergeObjects, 2, countObjects)...)
			}
		}
	}
	return jobs
}

// chunk cuts a run into jobs of at most TargetBytes stored (at least one
// entry each). A job needs at least two entries, and the run's last job,
// smaller than the target, needs minCount (as counted by count) or half
// the target: otherwise it waits for more data.
func (c *Compactor) chunk(run []metadata.IndexEntry, level, minCount, minLen int, count func([]metadata.IndexEntry) int) []job {
	var jobs []job
	for len(run) > 0 {
		n, size := 0, int64(0)
		for n < len(run) && (n == 0 || size+run[n].Len <= c.cfg.TargetBytes) {
			size += run[n].Len
			n++
		}
		full := n < len(run) // cut by the target
		if n >= minLen && (full || count(run[:n]) >= minCount || size >= c.cfg.TargetBytes/2) {
			jobs = append(jobs, job{old: run[:n], level: level})
		}
		run = run[n:]
	}
	return jobs
}

// smallRuns returns the runs of consecutive entries whose objects are
// smaller than half the target.
func (c *Compactor) smallRuns(run []metadata.IndexEntry) [][]metadata.IndexEntry {
	var out [][]metadata.IndexEntry
	start := -1
	for i := 0; i < len(run); {
		j := i
		var size int64
		for j < len(run) && run[j].Object == run[i].Object {
			size += run[j].Len
			j++
		}
		if size < c.cfg.TargetBytes/2 {
			if start < 0 {
				start = i
			}
		} else if start >= 0 {
			out = append(out, run[start:i])
			start = -1
		}
		i = j
	}
	if start >= 0 {
		out = append(out, run[start:])
	}
	return out
}

func countObjects(es []metadata.IndexEntry) int {
	n := 0
	for i := range es {
		if i == 0 || es[i].Object != es[i-1].Object {
			n++
		}
	}
	return n
}

// filter decides, record by record, what a job keeps; nil keeps all.
type filter func(r *segment.Record, off int64) bool

// runJob rewrites old (contiguous entries) into one object at level and
// swaps the index (with pend, planned from the watched index: with the
// batch's groups, storePending). keep filters records (compacted topics).
// When nothing is kept it returns without writing: the caller carries the
// range on.
func (c *Compactor) runJob(ctx context.Context, t metadata.Topic, p int32, j job, keep filter, pend *pendingSwaps) (Stats, error) {
	out, st, err := c.rewrite(ctx, t.Name, p, j.old, j.level, keep)
	if err != nil || len(out.entries) == 0 {
		return st, err
	}
	if pend != nil {
		return c.storePending(ctx, t.Name, p, j, out, st, pend)
	}
	return c.store1(ctx, t.Name, p, j, out, st)
}

// output is a rewritten run: the object and its entries (Object unset).
type output struct {
	obj     []byte
	entries []metadata.IndexEntry
	level   int
}

// rewrite reads old and writes every kept record into a new object of
// version 3 blocks. The batches of version 3 input blocks are copied as
// they are when the filter keeps all their records (always without a
// filter); the records of older blocks, and what a filter keeps of the
// other batches, are encoded into new batches.
func (c *Compactor) rewrite(ctx context.Context, topic string, p int32, old []metadata.IndexEntry, level int, keep filter) (output, Stats, error) {
	return c.rewriteTo(ctx, nil, topic, p, old, level, keep)
}

// rewriteTo is rewrite into w, shared with other partitions' rewrites
// (the output's obj is then nil and its entries' offsets are w's), or
// into an object of its own when w is nil.
func (c *Compactor) rewriteTo(ctx context.Context, w *segment.Writer, topic string, p int32, old []metadata.IndexEntry, level int, keep filter) (output, Stats, error) {
	// At most Rewrites at once: the rest of a pass (claims, GETs, PUTs,
	// swaps) waits on the network and may overlap.
	select {
	case c.rewrites <- struct{}{}:
	case <-ctx.Done():
		return output{}, Stats{}, ctx.Err()
	}
	defer func() { <-c.rewrites }()
	var st Stats
	start, end := old[0].Base, old[len(old)-1].End()
	var raw, stored int64
	for _, e := range old {
		raw += e.RawBytes
		stored += e.Len
	}
	// Blocks of BlockBytes, or bigger when needed to stay within the
	// entries one swap may write (the emitter grows them further when the
	// input turns out to hold more than its index entries say: the raw
	// bytes of a version 3 entry are its stored batches).
	blockBytes := max(int64(c.cfg.BlockBytes), raw/(compaction.MaxSwapEntries-2)+1)
	em := newEmitter(topic, p, level, int(min(blockBytes, segment.MaxBlockRawBytes/2)), start, raw, stored, compaction.MaxSwapEntries-2, c.cfg.Level, w)
	// A compacted topic's batches are decoded to be filtered; one that
	// keeps every record is copied all the same.
	filterBatch := func(e metadata.IndexEntry, sb *segment.StoredBatch) error {
		if keep == nil {
			return em.addBatch(sb, e.Base)
		}
		recs, offs, err := segment.DecodeBatches(sb.Bytes, 0)
		if err != nil {
			return err
		}
		all := true
		for i := range recs {
			offs[i] += e.Base
			if !keep(&recs[i], offs[i]) {
				all = false
				offs[i] = -1
			}
		}
		if all {
			return em.addBatch(sb, e.Base)
		}
		for i := range recs {
			if offs[i] >= 0 {
				if err := em.add(recs[i], offs[i]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err := c.read(ctx, old, false, func(e metadata.IndexEntry, b decoded) error {
		st.BytesRead += e.Len
		em.read(e.Len)
		if b.batches != nil {
			st.RecordsIn += e.Records
			for i := range b.batches {
				if err := filterBatch(e, &b.batches[i]); err != nil {
					return fmt.Errorf("%s/%d offsets %d-%d: object %s bytes %d+%d: %w", e.Topic, e.Partition, e.Base, e.End()-1, e.Object, e.Off, e.Len, err)
				}
			}
			return nil
		}
		recs, offs := b.recs, b.offs
		st.RecordsIn += int64(len(recs))
		for i := range recs {
			if keep != nil && !keep(&recs[i], offs[i]) {
				continue
			}
			if err := em.add(recs[i], offs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return output{}, st, err
	}
	if em.records == 0 {
		return output{level: level}, st, nil
	}
	obj, entries, err := em.finish(end)
	if err != nil {
		return output{}, st, fmt.Errorf("compact %s/%d [%d,%d): %w", topic, p, start, end, err)
	}
	st.RecordsOut = em.records
	return output{obj: obj, entries: entries, level: level}, st, nil
}

// store1 PUTs a job's object and swaps the index.
func (c *Compactor) store1(ctx context.Context, topic string, p int32, j job, out output, st Stats) (Stats, error) {
	// The swap must apply before the GC may collect the object.
	ctx, cancel := context.WithDeadline(ctx, time.Now().Add(c.cfg.MaxSwapDelay))
	defer cancel()
	st, err := c.put1(ctx, topic, p, j, out, st)
	if err != nil {
		return st, err
	}
	return c.swap(ctx, j.swap(topic, p, out.entries), st)
}

// put1 stores a job's output under its compacted key (PutIfAbsent) and
// names that object in out's entries.
func (c *Compactor) put1(ctx context.Context, topic string, p int32, j job, out output, st Stats) (Stats, error) {
	old := j.old
	start, end := old[0].Base, old[len(old)-1].End()
	key := tier.CompactedKey(out.level, topic, p, start, end, c.cfg.NodeID)
	if err := c.store.PutIfAbsent(ctx, key, out.obj); err != nil {
		c.runs.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "error")))
		return st, fmt.Errorf("compact %s/%d [%d,%d): put %s: %w", topic, p, start, end, key, err)
	}
	st.BytesWritten += int64(len(out.obj))
	c.bytes.Add(ctx, st.BytesRead, metric.WithAttributes(attribute.String("io", "read")))
	c.bytes.Add(ctx, st.BytesWritten, metric.WithAttributes(attribute.String("io", "write")))
	for i := range out.entries {
		out.entries[i].Object = key
	}
	return st, nil
}

// storePending stores a job's output, planned from the watched index, as
// store1 does, and adds its swap to pend (applied with the batch's
// groups, in their transaction: a partition's big job swapped alone
// before them would move the view its other jobs' swaps are fenced on,
// and each such swap cost a transaction of its own). A swap too large for
// a nested transaction is applied at once.
func (c *Compactor) storePending(ctx context.Context, topic string, p int32, j job, out output, st Stats, pend *pendingSwaps) (Stats, error) {
	if j.seen == nil || compaction.GroupCost([]compaction.Swap{j.swap(topic, p, out.entries)}) > compaction.NestedGroupOps {
		return c.store1(ctx, topic, p, j, out, st)
	}
	due := time.Now().Add(c.cfg.MaxSwapDelay)
	pctx, cancel := context.WithDeadline(ctx, due)
	defer cancel()
	st, err := c.put1(pctx, topic, p, j, out, st)
	if err != nil {
		return st, err
	}
	pst := st
	pst.BytesWritten = 0
	pst.Jobs, pst.EntriesIn, pst.EntriesOut = 1, len(j.old), len(out.entries)
	pend.addSingle(j.swap(topic, p, out.entries), pst, due)
	return Stats{BytesWritten: st.BytesWritten}, nil
}

func (c *Compactor) swap(ctx context.Context, swap compaction.Swap, st Stats) (Stats, error) {
	if paused, err := c.isPaused(ctx); err != nil || paused {
		if err == nil {
			err = ErrPaused
		}
		return st, fmt.Errorf("compact %s/%d: before the swap: %w", swap.Topic, swap.Partition, err)
	}
	if c.beforeSwap != nil {
		if err := c.beforeSwap(swap); err != nil {
			return st, err
		}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < time.Second {
		c.runs.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "error")))
		return st, fmt.Errorf("compact %s/%d: the swap is due %v after the PUT at the latest (max_swap_delay); giving up, the output is left to garbage collection", swap.Topic, swap.Partition, c.cfg.MaxSwapDelay)
	}
	if err := c.state.SwapIndex(ctx, swap); err != nil {
		result := "error"
		if errors.Is(err, compaction.ErrSwapConflict) {
			result = "conflict"
			st.Conflicts++
			c.log.Info("compaction lost a race; its output is left to garbage collection", "topic", swap.Topic, "partition", swap.Partition, "err", err)
		}
		c.runs.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
		return st, err
	}
	c.runs.Add(ctx, 1, metric.WithAttributes(attribute.String("result", "ok")))
	st.Jobs++
	st.EntriesIn += len(swap.Old)
	st.EntriesOut += len(swap.New)
	c.log.Debug("compacted", "topic", swap.Topic, "partition", swap.Partition,
		"from", swap.Old[0].Base, "entries_in", len(swap.Old), "entries_out", len(swap.New), "bytes_in", st.BytesRead, "bytes_out", st.BytesWritten)
	return st, nil
}

// maxGetBytes bounds one coalesced ranged GET, and readAhead the GETs in
// flight or waiting: at most readAhead × maxGetBytes of stored bytes.
const (
	maxGetBytes = 8 << 20
	readAhead   = 8
)

// decoded is one block as read gives it: the stored batches of a version
// 3 block (checked, not decompressed), or records and their offsets.
type decoded struct {
	batches []segment.StoredBatch
	recs    []segment.Record
	offs    []int64
}

// read reads old's blocks in order and calls fn with each: a version 3
// block as its batches unless records is set, any other block (or every
// block with records) decoded into records and their offsets. Adjacent
// blocks of one object are fetched with one ranged GET; the next GET runs
// while fn works on the current one.
func (c *Compactor) read(ctx context.Context, old []metadata.IndexEntry, records bool, fn func(metadata.IndexEntry, decoded) error) error {
	type group struct{ es []metadata.IndexEntry }
	var groups []group
	for i := 0; i < len(old); {
		j := i + 1
		size := old[i].Len
		for j < len(old) && old[j].Object == old[i].Object && old[j].Off == old[j-1].Off+old[j-1].Len && size+old[j].Len <= maxGetBytes {
			size += old[j].Len
			j++
		}
		groups = append(groups, group{old[i:j]})
		i = j
	}
	type fetched struct {
		data []byte
		err  error
	}
	objs, _ := ctx.Value(passObjectsKey{}).(*passObjects)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]chan fetched, len(groups))
	for i := range results {
		results[i] = make(chan fetched, 1)
	}
	// Up to readAhead GETs run at once (level-0 blocks are small and each
	// in its own object: latency, not bandwidth, bounds a serial reader);
	// a group is only fetched once fewer than readAhead wait unconsumed.
	sem := make(chan struct{}, readAhead)
	var next atomic.Int64
	for range min(readAhead, len(groups)) {
		go func() {
			for {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				i := int(next.Add(1) - 1)
				if i >= len(groups) {
					return
				}
				g := groups[i]
				first, last := g.es[0], g.es[len(g.es)-1]
				n := last.Off + last.Len - first.Off
				b, shared, err := objs.block(ctx, first.Object, first.Off, n)
				if !shared {
					b, err = c.store.GetRange(ctx, first.Object, first.Off, n)
				}
				results[i] <- fetched{b, err}
			}
		}()
	}
	for i, g := range groups {
		var f fetched
		select {
		case f = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		if f.err != nil {
			return fmt.Errorf("read %s at %d: %w", g.es[0].Object, g.es[0].Off, f.err)
		}
		for _, e := range g.es {
			at := e.Off - g.es[0].Off
			blk := f.data[at : at+e.Len]
			if !records {
				batches, ok, err := segment.StoredBatches(blk)
				if err == nil && ok {
					err = checkBatches(e, batches)
				}
				if err != nil {
					return fmt.Errorf("%s/%d offsets %d-%d: object %s bytes %d+%d: %w", e.Topic, e.Partition, e.Base, e.End()-1, e.Object, e.Off, e.Len, err)
				}
				if ok {
					if err := fn(e, decoded{batches: batches}); err != nil {
						return err
					}
					continue
				}
			}
			recs, err := segment.DecodeBlock(blk)
			if err == nil && int64(len(recs)) != e.Records {
				err = fmt.Errorf("%w: block has %d records, the index says %d", segment.ErrCorrupt, len(recs), e.Records)
			}
			var offs []int64
			if err == nil {
				offs = segment.Offsets(e.Base, recs)
				if offs[len(offs)-1] >= e.End() {
					err = fmt.Errorf("%w: block's records reach offset %d, the index entry ends at %d", segment.ErrCorrupt, offs[len(offs)-1], e.End())
				}
			}
			if err != nil {
				return fmt.Errorf("%s/%d offsets %d-%d: object %s bytes %d+%d: %w", e.Topic, e.Partition, e.Base, e.End()-1, e.Object, e.Off, e.Len, err)
			}
			if err := fn(e, decoded{recs: recs, offs: offs}); err != nil {
				return err
			}
		}
		<-sem
	}
	return nil
}

// checkBatches checks a version 3 block's batches against its index
// entry: the record count, and that their offsets end within the entry.
func checkBatches(e metadata.IndexEntry, batches []segment.StoredBatch) error {
	n := int64(0)
	for i := range batches {
		n += int64(batches[i].Records)
	}
	if n != e.Records {
		return fmt.Errorf("%w: block has %d records, the index says %d", segment.ErrCorrupt, n, e.Records)
	}
	last := batches[len(batches)-1]
	if span := e.End() - e.Base; last.Offset >= span || int64(last.LastOffsetDelta) >= span-last.Offset {
		return fmt.Errorf("%w: block's batches reach offset %d, the index entry ends at %d", segment.ErrCorrupt, e.Base+last.Offset+int64(last.LastOffsetDelta), e.End())
	}
	return nil
}
