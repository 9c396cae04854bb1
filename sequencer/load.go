package sequencer

import (
	"context"
	"time"
)

// load reads from etcd what the batch is decided against and the state
// does not hold fresh: topics not read in this term, producers not read
// for infoMaxAge or whose lease may have run out (see mayHaveExpired; all
// of them when force, after a fence failed). It
// returns the fence: the oldest revisions the batch's topics and producers
// were read at.
func (s *Sequencer) load(ctx context.Context, st *state, batch []*request, force bool) (fence fenceRevs, err error) {
	var topics []string
	var pids []int64
	seenT, seenP := map[string]bool{}, map[int64]bool{}
	now := time.Now()
	for _, r := range batch {
		for _, a := range r.appends {
			if !seenT[a.Topic] {
				seenT[a.Topic] = true
				if t := st.topics[a.Topic]; force || t == nil || !t.loaded {
					topics = append(topics, a.Topic)
				}
			}
			for _, b := range a.Batches {
				if !seenP[b.ID] {
					seenP[b.ID] = true
					if p := st.producers[b.ID]; force || p == nil || now.Sub(p.loadedAt) > s.cfg.infoMaxAge || p.mayHaveExpired(now) {
						pids = append(pids, b.ID)
					}
				}
			}
		}
	}
	if len(pids) > 0 && !force {
		// Producers held longer than half infoMaxAge are reread with
		// these, so that the producers of a steady load come of age
		// together: one read a minute, not one per producer.
		for id, p := range st.producers {
			if !seenP[id] && !p.loadedAt.IsZero() && p.info.Known && now.Sub(p.loadedAt) > s.cfg.infoMaxAge/2 {
				pids = append(pids, id)
			}
		}
	}
	if err := s.loadTopics(ctx, st, topics); err != nil {
		return fence, err
	}
	if err := s.loadProducers(ctx, st, pids, now); err != nil {
		return fence, err
	}
	fence.topicMods = make(map[string]int64, len(seenT))
	for name := range seenT {
		fence.topics = minRev(fence.topics, st.topics[name].cfgRev)
		fence.topicMods[name] = st.topics[name].cfgModRev
	}
	for id := range seenP {
		fence.producers = minRev(fence.producers, st.producers[id].infoRev)
	}
	return fence, nil
}

func minRev(a, b int64) int64 {
	if a == 0 || b < a {
		return b
	}
	return a
}

func (s *Sequencer) loadTopics(ctx context.Context, st *state, names []string) error {
	if len(names) == 0 {
		return nil
	}
	cfgs, rev, err := s.log.LoadTopics(ctx, names)
	if err != nil {
		return err
	}
	for _, name := range names {
		cfg := cfgs[name].Topic
		var seed []int64
		if t := st.topics[name]; cfg != nil && (t == nil || !t.seeded || t.id != cfg.ID) {
			// Continue from the direct path's watermarks (a cluster that
			// committed directly before), read once per term and topic.
			if seed, err = s.log.PartitionNexts(ctx, name, cfg.Partitions); err != nil {
				return err
			}
		}
		st.mu.Lock()
		t := st.topic(name)
		t.cfg, t.cfgRev, t.cfgModRev, t.loaded = cfg, rev, cfgs[name].ModRev, true
		if cfg != nil {
			if t.id != cfg.ID {
				t.id, t.next, t.seeded = cfg.ID, nil, false
			}
			for p, n := range seed {
				if p >= len(t.next) || t.next[p] < n {
					t.setNext(cfg.ID, int32(p), n)
				}
			}
			t.seeded = true
		}
		st.mu.Unlock()
	}
	return nil
}

func (s *Sequencer) loadProducers(ctx context.Context, st *state, ids []int64, now time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	var fresh []int64 // first read in this term: also their direct-path states
	for _, id := range ids {
		if p := st.producers[id]; p == nil || p.loadedAt.IsZero() {
			fresh = append(fresh, id)
		}
	}
	infos, rev, err := s.log.LoadProducers(ctx, ids, fresh)
	s.producerLoads.Add(1)
	if err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, id := range ids {
		p := st.producer(id)
		p.info, p.infoRev, p.loadedAt = infos[id], rev, now
		if !p.info.Known {
			// Expired or never issued: ids are not reused and an expired
			// id cannot be initialized again, so its states are dead.
			clear(p.states)
		}
		for _, d := range infos[id].Direct {
			k := tp{d.Topic, d.Partition}
			if p.states[k] == nil {
				v := d.State
				p.states[k] = &v
			}
		}
	}
	return nil
}

// fenceRevs are the revisions a batch's fence compares with.
type fenceRevs struct {
	topics, producers int64
	topicMods         map[string]int64
}

// mayHaveExpired reports whether etcd may have deleted known producer p
// when its state TTL ran out: no batch of it was written in this term, or
// none within half its TTL (each refreshes its lease, at most TTL/8
// late). A deletion by lease has no revision the batch's fence could
// compare, so such a producer is read again rather than decided on the
// identity held, as on the direct path, where an expired producer's next
// batch is refused as unknown.
func (p *producer) mayHaveExpired(now time.Time) bool {
	return p.info.Known && p.info.TTL > 0 && (p.activeAt.IsZero() || now.Sub(p.activeAt) > p.info.TTL/2)
}
