package sequencer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

// infoMaxAge bounds how long a producer's identity is trusted without a
// reread: the fence catches epoch bumps, not expiry (a deleted key has no
// revision to compare).
const infoMaxAge = time.Minute

// staleRetries bounds how often one batch is decided again after a topic
// or producer changed under it.
const staleRetries = 5

// checkpointIdle is how long a due checkpoint waits for a batch to carry
// it (AppendCheckpoint) before the leader writes it alone.
const checkpointIdle = 500 * time.Millisecond

// serve is the leader's loop: it takes the commits that arrived, writes
// them as one batch, answers, and checkpoints now and then: in the next
// batch's transaction once one is due, alone when no batch comes within
// checkpointIdle or the checkpoint does not fit beside the batch. It
// returns when the term ends (its lease lost, ctx done, or a write
// failing without a clear answer).
func (s *Sequencer) serve(ctx context.Context, tm *term) (err error) {
	var carry *request
	defer func() {
		if carry != nil {
			carry.reply <- reply{err: fmt.Errorf("commit %s: %w", carry.id, ErrNotLeader)}
		}
	}()
	lastCP, sinceCP := time.Now(), 0
	var lastPrune time.Time
	// idleT fires when a due checkpoint has waited checkpointIdle for a
	// batch to carry it (Go 1.23 timers: Reset and Stop need no drain).
	idleT := time.NewTimer(time.Hour)
	idleT.Stop()
	defer idleT.Stop()
	// prune drops expired producers when it is time (an etcd read: never
	// between a batch's arrival and its write).
	prune := func() {
		if time.Since(lastPrune) >= s.cfg.pruneEvery {
			s.pruneProducers(metadata.WithCaller(ctx, metadata.CallerSequencerRead), tm.st)
			lastPrune = time.Now()
		}
	}
	// prepare returns the checkpoint of the state after the last batch.
	prepare := func() *seqlog.Checkpoint {
		tm.st.expire(time.Now().Add(-s.cfg.DedupeWindow))
		return tm.st.checkpoint()
	}
	// alone writes the checkpoint in a transaction of its own.
	alone := func() error {
		prune()
		if err := tm.t.WriteCheckpoint(metadata.WithCaller(ctx, metadata.CallerSequencerCheckpoint), prepare()); err != nil {
			if errors.Is(err, ErrNotLeader) {
				return err
			}
			s.cfg.Logger.Warn("sequencer checkpoint failed", "err", err)
		} else {
			s.checkpoints.Add(1)
		}
		lastCP, sinceCP = time.Now(), 0
		return nil
	}
	for {
		first := carry
		carry = nil
		if first == nil {
			var idle <-chan time.Time
			if sinceCP > 0 {
				wait := checkpointIdle
				if sinceCP < s.cfg.CheckpointEvery {
					wait += max(0, s.cfg.CheckpointInterval-time.Since(lastCP))
				}
				idleT.Reset(wait)
				idle = idleT.C
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tm.t.Done():
				return ErrNotLeader
			case first = <-tm.reqs:
				idleT.Stop()
			case <-idle:
				if err := alone(); err != nil {
					return err
				}
				continue
			}
		}
		var batch []*request
		batch, carry = s.collect(ctx, tm, first)
		var cp *seqlog.Checkpoint
		if sinceCP > 0 && (sinceCP >= s.cfg.CheckpointEvery || time.Since(lastCP) >= s.cfg.CheckpointInterval) {
			cp = prepare()
		}
		wrote, checkpointed, err := s.commitBatch(ctx, tm, batch, cp)
		if err != nil {
			return err
		}
		if checkpointed {
			lastCP, sinceCP = time.Now(), 0
			// After the batch is answered; the next checkpoint has it.
			prune()
		}
		if wrote {
			sinceCP++
		}
		if cp != nil && !checkpointed {
			// It did not fit beside the batch: written alone, as of
			// after this batch.
			if err := alone(); err != nil {
				return err
			}
		}
	}
}

// pruneProducers drops from the state — and so from the next checkpoint —
// every producer whose identity is gone from etcd: its lease expired (no
// commit for its producer_state_ttl; commits refresh it, as on the direct
// path, where the expiry deletes the producer's keys). Ids are never
// reused and an expired id cannot be initialized again, so a dropped
// producer never has state again: if it comes back, its identity reads as
// unknown and its batches get ErrUnknownProducer, as on the direct path.
// It runs in the leader's loop, between batches; a failed read only
// postpones it.
func (s *Sequencer) pruneProducers(ctx context.Context, st *state) {
	if len(st.producers) == 0 {
		return
	}
	ids := make([]int64, 0, len(st.producers))
	for id := range st.producers {
		ids = append(ids, id)
	}
	infos, rev, err := s.log.LoadProducers(ctx, ids, nil)
	s.producerLoads.Add(1)
	if err != nil {
		s.cfg.Logger.Warn("sequencer: read producers to prune expired ones", "producers", len(ids), "err", err)
		return
	}
	now := time.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, id := range ids {
		if !infos[id].Known {
			delete(st.producers, id)
			n++
			continue
		}
		// The read is as fresh as load's: the identities held are
		// renewed with it (one read for all, not one per producer as
		// each comes of age).
		if p := st.producers[id]; !p.loadedAt.IsZero() {
			p.info.ProducerInfo, p.info.Known, p.infoRev, p.loadedAt = infos[id].ProducerInfo, true, rev, now
		}
	}
	if n > 0 {
		s.cfg.Logger.Info("sequencer dropped expired producers", "producers", n, "left", len(st.producers))
	}
}

// collect takes first and every commit already waiting, up to
// MaxBatchBytes and MaxTopicCompares topics; a commit that does not fit is
// carried to the next batch. While an ingest node whose next commit is due
// has none in the batch (see awaited), it waits for more, until Gather
// after the batch's first arrival (see Config.Gather).
func (s *Sequencer) collect(ctx context.Context, tm *term, first *request) (batch []*request, carry *request) {
	batch = []*request{first}
	size := first.size
	topics := map[string]bool{}
	for _, a := range first.appends {
		topics[a.Topic] = true
	}
	in := map[string]bool{first.source: true}
	earliest := first.arrived
	defer func() {
		for _, r := range batch {
			tm.sources[r.source] = tm.sources[r.source].commit(r.arrived)
		}
	}()
	var gather *time.Timer
	defer func() {
		if gather != nil {
			gather.Stop()
		}
	}()
	for {
		var r *request
		select {
		case r = <-tm.reqs:
		default:
		}
		if r == nil {
			if s.cfg.Gather <= 0 || !awaited(tm.sources, in, earliest, time.Now()) {
				return batch, nil
			}
			if gather == nil {
				wait := time.Until(earliest.Add(s.cfg.Gather))
				if wait <= 0 {
					return batch, nil
				}
				gather = time.NewTimer(wait)
			}
			select {
			case r = <-tm.reqs:
			case <-gather.C:
				return batch, nil
			case <-ctx.Done():
				return batch, nil
			case <-tm.t.Done():
				return batch, nil
			}
		}
		if size+r.size > s.cfg.MaxBatchBytes || !addTopics(topics, r.appends) {
			return batch, r
		}
		batch = append(batch, r)
		size += r.size
		in[r.source] = true
		if r.arrived.Before(earliest) {
			earliest = r.arrived
		}
	}
}

// source is an ingest node's commit rhythm: its last commit's arrival and
// the time between its last two (its linger, when it flushes on ticks).
type source struct {
	last   time.Time
	period time.Duration
}

// commit records a commit of the source arriving at at.
func (src *source) commit(at time.Time) *source {
	if src == nil {
		return &source{last: at}
	}
	if d := at.Sub(src.last); d > 0 {
		src.last, src.period = at, d
	}
	return src
}

// awaited reports whether an ingest node (a source) that is not in the
// batch (in) is due to commit: between half and one and a half of its
// period after its last commit, counted at the batch's first arrival
// (earliest). So a batch waits for the nodes flushing on the same tick
// and not for those whose commit of this tick went into the previous batch
// (a slow PUT made them late), that skipped a tick (no records), or whose
// rhythm is unknown yet. Sources silent for sourceForget and three periods
// are forgotten; commits naming no node ("") are never awaited.
func awaited(sources map[string]*source, in map[string]bool, earliest, now time.Time) bool {
	missing := false
	for name, src := range sources {
		if now.Sub(src.last) > max(sourceForget, 3*src.period) {
			delete(sources, name)
			continue
		}
		if name == "" || in[name] || src.period <= 0 {
			continue
		}
		if e := earliest.Sub(src.last); e >= src.period/2 && e <= src.period+src.period/2 {
			missing = true
		}
	}
	return missing
}

// addTopics adds appends' topics to topics unless that would take it past
// seqlog.MaxTopicCompares (so that the batch's write compares each topic).
func addTopics(topics map[string]bool, appends []metadata.Append) bool {
	var added []string
	for _, a := range appends {
		if !topics[a.Topic] {
			topics[a.Topic] = true
			added = append(added, a.Topic)
		}
	}
	if len(topics) <= seqlog.MaxTopicCompares {
		return true
	}
	for _, t := range added {
		delete(topics, t)
	}
	return false
}

// commitBatch decides and writes one batch, then answers its commits.
// wrote reports that a record was written; an error ends the term.
func (s *Sequencer) commitBatch(ctx context.Context, tm *term, batch []*request, cp *seqlog.Checkpoint) (wrote, checkpointed bool, err error) {
	batch = s.answerRepeats(ctx, tm.st, batch)
	if len(batch) == 0 {
		return false, false, nil
	}
	for attempt := 0; ; attempt++ {
		revs, err := s.load(metadata.WithCaller(ctx, metadata.CallerSequencerRead), tm.st, batch, attempt > 0)
		fence := seqlog.Fence{Topics: revs.topicMods, TopicsRev: revs.topics, ProducersRev: revs.producers}
		if err != nil {
			answerAll(batch, nil, fmt.Errorf("%w: %w", seqlog.ErrStale, err))
			return false, false, nil // etcd trouble before any write: the term goes on
		}
		pl := newPlan(tm.st)
		rec := &seqlog.Record{Batch: tm.st.batch + 1, Term: tm.t.Number(), TopicIDs: pl.topicIDs}
		for _, r := range batch {
			rec.Commits = append(rec.Commits, seqlog.Commit{ID: r.id, Appends: r.appends, Results: pl.decide(r.appends)})
		}
		if !pl.committed && pl.cacheRefused && attempt == 0 {
			continue // unfenced refusals: decide again on a fresh read
		}
		if !pl.committed {
			answerRecord(batch, rec)
			return false, false, nil
		}
		checkpointed, err = s.write(ctx, tm, rec, fence, cp)
		switch {
		case errors.Is(err, seqlog.ErrStale) && attempt < staleRetries:
			continue
		case errors.Is(err, metadata.ErrInvalidArgument) && len(batch) > 1:
			// The record came out above etcd's request limit (the size
			// estimate missed): write the halves as two batches.
			h := len(batch) / 2
			w1, c1, err := s.commitBatch(ctx, tm, batch[:h], cp)
			if err != nil {
				answerAll(batch[h:], nil, fmt.Errorf("%w: %w", ErrNotLeader, err))
				return w1, c1, err
			}
			if c1 {
				cp = nil
			}
			w2, c2, err := s.commitBatch(ctx, tm, batch[h:], cp)
			return w1 || w2, c1 || c2, err
		case errors.Is(err, seqlog.ErrStale), errors.Is(err, metadata.ErrInvalidArgument):
			answerAll(batch, nil, err)
			return false, false, nil
		case err != nil:
			// Not leader, or no answer: the record may be written. The
			// next term knows; the callers retry there.
			answerAll(batch, nil, fmt.Errorf("%w: %w", metadata.ErrCommitUnknown, err))
			return false, false, err
		}
		if checkpointed {
			s.checkpoints.Add(1)
		}
		pl.merge()
		tm.st.apply(rec, false, time.Now())
		s.recordBatch(len(batch))
		tm.bytes.Add(committedBytes(batch))
		answerRecord(batch, rec)
		s.refreshLeases(ctx, tm.st, pl)
		return true, checkpointed, nil
	}
}

// write sends the batch's one transaction (carrying cp when it fits),
// with the test hooks around it.
func (s *Sequencer) write(ctx context.Context, tm *term, rec *seqlog.Record, fence seqlog.Fence, cp *seqlog.Checkpoint) (checkpointed bool, err error) {
	if h := s.cfg.beforeAppend; h != nil {
		if err := h(tm.t, rec.Batch); err != nil {
			return false, err
		}
	}
	start := time.Now()
	_, checkpointed, err = tm.t.AppendCheckpoint(ctx, rec, fence, cp)
	s.recordTxn(time.Since(start))
	if err != nil {
		return false, err
	}
	if h := s.cfg.afterAppend; h != nil {
		return checkpointed, h(tm.t, rec.Batch)
	}
	return checkpointed, nil
}

// answerRepeats answers commits whose id was answered before (a retry)
// from their record, and merges repeats within the batch; it returns the
// rest.
func (s *Sequencer) answerRepeats(ctx context.Context, st *state, batch []*request) []*request {
	out := batch[:0]
	firstOf := map[string]*request{}
	var dups []*request
	for _, r := range batch {
		if b, ok := st.commits[r.id]; ok {
			res, err := s.log.CommitResults(ctx, b, r.id)
			if err != nil {
				err = fmt.Errorf("%w: commit %s is in batch %d: %w", seqlog.ErrStale, r.id, b, err)
			}
			r.reply <- reply{results: res, err: err}
			continue
		}
		if _, ok := firstOf[r.id]; ok {
			dups = append(dups, r)
			continue
		}
		firstOf[r.id] = r
		out = append(out, r)
	}
	for _, r := range dups {
		f := firstOf[r.id]
		f.reply = tee(f.reply, r.reply)
	}
	return out
}

// tee returns a channel whose one reply goes to both a and b.
func tee(a, b chan reply) chan reply {
	c := make(chan reply, 1)
	go func() {
		rep := <-c
		a <- rep
		b <- rep
	}()
	return c
}

func answerAll(batch []*request, results []metadata.AppendResult, err error) {
	for _, r := range batch {
		r.reply <- reply{results: results, err: err}
	}
}

func answerRecord(batch []*request, rec *seqlog.Record) {
	for i, r := range batch {
		r.reply <- reply{results: rec.Commits[i].Results}
	}
}

// refreshLeases keeps the committed producers' state alive, off the loop.
func (s *Sequencer) refreshLeases(ctx context.Context, st *state, pl *plan) {
	if len(pl.pids) == 0 {
		return
	}
	infos := make([]metadata.ProducerInfo, 0, len(pl.pids))
	for id := range pl.pids {
		infos = append(infos, st.producers[id].info.ProducerInfo)
	}
	go s.log.RefreshLeases(context.WithoutCancel(ctx), infos)
}
