package sequencer

import (
	"errors"
	"fmt"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

// simState is a producer's state on a block's partition as the block's
// batches advance it.
type simState struct {
	id int64
	st *metadata.ProducerState
}

// pkey names a producer's state on a partition.
type pkey struct {
	id int64
	tp
}

// plan is one batch being decided: its effects are held apart from the
// state until its record is written (the state stays as it was if the
// write fails).
type plan struct {
	s         *state
	next      map[tp]int64
	states    map[pkey]*metadata.ProducerState
	topicIDs  map[string]string
	committed bool // at least one block is committed
	// cacheRefused: a refusal rests on cached topics or producer ids
	// (not found, out of range, unknown, epoch never issued). A batch that
	// writes is fenced against them changing; one that does not is
	// decided again on a fresh read first.
	cacheRefused bool
	pids         map[int64]bool
}

func newPlan(s *state) *plan {
	return &plan{s: s, next: map[tp]int64{}, states: map[pkey]*metadata.ProducerState{}, topicIDs: map[string]string{}, pids: map[int64]bool{}}
}

func (pl *plan) nextOf(k tp) int64 {
	if v, ok := pl.next[k]; ok {
		return v
	}
	if t := pl.s.topics[k.topic]; t != nil && int(k.p) < len(t.next) {
		return t.next[k.p]
	}
	return 0
}

func (pl *plan) stateOf(k pkey) *metadata.ProducerState {
	if v, ok := pl.states[k]; ok {
		return v
	}
	if p := pl.s.producers[k.id]; p != nil {
		return p.states[k.tp]
	}
	return nil
}

// decide decides one commit's appends in order, exactly as the direct
// commit transaction does (metadata/commit.go): refused blocks leave no
// trace, committed ones get the partition's next offsets.
func (pl *plan) decide(appends []metadata.Append) []metadata.AppendResult {
	results := make([]metadata.AppendResult, len(appends))
	for i, a := range appends {
		t := pl.s.topics[a.Topic]
		switch {
		case t == nil || t.cfg == nil:
			pl.cacheRefused = true
			results[i] = metadata.AppendResult{Base: -1, Err: fmt.Errorf("topic %q: %w", a.Topic, metadata.ErrTopicNotFound)}
			continue
		case a.Partition < 0 || a.Partition >= t.cfg.Partitions:
			pl.cacheRefused = true
			results[i] = metadata.AppendResult{Base: -1, Err: fmt.Errorf("%w: topic %q has %d partitions, got partition %d", metadata.ErrPartitionOutOfRange, a.Topic, t.cfg.Partitions, a.Partition)}
			continue
		}
		k := tp{a.Topic, a.Partition}
		next := pl.nextOf(k)
		if len(a.Batches) > 0 {
			br, sim, refused := pl.checkBatches(a, next)
			if refused {
				results[i] = metadata.AppendResult{Base: -1, Batches: br, Err: fmt.Errorf("%w: %s/%d: the block held a duplicate or out-of-order producer batch", metadata.ErrBlockRefused, a.Topic, a.Partition)}
				continue
			}
			for _, ps := range sim {
				pl.states[pkey{ps.id, k}] = ps.st
				pl.pids[ps.id] = true
			}
			results[i].Batches = br
		}
		results[i].Base = next
		pl.next[k] = next + a.Records
		pl.topicIDs[a.Topic] = t.cfg.ID
		pl.committed = true
	}
	return results
}

// checkBatches decides every producer batch of a block starting at next,
// as metadata's checkBatches does: the block commits only if each batch is
// its producer's next.
func (pl *plan) checkBatches(a metadata.Append, next int64) ([]metadata.BatchResult, []simState, bool) {
	// A block holds a few producers (at most MaxProducersPerBlock): a
	// slice, not a map per block.
	var sim []simState
	at := func(id int64) int {
		for i := range sim {
			if sim[i].id == id {
				return i
			}
		}
		return -1
	}
	for _, b := range a.Batches {
		if at(b.ID) < 0 {
			sim = append(sim, simState{b.ID, pl.stateOf(pkey{b.ID, tp{a.Topic, a.Partition}})})
		}
	}
	br := make([]metadata.BatchResult, len(a.Batches))
	refused := false
	for j, b := range a.Batches {
		var info seqlog.ProducerInfo
		if p := pl.s.producers[b.ID]; p != nil {
			info = p.info
		}
		ps := &sim[at(b.ID)]
		dup, err := metadata.CheckBatch(info.Known, info.Epoch, ps.st, b, a.Topic, a.Partition)
		switch {
		case err != nil:
			br[j] = metadata.BatchResult{Base: -1, Err: err}
			refused = true
			if errors.Is(err, metadata.ErrUnknownProducer) || errors.Is(err, metadata.ErrInvalidArgument) {
				pl.cacheRefused = true
			}
		case dup >= 0:
			br[j] = metadata.BatchResult{Base: dup, Duplicate: true}
			refused = true
		default:
			br[j] = metadata.BatchResult{Base: next + b.Index}
			ps.st = metadata.AdvanceState(ps.st, b, next+b.Index)
		}
	}
	if refused {
		for j := range br {
			if br[j].Err == nil && !br[j].Duplicate {
				br[j] = metadata.BatchResult{Base: -1, Err: fmt.Errorf("%w: %s/%d: another batch in the same block was a duplicate or out of order; retry", metadata.ErrBlockRefused, a.Topic, a.Partition)}
			}
		}
	}
	return br, sim, refused
}

// merge makes the plan's effects part of the state, once its record is
// written.
func (pl *plan) merge() {
	s := pl.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range pl.next {
		s.topic(k.topic).setNext(pl.topicIDs[k.topic], k.p, v)
	}
	for k, st := range pl.states {
		s.producer(k.id).states[k.tp] = st
	}
	now := time.Now()
	for id := range pl.pids {
		if p := s.producers[id]; p != nil {
			p.activeAt = now // its lease is refreshed after this batch
		}
	}
}
