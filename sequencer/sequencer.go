package sequencer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
	"github.com/varve-io/varve/tier"
)

// Errors a Service returns that a client retries against the current
// leader: the commit was not written (ErrNotLeader, seqlog.ErrStale) or
// may have been (metadata.ErrCommitUnknown); a retry with the same commit
// id is answered the same either way.
var ErrNotLeader = seqlog.ErrNotLeader

// Service is what an ingest node calls on the sequencer: the internal
// API. *Sequencer implements it in-process; an RPC client will too.
type Service interface {
	Commit(ctx context.Context, commitID string, appends []metadata.Append) ([]metadata.AppendResult, error)
	ReadProducer(ctx context.Context, id int64, epoch int32, fresh bool, topic string, partitions []int32) (*metadata.ProducerView, error)
}

var _ Service = (*Sequencer)(nil)

// Config configures a Sequencer.
type Config struct {
	// ID is what the election stores: how ingest nodes reach this node.
	ID string
	// TTL is the election lease: a dead leader is replaced within it
	// (default 5 s).
	TTL time.Duration
	// Gather is how long, at most, a batch waits for the commits of the
	// other ingest nodes whose next commit is due (sources, named by the
	// node in the commit id: tier.FlushKeyNode; due by the rhythm of their
	// last commits, see awaited). Ingest nodes seal their files at the same
	// wall-clock ticks, so their commits arrive within a store PUT's jitter
	// of each other; gathered, every node's flush of a tick is one batch
	// and one etcd write. Counted from the batch's first commit's arrival;
	// commits that arrived while the previous batch was written join
	// without waiting, and a lone ingest node never waits. Default
	// DefaultGather; negative: never wait.
	Gather time.Duration
	// MaxBatchBytes bounds a batch's estimated record size (default 1 MiB,
	// below etcd's 1.5 MiB request limit).
	MaxBatchBytes int
	// CheckpointEvery and CheckpointInterval: a checkpoint is written
	// after this many batches or this long since the last (defaults 1000
	// and 10 s), bounding recovery.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// DedupeWindow is how long a commit's answer is remembered for a
	// retry (default DefaultDedupeWindow).
	DedupeWindow time.Duration
	// WriterBytes is the produce rate (records' bytes a second, before
	// compression) the leader places on one ingest node before it asks
	// for another: it records ceil(rate / WriterBytes) writers in etcd,
	// and the ingest nodes move producers to that many of them
	// (placement.go). Default DefaultWriterBytes; negative: no placement.
	WriterBytes int64
	Logger      *slog.Logger
	// MeterProvider receives the sequencer's metrics (metrics.go); nil:
	// none.
	MeterProvider metric.MeterProvider

	// pruneEvery is how often, at most, a checkpoint is preceded by
	// dropping the producers whose identity expired (default infoMaxAge);
	// tests shorten it.
	pruneEvery time.Duration
	// infoMaxAge is how long a producer's identity read from etcd is
	// trusted (default infoMaxAge); tests shorten it.
	infoMaxAge time.Duration

	// Test hooks, called by the leader's loop around a batch's write; an
	// error ends the term as a crash would.
	beforeAppend, afterAppend func(t *seqlog.Term, batch uint64) error
}

// DefaultGather is Config.Gather's default: well above a loopback or
// same-zone PUT's jitter, small beside an ingest node's linger.
const DefaultGather = 10 * time.Millisecond

// sourceForget is how long, at least, a silent source is remembered (and
// three of its periods).
const sourceForget = time.Second

// DefaultDedupeWindow is Config.DedupeWindow's default: 2 minutes, as the
// direct path's guards.
const DefaultDedupeWindow = 2 * time.Minute

func (c *Config) defaults() {
	if c.TTL <= 0 {
		c.TTL = 5 * time.Second
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 1 << 20
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = 1000
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = 10 * time.Second
	}
	if c.DedupeWindow <= 0 {
		c.DedupeWindow = DefaultDedupeWindow
	}
	if c.Gather == 0 {
		c.Gather = DefaultGather
	}
	if c.WriterBytes == 0 {
		c.WriterBytes = DefaultWriterBytes
	}
	if c.infoMaxAge <= 0 {
		c.infoMaxAge = infoMaxAge
	}
	if c.pruneEvery <= 0 {
		c.pruneEvery = c.infoMaxAge
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Sequencer is one node of the sequence role: a candidate that, once
// elected, recovers and then orders every commit until its term ends.
type Sequencer struct {
	log  *seqlog.Log
	meta *metadata.Client
	cfg  Config

	mu  sync.Mutex
	cur *term // nil unless leading and recovered

	batches, commits, txns, checkpoints, producerReads, producerLoads atomic.Int64
	m                                                                 instruments
}

// term is one term's serving state.
type term struct {
	t    *seqlog.Term
	st   *state
	reqs chan *request // unbuffered: a send succeeds only if the loop takes it
	done chan struct{}
	// sources is each ingest node's commit rhythm; the loop's own.
	sources map[string]*source
	// bytes counts the records' bytes the term's batches committed
	// (placement.go).
	bytes atomic.Int64
}

type request struct {
	id      string
	source  string // the ingest node, from the id; "" when not a flush key
	arrived time.Time
	appends []metadata.Append
	size    int
	reply   chan reply // buffered: the loop never blocks on it
}

type reply struct {
	results []metadata.AppendResult
	err     error
}

// New returns a sequencer candidate over meta's etcd; Run campaigns. It
// fails only when cfg.MeterProvider refuses an instrument.
func New(meta *metadata.Client, cfg Config) (*Sequencer, error) {
	cfg.defaults()
	s := &Sequencer{log: seqlog.New(meta), meta: meta, cfg: cfg}
	var err error
	if s.m, err = newInstruments(s, cfg.MeterProvider); err != nil {
		return nil, fmt.Errorf("sequencer metrics: %w", err)
	}
	return s, nil
}

// Stats counts what this node did as leader.
type Stats struct {
	// Batches written, and the commits they answered.
	Batches, Commits int64
	// BatchTxns is the batch write transactions sent (a fence may have
	// refused some); Checkpoints the checkpoints written.
	BatchTxns, Checkpoints int64
	// ProducerReads is the producer identities ReadProducer read from
	// etcd (the others it answered from the identity the leader held).
	ProducerReads int64
	// ProducerLoads is the reads of producer identities the leader made
	// for its batches and to drop expired producers (each one etcd
	// transaction for up to 120 producers).
	ProducerLoads int64
}

// Stats returns this node's counts.
func (s *Sequencer) Stats() Stats {
	return Stats{Batches: s.batches.Load(), Commits: s.commits.Load(), BatchTxns: s.txns.Load(), Checkpoints: s.checkpoints.Load(),
		ProducerReads: s.producerReads.Load(), ProducerLoads: s.producerLoads.Load()}
}

// Leading reports whether this node is the recovered leader.
func (s *Sequencer) Leading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur != nil
}

// Run campaigns, and serves each term it wins, until ctx ends.
func (s *Sequencer) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		t, err := s.log.Campaign(ctx, s.cfg.ID, s.cfg.TTL)
		if err != nil {
			if ctx.Err() == nil {
				s.cfg.Logger.Warn("sequencer campaign failed", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		s.runTerm(ctx, t)
	}
	return ctx.Err()
}

// runTerm recovers, serves until the term ends, and resigns.
func (s *Sequencer) runTerm(ctx context.Context, t *seqlog.Term) {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = t.Resign(rctx)
		cancel()
	}()
	// The marker first: no direct commit lands after it, so the direct
	// path's watermarks read from here on are final.
	if err := t.MarkActive(ctx, s.cfg.ID); err != nil {
		s.cfg.Logger.Warn("sequencer marker not written; resigning", "term", t.Number(), "err", err)
		return
	}
	st, err := s.recover(ctx)
	if err != nil {
		s.cfg.Logger.Warn("sequencer recovery failed; resigning", "term", t.Number(), "err", err)
		return
	}
	tm := &term{t: t, st: st, reqs: make(chan *request), done: make(chan struct{}), sources: map[string]*source{}}
	s.mu.Lock()
	s.cur = tm
	s.mu.Unlock()
	s.cfg.Logger.Info("sequencer leading", "term", t.Number(), "batch", st.batch)
	go s.place(ctx, tm)
	err = s.serve(ctx, tm)
	s.mu.Lock()
	s.cur = nil
	s.mu.Unlock()
	close(tm.done)
	s.cfg.Logger.Info("sequencer term ended", "term", t.Number(), "err", err)
}

// recover rebuilds the state from the checkpoint and the records after it.
func (s *Sequencer) recover(ctx context.Context) (*state, error) {
	cp, recs, err := s.log.Recover(ctx)
	if err != nil {
		return nil, err
	}
	st := newState(s.cfg.infoMaxAge)
	now := time.Now()
	if cp != nil {
		st.restore(cp, now)
	}
	for _, r := range recs {
		st.apply(r, true, now)
	}
	return st, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Commit orders one flush's appends: it returns once the batch holding
// them is written to etcd, with the same results the direct commit path
// gives. A repeated commit id is answered as the first time.
func (s *Sequencer) Commit(ctx context.Context, commitID string, appends []metadata.Append) ([]metadata.AppendResult, error) {
	if err := metadata.ValidateAppends(commitID, appends); err != nil {
		return nil, err
	}
	s.mu.Lock()
	tm := s.cur
	s.mu.Unlock()
	if tm == nil {
		return nil, fmt.Errorf("commit %s: %w", commitID, ErrNotLeader)
	}
	source, _ := tier.FlushKeyNode(commitID)
	r := &request{id: commitID, source: source, arrived: time.Now(), appends: appends, size: estimate(commitID, appends), reply: make(chan reply, 1)}
	select {
	case tm.reqs <- r:
	case <-tm.done:
		return nil, fmt.Errorf("commit %s: %w", commitID, ErrNotLeader)
	case <-ctx.Done():
		return nil, fmt.Errorf("commit %s: %w", commitID, ctx.Err())
	}
	select {
	case rep := <-r.reply:
		return rep.results, rep.err
	case <-ctx.Done():
		return nil, fmt.Errorf("commit %s: %w: %w", commitID, metadata.ErrCommitUnknown, ctx.Err())
	}
}

// estimate bounds a commit's share of an encoded record.
func estimate(id string, appends []metadata.Append) int {
	n := len(id) + 8
	for _, a := range appends {
		n += 80 + len(a.Topic) + len(a.Object) + 48*len(a.Batches)
	}
	return n
}

// ReadProducer returns producer id's identity and its states on partitions
// of topic as the leader holds them. Unless fresh, the identity is the one
// the leader holds (the view is then Held) when it read it from etcd
// within infoMaxAge, found the producer known, epoch (the requesting
// batch's) is not newer than the one it holds, and the producer committed
// within half its state TTL (so its lease, refreshed at each commit,
// cannot have expired), or when ReadProducer itself read it from etcd
// within the last second (readAge: a new producer's first requests, before
// its first batch is written) and found it known at an epoch not older;
// otherwise it is read from etcd now. So a
// producer's batches cost no etcd read per partition, while a new epoch
// issued since the leader's read (InitProducer again) is reread rather
// than refused as never issued, and a producer the leader does not hold,
// or holds as unknown, is never answered unknown from memory. A held view
// may still be stale (an epoch bumped since): the ingest node only
// accepts batches on it, which the commit's fence (decide.go, load.go)
// decides, and asks again with fresh before it refuses a batch or answers
// it as a duplicate.
func (s *Sequencer) ReadProducer(ctx context.Context, id int64, epoch int32, fresh bool, topic string, partitions []int32) (*metadata.ProducerView, error) {
	s.mu.Lock()
	tm := s.cur
	s.mu.Unlock()
	if tm == nil {
		return nil, fmt.Errorf("read producer %d: %w", id, ErrNotLeader)
	}
	var info seqlog.ProducerInfo
	held := false
	now := time.Now()
	if !fresh {
		if info, held = tm.st.heldInfo(id, epoch, now); !held {
			info, held = tm.st.readInfo(id, epoch, now)
		}
	}
	if !held {
		infos, _, err := s.log.LoadProducers(ctx, []int64{id}, nil)
		s.recordProducerRead()
		if err != nil {
			return nil, err
		}
		info = infos[id]
		tm.st.rememberRead(id, info, now)
	}
	states := tm.st.producerStates(id, topic, partitions)
	return metadata.NewProducerView(id, topic, info.Known, info.Epoch, states).WithHeld(held), nil
}

// isRetriable reports whether a client should retry err against the
// current leader with the same commit id.
func isRetriable(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, seqlog.ErrNoLeader) || errors.Is(err, seqlog.ErrStale) ||
		errors.Is(err, metadata.ErrCommitUnknown) || metadata.IsUnavailable(err)
}
