package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/varve-io/varve/internal/defaults"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
	"github.com/varve-io/varve/metadata/retention"
	"github.com/varve-io/varve/tier"
)

// Defaults of Config.
const (
	DefaultRetentionInterval = time.Minute
	DefaultGCInterval        = 5 * time.Minute
	// DefaultGrace must exceed the longest read of a block and the longest
	// window from a segment PUT to its commit, retries included (ingest:
	// PutTimeout 30 s + up to 4 in-flight commits of at most 60 s each).
	DefaultGrace           = 15 * time.Minute
	DefaultHistoryInterval = 5 * time.Minute
	DefaultHistoryRetain   = 10 * time.Minute
	// DefaultSuffix marks segment objects (ingest and compaction write
	// them); other keys in the store are never touched.
	DefaultSuffix = tier.SegmentSuffix
	// ElectionName is the etcd election the janitors of a cluster share.
	ElectionName = "janitor"
)

// Config configures a Janitor. Zero fields take the defaults.
type Config struct {
	// NodeID identifies this janitor in the election.
	NodeID string
	// RetentionInterval is how often retention is enforced.
	RetentionInterval time.Duration
	// GCInterval is how often the bucket is listed for orphans.
	GCInterval time.Duration
	// Grace is how old an object must be, and how long it must have been
	// seen unreferenced, before it is deleted.
	Grace time.Duration
	// HistoryInterval is how often etcd's revision history is compacted;
	// a negative value disables history compaction (an etcd cluster that
	// compacts itself with --auto-compaction-*).
	HistoryInterval time.Duration
	// HistoryRetain is how much revision history is kept, so watches that
	// reconnect within it resume without a reload.
	HistoryRetain time.Duration
	// Prefix limits orphan collection to keys under it ("" the whole store).
	Prefix string
	// Suffix limits orphan collection to keys ending with it.
	Suffix string
	// RecordGrace is how long a sequencer batch record is kept at least
	// (PruneRecords); negative: no minimum (tests).
	RecordGrace time.Duration
	// Index, when set, is a watched copy of the index: a retention pass
	// reads from etcd only the partitions it shows something due in
	// (retention.Due) or does not hold, not every partition every pass.
	Index *metadata.Cache
	// Now is the clock (tests move it).
	Now func() time.Time
}

func (c *Config) fill() {
	defaults.Positive(&c.RetentionInterval, DefaultRetentionInterval)
	defaults.Positive(&c.GCInterval, DefaultGCInterval)
	defaults.Positive(&c.Grace, DefaultGrace)
	defaults.Zero(&c.HistoryInterval, DefaultHistoryInterval) // negative: disabled
	defaults.Positive(&c.HistoryRetain, DefaultHistoryRetain)
	defaults.Zero(&c.Suffix, DefaultSuffix)
	defaults.Zero(&c.RecordGrace, DefaultRecordGrace) // negative: none
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Janitor runs retention, orphan collection and etcd history compaction.
// Its methods are safe for concurrent use; passes of one kind run one at a
// time.
type Janitor struct {
	cfg   Config
	store tier.Store
	meta  *metadata.Client
	etcd  *maintenance.Etcd
	log   *slog.Logger

	gcMu  sync.Mutex
	unref map[string]time.Time // object → when first seen unreferenced

	histMu      sync.Mutex
	samples     []revSample // revisions seen, oldest first
	compactedTo int64

	retMu sync.Mutex

	pruneMu      sync.Mutex
	pruneSamples []revSample // revisions seen by pruning passes, oldest first
	pruneFrom    uint64      // the next pruning pass's first batch

	// Last observed figures, read by the gauges.
	leader                         atomic.Bool
	bucketObjects, bucketBytes     atomic.Int64
	pending                        atomic.Int64
	etcdDB, etcdInUse, etcdKeys    atomic.Int64
	etcdCompacted                  atomic.Int64
	m                              metrics
	statsMu                        sync.Mutex
	lastStats                      maintenance.StorageStats
	haveStats, haveBucket, haveRev bool
}

type revSample struct {
	at  time.Time
	rev int64
}

type metrics struct {
	retEntries, retRecords, retBytes metric.Int64Counter
	deleted, deletedBytes            metric.Int64Counter
	prunedRecords                    metric.Int64Counter
	errors                           metric.Int64Counter
}

// New makes a Janitor. It does nothing until Run or a pass is called.
func New(cfg Config, store tier.Store, meta *metadata.Client, log *slog.Logger, mp metric.MeterProvider) (*Janitor, error) {
	cfg.fill()
	if cfg.HistoryInterval > 0 && cfg.HistoryRetain < cfg.HistoryInterval {
		// Not an error, but worth saying: history is then kept for about one
		// interval.
		cfg.HistoryRetain = cfg.HistoryInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	j := &Janitor{cfg: cfg, store: store, meta: meta, etcd: maintenance.New(meta), log: log, unref: map[string]time.Time{}}
	m := mp.Meter("github.com/varve-io/varve/tier/gc")
	var err error
	j.m.retEntries, err = m.Int64Counter("varve.retention.entries", metric.WithDescription("Index entries dropped by retention."))
	if err != nil {
		return nil, fmt.Errorf("gc metrics: %w", err)
	}
	j.m.retRecords, _ = m.Int64Counter("varve.retention.records", metric.WithDescription("Records dropped by retention."))
	j.m.retBytes, _ = m.Int64Counter("varve.retention.bytes", metric.WithUnit("By"), metric.WithDescription("Stored block bytes dropped by retention."))
	j.m.deleted, _ = m.Int64Counter("varve.gc.deleted.objects", metric.WithDescription("Unreferenced objects deleted."))
	j.m.deletedBytes, _ = m.Int64Counter("varve.gc.deleted.bytes", metric.WithUnit("By"), metric.WithDescription("Bytes of unreferenced objects deleted."))
	j.m.prunedRecords, _ = m.Int64Counter("varve.sequencer.records.pruned", metric.WithDescription("Sequencer batch records deleted once index keys cover them."))
	j.m.errors, _ = m.Int64Counter("varve.janitor.errors", metric.WithDescription("Janitor passes that failed, by job."))
	gLeader, _ := m.Int64ObservableGauge("varve.janitor.leader", metric.WithDescription("1 while this node's janitor leads the cluster's election."))
	gObjects, _ := m.Int64ObservableGauge("varve.bucket.objects", metric.WithDescription("Segment objects in the bucket at the last listing."))
	gBytes, _ := m.Int64ObservableGauge("varve.bucket.bytes", metric.WithUnit("By"), metric.WithDescription("Bytes of segment objects in the bucket at the last listing."))
	gPending, _ := m.Int64ObservableGauge("varve.gc.pending.objects", metric.WithDescription("Unreferenced objects waiting out the grace period."))
	gDB, _ := m.Int64ObservableGauge("varve.etcd.db.bytes", metric.WithUnit("By"), metric.WithDescription("etcd database file size (largest member)."))
	gInUse, _ := m.Int64ObservableGauge("varve.etcd.db.in_use.bytes", metric.WithUnit("By"), metric.WithDescription("Live part of the etcd database (largest member)."))
	gKeys, _ := m.Int64ObservableGauge("varve.etcd.keys", metric.WithDescription("Varve's keys in etcd."))
	gComp, _ := m.Int64ObservableGauge("varve.etcd.compacted.revision", metric.WithDescription("Revision etcd's history was last compacted to by the janitor."))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(gLeader, boolInt(j.leader.Load()))
		j.statsMu.Lock()
		haveBucket, haveStats, haveRev := j.haveBucket, j.haveStats, j.haveRev
		j.statsMu.Unlock()
		if haveBucket {
			o.ObserveInt64(gObjects, j.bucketObjects.Load())
			o.ObserveInt64(gBytes, j.bucketBytes.Load())
			o.ObserveInt64(gPending, j.pending.Load())
		}
		if haveStats {
			o.ObserveInt64(gDB, j.etcdDB.Load())
			o.ObserveInt64(gInUse, j.etcdInUse.Load())
			o.ObserveInt64(gKeys, j.etcdKeys.Load())
		}
		if haveRev {
			o.ObserveInt64(gComp, j.etcdCompacted.Load())
		}
		return nil
	}, gLeader, gObjects, gBytes, gPending, gDB, gInUse, gKeys, gComp)
	if err != nil {
		return nil, fmt.Errorf("gc metrics: %w", err)
	}
	return j, nil
}

// Leading reports whether this janitor currently leads the cluster's
// election (Run is acting).
func (j *Janitor) Leading() bool { return j.leader.Load() }

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Run campaigns for the cluster's janitor election and, while it leads,
// runs every pass on its interval. It returns when ctx ends.
func (j *Janitor) Run(ctx context.Context) {
	for ctx.Err() == nil {
		l, err := j.etcd.Campaign(ctx, ElectionName, j.cfg.NodeID, 10*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			j.log.Warn("janitor election failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		j.log.Info("janitor leads")
		j.leader.Store(true)
		j.lead(ctx, l.Done())
		j.leader.Store(false)
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.Resign(rctx); err != nil && ctx.Err() == nil {
			j.log.Warn("janitor resign", "err", err)
		}
		cancel()
		// Another janitor may have acted meanwhile: start observations over.
		j.forget()
		j.log.Info("janitor stopped leading")
	}
}

func (j *Janitor) forget() {
	j.gcMu.Lock()
	clear(j.unref)
	j.gcMu.Unlock()
	j.histMu.Lock()
	j.samples = nil
	j.histMu.Unlock()
}

// lead runs the passes until ctx ends or leadership is lost.
func (j *Janitor) lead(ctx context.Context, lost <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
	}()
	ret := time.NewTicker(j.cfg.RetentionInterval)
	defer ret.Stop()
	gc := time.NewTicker(j.cfg.GCInterval)
	defer gc.Stop()
	var hist <-chan time.Time
	if j.cfg.HistoryInterval > 0 {
		t := time.NewTicker(j.cfg.HistoryInterval)
		defer t.Stop()
		hist = t.C
	}
	runRetention := func() {
		if _, err := j.Retention(ctx); err != nil && ctx.Err() == nil {
			j.m.errors.Add(ctx, 1, metric.WithAttributes(attribute.String("job", "retention")))
			j.log.Warn("retention pass failed", "err", err)
		}
	}
	// Record pruning has its own ticker: behind a retention pass, which
	// at thousands of partitions takes minutes, it let the sequencer's
	// records (etcd's live bytes) grow with the data. It prunes what
	// compaction covered whether or not retention ran.
	go func() {
		t := time.NewTicker(j.cfg.RetentionInterval)
		defer t.Stop()
		for {
			if _, err := j.PruneRecords(ctx); err != nil && ctx.Err() == nil {
				j.m.errors.Add(ctx, 1, metric.WithAttributes(attribute.String("job", "prune")))
				j.log.Warn("sequencer record pruning failed", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	runGC := func() {
		if _, err := j.CollectOrphans(ctx); err != nil && ctx.Err() == nil {
			j.m.errors.Add(ctx, 1, metric.WithAttributes(attribute.String("job", "gc")))
			j.log.Warn("orphan collection failed", "err", err)
		}
	}
	runHistory := func() {
		if _, err := j.CompactHistory(ctx); err != nil && ctx.Err() == nil {
			j.m.errors.Add(ctx, 1, metric.WithAttributes(attribute.String("job", "history")))
			j.log.Warn("etcd history compaction failed", "err", err)
		}
		if _, err := j.SampleStats(ctx); err != nil && ctx.Err() == nil {
			j.log.Warn("etcd stats", "err", err)
		}
	}
	runRetention()
	runGC()
	if hist != nil {
		runHistory()
	} else if _, err := j.SampleStats(ctx); err != nil && ctx.Err() == nil {
		j.log.Warn("etcd stats", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-ret.C:
			runRetention()
		case <-gc.C:
			runGC()
		case <-hist:
			runHistory()
		}
	}
}

// RetentionReport sums one retention pass.
type RetentionReport struct {
	Partitions int // partitions with a log read and checked in etcd
	// Skipped counts partitions with a log that the watched index
	// (Config.Index) showed nothing due in: not read from etcd.
	Skipped int
	Entries int
	Records int64
	Bytes   int64
	// Objects are the objects of dropped entries (orphan collection
	// deletes those nothing else references after the grace period).
	Objects []string
}

// retentionParallelism bounds partitions checked at once.
const retentionParallelism = 4

// Retention enforces every topic's retention on each partition with a log
// (with Config.Index: each one the watched index shows something due in,
// or does not hold). A failure on one partition does not stop the others;
// the errors are joined.
func (j *Janitor) Retention(ctx context.Context) (RetentionReport, error) {
	j.retMu.Lock()
	defer j.retMu.Unlock()
	now := j.cfg.Now()
	topics, err := j.meta.ListTopics(ctx)
	if err != nil {
		return RetentionReport{}, fmt.Errorf("retention: %w", err)
	}
	type job struct {
		topic string
		p     int32
	}
	var jobs []job
	skipped := 0
	for _, t := range topics {
		if t.CleanupPolicy == metadata.CleanupCompact || (t.RetentionMs <= 0 && t.RetentionBytes < 0) {
			continue
		}
		sts, err := j.meta.PartitionStates(ctx, t.Name)
		if err != nil {
			return RetentionReport{}, fmt.Errorf("retention: %w", err)
		}
		for p, st := range sts {
			if st.Segments == 0 && st.Start >= st.Next {
				continue
			}
			if j.cfg.Index != nil {
				due := true
				j.cfg.Index.ReadPartition(t.Name, p, func(st metadata.PartitionState, es []metadata.IndexEntry) {
					due = retention.Due(t, now, st, es)
				})
				if !due {
					skipped++
					continue
				}
			}
			jobs = append(jobs, job{t.Name, p})
		}
	}
	var (
		mu   sync.Mutex
		rep  RetentionReport
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, retentionParallelism)
		// Every partition's index read shares the pass's decoded records.
		memo = metadata.NewRecordMemo()
	)
	rep.Skipped = skipped
	for _, jb := range jobs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res, err := retention.New(j.meta).WithRecordMemo(memo).Apply(ctx, jb.topic, jb.p, now)
			mu.Lock()
			defer mu.Unlock()
			rep.Partitions++
			if err != nil {
				errs = append(errs, err)
			}
			rep.Entries += res.Entries
			rep.Records += res.Records
			rep.Bytes += res.Bytes
			rep.Objects = append(rep.Objects, res.Objects...)
		})
	}
	wg.Wait()
	if rep.Entries > 0 {
		j.m.retEntries.Add(ctx, int64(rep.Entries))
		j.m.retRecords.Add(ctx, rep.Records)
		j.m.retBytes.Add(ctx, rep.Bytes)
	}
	return rep, errors.Join(errs...)
}

// GCReport sums one orphan collection pass.
type GCReport struct {
	// Listed counts segment objects in the bucket; ListedBytes their size.
	Listed      int
	ListedBytes int64
	// Referenced counts listed objects an index entry points at.
	Referenced int
	// Young counts unreferenced objects younger than the grace period.
	Young int
	// Waiting counts older unreferenced objects not yet seen unreferenced
	// for a whole grace period.
	Waiting int
	// Deleted lists the objects deleted.
	Deleted      []string
	DeletedBytes int64
	// Revision is the etcd revision the referenced set was read at.
	Revision int64
}

// deleteParallelism bounds concurrent deletes of one pass.
const deleteParallelism = 8

// CollectOrphans lists the bucket, then reads the set of objects the index
// references, and deletes each listed object that is unreferenced, older
// than the grace period and was already seen unreferenced by a pass at
// least one grace period ago. See docs/gc.md for why this never deletes a
// referenced object or one a reader may still need.
func (j *Janitor) CollectOrphans(ctx context.Context) (GCReport, error) {
	j.gcMu.Lock()
	defer j.gcMu.Unlock()
	var rep GCReport
	var listed []tier.ObjectInfo
	// List first, then read the index: an object committed between the two
	// is seen referenced; one PUT after the listing is not considered.
	err := j.store.List(ctx, j.cfg.Prefix, func(o tier.ObjectInfo) error {
		if strings.HasSuffix(o.Key, j.cfg.Suffix) {
			listed = append(listed, o)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("orphan collection: list %q: %w", j.cfg.Prefix, err)
	}
	refs, rev, err := j.etcd.ReferencedObjects(ctx)
	if err != nil {
		return rep, fmt.Errorf("orphan collection: %w", err)
	}
	rep.Revision = rev
	now := j.cfg.Now()
	seen := make(map[string]bool, len(listed))
	var doomed []tier.ObjectInfo
	for _, o := range listed {
		seen[o.Key] = true
		rep.Listed++
		rep.ListedBytes += o.Size
		if _, ok := refs[o.Key]; ok {
			rep.Referenced++
			delete(j.unref, o.Key)
			continue
		}
		since, ok := j.unref[o.Key]
		if !ok {
			since = now
			j.unref[o.Key] = now
		}
		switch {
		case now.Sub(o.Modified) < j.cfg.Grace:
			rep.Young++
		case now.Sub(since) < j.cfg.Grace:
			rep.Waiting++
		default:
			doomed = append(doomed, o)
		}
	}
	for k := range j.unref {
		if !seen[k] {
			delete(j.unref, k) // gone (deleted by us or another janitor)
		}
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, deleteParallelism)
	)
	for _, o := range doomed {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := j.store.Delete(ctx, o.Key)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("delete orphan %s: %w", o.Key, err))
				return
			}
			delete(j.unref, o.Key)
			rep.Deleted = append(rep.Deleted, o.Key)
			rep.DeletedBytes += o.Size
		})
	}
	wg.Wait()
	if n := len(rep.Deleted); n > 0 {
		j.m.deleted.Add(ctx, int64(n))
		j.m.deletedBytes.Add(ctx, rep.DeletedBytes)
		j.log.Info("deleted unreferenced objects", "objects", n, "bytes", rep.DeletedBytes, "revision", rev)
	}
	j.bucketObjects.Store(int64(rep.Listed - len(rep.Deleted)))
	j.bucketBytes.Store(rep.ListedBytes - rep.DeletedBytes)
	j.pending.Store(int64(len(j.unref)))
	j.statsMu.Lock()
	j.haveBucket = true
	j.statsMu.Unlock()
	return rep, errors.Join(errs...)
}

// HistoryReport says what one history compaction did.
type HistoryReport struct {
	// Revision is the current revision sampled by this pass.
	Revision int64
	// CompactedTo is the revision history was compacted to by this pass
	// (0: nothing was old enough).
	CompactedTo int64
}

// CompactHistory samples etcd's current revision and compacts history to
// the newest sampled revision at least HistoryRetain old. The first
// compaction therefore happens HistoryRetain after the janitor starts
// leading.
func (j *Janitor) CompactHistory(ctx context.Context) (HistoryReport, error) {
	j.histMu.Lock()
	defer j.histMu.Unlock()
	rev, err := j.etcd.Revision(ctx)
	if err != nil {
		return HistoryReport{}, fmt.Errorf("etcd history: %w", err)
	}
	now := j.cfg.Now()
	rep := HistoryReport{Revision: rev}
	j.samples = append(j.samples, revSample{at: now, rev: rev})
	target := int64(0)
	keep := 0
	for i, s := range j.samples {
		if now.Sub(s.at) >= j.cfg.HistoryRetain {
			target, keep = s.rev, i
		}
	}
	// Samples older than the target are no longer needed.
	j.samples = j.samples[keep:]
	if target <= j.compactedTo {
		return rep, nil
	}
	if err := j.etcd.CompactHistory(ctx, target); err != nil {
		return rep, fmt.Errorf("etcd history: %w", err)
	}
	j.compactedTo = target
	rep.CompactedTo = target
	j.etcdCompacted.Store(target)
	j.statsMu.Lock()
	j.haveRev = true
	j.statsMu.Unlock()
	j.log.Info("compacted etcd history", "revision", target, "current", rev)
	return rep, nil
}

// SampleStats reads etcd's storage figures for the gauges and returns them.
func (j *Janitor) SampleStats(ctx context.Context) (maintenance.StorageStats, error) {
	st, err := j.etcd.StorageStats(ctx)
	if err != nil {
		return st, err
	}
	j.etcdDB.Store(st.DBSize)
	j.etcdInUse.Store(st.DBSizeInUse)
	j.etcdKeys.Store(st.Keys)
	j.statsMu.Lock()
	j.lastStats, j.haveStats = st, true
	j.statsMu.Unlock()
	return st, nil
}
