package sequencer

import (
	"sort"
	"sync"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

// tp names a partition.
type tp struct {
	topic string
	p     int32
}

// topicState is what the leader holds of one topic.
type topicState struct {
	id   string
	next []int64 // high watermark by partition
	// cfg is the topic as read at cfgRev (nil: not found); loaded false
	// until read in this term (recovered state has the watermarks only).
	cfg       *metadata.Topic
	cfgRev    int64 // the revision it was read at
	cfgModRev int64 // its key's ModRevision (0: not found)
	loaded    bool
	// seeded: the watermarks were merged with the direct path's
	// partition keys in this term.
	seeded bool
}

// producer is what the leader holds of one idempotent producer.
type producer struct {
	info     seqlog.ProducerInfo
	infoRev  int64
	loadedAt time.Time // zero: never read in this term
	// activeAt is when a batch of the producer was last written in this
	// term (its lease refreshed then); zero: none.
	activeAt time.Time
	states   map[tp]*metadata.ProducerState
}

// batchCommits lists the commit ids of one batch, for expiry.
type batchCommits struct {
	batch uint64
	at    time.Time
	ids   []string
}

// state is the leader's in-memory state. Only the leader's loop writes
// it; mu guards it against ReadProducer's readers.
type state struct {
	mu        sync.RWMutex
	batch     uint64 // last committed batch
	topics    map[string]*topicState
	producers map[int64]*producer
	// infoAge is how long a producer's identity read from etcd is
	// trusted (Config.infoMaxAge).
	infoAge time.Duration
	// commits maps each commit answered in the dedupe window to its
	// batch: a retry (rare) is answered from that record, reread from
	// etcd, so the answers themselves are not held in memory.
	commits map[string]uint64
	recent  []batchCommits // oldest first
	// reads are the identities ReadProducer read from etcd in the last
	// readAge, by producer id (readsMu guards them): a producer's first
	// requests touch many partitions before its first batch is written,
	// and each would otherwise read etcd again.
	readsMu sync.Mutex
	reads   map[int64]recentRead
}

// recentRead is a producer identity ReadProducer read from etcd at at.
type recentRead struct {
	info seqlog.ProducerInfo
	at   time.Time
}

// readAge is how long ReadProducer answers again from an identity it read
// from etcd, as held (the ingest node only accepts on it): long enough
// for a new producer's first batch to be written, after which heldInfo
// answers.
const readAge = time.Second

// maxReads bounds the identities ReadProducer remembers.
const maxReads = 4096

func newState(infoAge time.Duration) *state {
	return &state{topics: map[string]*topicState{}, producers: map[int64]*producer{}, commits: map[string]uint64{}, infoAge: infoAge}
}

func (s *state) topic(name string) *topicState {
	t := s.topics[name]
	if t == nil {
		t = &topicState{}
		s.topics[name] = t
	}
	return t
}

func (s *state) producer(id int64) *producer {
	p := s.producers[id]
	if p == nil {
		p = &producer{states: map[tp]*metadata.ProducerState{}}
		s.producers[id] = p
	}
	return p
}

// heldInfo returns producer id's identity as the leader holds it, if it can
// answer a batch of epoch (see Sequencer.ReadProducer): read from etcd in
// this term no longer than infoMaxAge before now, known, of an epoch not
// older than epoch, and written in a batch within half its state TTL (its
// lease, refreshed after each batch, cannot have expired: etcd's deletion
// of an expired producer has no revision the leader could compare).
func (s *state) heldInfo(id int64, epoch int32, now time.Time) (seqlog.ProducerInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.producers[id]
	if p == nil || p.loadedAt.IsZero() || now.Sub(p.loadedAt) > s.infoAge || !p.info.Known || epoch > p.info.Epoch ||
		p.activeAt.IsZero() || now.Sub(p.activeAt) > p.info.TTL/2 {
		return seqlog.ProducerInfo{}, false
	}
	return p.info, true
}

// readInfo returns the identity of producer id ReadProducer read from
// etcd within readAge of now, if it can answer a batch of epoch: known
// and of an epoch not older than epoch.
func (s *state) readInfo(id int64, epoch int32, now time.Time) (seqlog.ProducerInfo, bool) {
	s.readsMu.Lock()
	defer s.readsMu.Unlock()
	r, ok := s.reads[id]
	if !ok || now.Sub(r.at) > readAge || !r.info.Known || epoch > r.info.Epoch {
		return seqlog.ProducerInfo{}, false
	}
	return r.info, true
}

// rememberRead keeps the identity of producer id ReadProducer read from
// etcd at now, dropping those older than readAge when the bound is
// reached.
func (s *state) rememberRead(id int64, info seqlog.ProducerInfo, now time.Time) {
	s.readsMu.Lock()
	defer s.readsMu.Unlock()
	if s.reads == nil {
		s.reads = map[int64]recentRead{}
	}
	if len(s.reads) >= maxReads {
		for k, r := range s.reads {
			if now.Sub(r.at) > readAge {
				delete(s.reads, k)
			}
		}
		if len(s.reads) >= maxReads {
			clear(s.reads)
		}
	}
	s.reads[id] = recentRead{info: info, at: now}
}

// producerStates returns producer id's states on partitions of topic (the
// partitions without one are absent).
func (s *state) producerStates(id int64, topic string, partitions []int32) map[int32]*metadata.ProducerState {
	states := make(map[int32]*metadata.ProducerState, len(partitions))
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p := s.producers[id]; p != nil {
		for _, part := range partitions {
			if st := p.states[tp{topic, part}]; st != nil {
				states[part] = st
			}
		}
	}
	return states
}

// setNext sets a partition's high watermark, growing the topic as needed;
// a new topic id (deleted and created again) starts from zero.
func (t *topicState) setNext(id string, p int32, next int64) {
	if t.id != id {
		t.id, t.next = id, nil
	}
	for int32(len(t.next)) <= p {
		t.next = append(t.next, 0)
	}
	t.next[p] = next
}

// apply adds a committed record to the state; withState false registers
// only its commits (the caller applied its effects already).
func (s *state) apply(r *seqlog.Record, withState bool, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bc := batchCommits{batch: r.Batch, at: at}
	for _, c := range r.Commits {
		s.commits[c.ID] = r.Batch
		bc.ids = append(bc.ids, c.ID)
		if !withState {
			continue
		}
		for i, a := range c.Appends {
			res := c.Results[i]
			if res.Err != nil || res.Base < 0 {
				continue
			}
			s.topic(a.Topic).setNext(r.TopicIDs[a.Topic], a.Partition, res.Base+a.Records)
			for j, b := range a.Batches {
				p := s.producer(b.ID)
				k := tp{a.Topic, a.Partition}
				p.states[k] = metadata.AdvanceState(p.states[k], b, res.Batches[j].Base)
			}
		}
	}
	s.recent = append(s.recent, bc)
	s.batch = max(s.batch, r.Batch)
}

// expire forgets commits answered before cutoff.
func (s *state) expire(cutoff time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for n < len(s.recent) && s.recent[n].at.Before(cutoff) {
		for _, id := range s.recent[n].ids {
			delete(s.commits, id)
		}
		n++
	}
	s.recent = s.recent[n:]
}

// restore loads a checkpoint; its commits count as answered at now.
func (s *state) restore(cp *seqlog.Checkpoint, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batch = cp.Batch
	for _, r := range cp.Commits {
		s.commits[r.ID] = r.Batch
		if n := len(s.recent); n == 0 || s.recent[n-1].batch != r.Batch {
			s.recent = append(s.recent, batchCommits{batch: r.Batch, at: now})
		}
		s.recent[len(s.recent)-1].ids = append(s.recent[len(s.recent)-1].ids, r.ID)
	}
	for _, ts := range cp.Topics {
		s.topics[ts.Name] = &topicState{id: ts.ID, next: ts.Next}
	}
	for _, ps := range cp.Producers {
		p := s.producer(ps.ID)
		for _, st := range ps.States {
			v := st.State
			p.states[tp{st.Topic, st.Partition}] = &v
		}
	}
}

// checkpoint encodes the state after its last batch.
func (s *state) checkpoint() *seqlog.Checkpoint {
	s.mu.RLock()
	defer s.mu.RUnlock()
	cp := &seqlog.Checkpoint{Batch: s.batch}
	for _, bc := range s.recent {
		for _, id := range bc.ids {
			cp.Commits = append(cp.Commits, seqlog.CommitRef{ID: id, Batch: bc.batch})
		}
	}
	for name, t := range s.topics {
		if len(t.next) > 0 {
			cp.Topics = append(cp.Topics, seqlog.TopicState{Name: name, ID: t.id, Next: append([]int64(nil), t.next...)})
		}
	}
	sort.Slice(cp.Topics, func(i, j int) bool { return cp.Topics[i].Name < cp.Topics[j].Name })
	for id, p := range s.producers {
		ps := seqlog.ProducerStates{ID: id}
		for k, st := range p.states {
			ps.States = append(ps.States, seqlog.PartitionState{Topic: k.topic, Partition: k.p, State: *st})
		}
		if len(ps.States) > 0 {
			cp.Producers = append(cp.Producers, ps)
		}
	}
	sort.Slice(cp.Producers, func(i, j int) bool { return cp.Producers[i].ID < cp.Producers[j].ID })
	return cp
}
