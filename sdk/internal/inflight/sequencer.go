package inflight

import (
	"context"
	"sync"
)

// InitFunc obtains an idempotent identity from the cluster: a new id when
// id is 0, else the next epoch of id (which fences older instances). It
// retries what is worth retrying until ctx is done; the sequencer calls it
// from one goroutine at a time.
type InitFunc func(ctx context.Context, id int64) (id2 int64, epoch int32, err error)

// Outcome is how a numbered batch ended, for Release.
type Outcome int

const (
	// Stored: the cluster acknowledged the batch.
	Stored Outcome = iota
	// Failed: the batch failed for good; its records may or may not be
	// stored, so its sequences can be neither reused nor skipped: the next
	// batch starts a new epoch.
	Failed
	// Expired: the cluster no longer knows the producer id; nothing of it
	// can commit any more. The next batch takes a new id.
	Expired
)

// Numbers are a batch's sequence numbers under one identity.
type Numbers struct {
	Gen   uint64 // the identity's generation in this sequencer
	ID    int64
	Epoch int32
	First []int32 // first sequence of each partition, in the order given to Number
}

// Sequencer is an idempotent producer's identity (id, epoch) and its next
// sequence per (topic, partition). A new identity is taken only when no
// batch numbered under the current one is unresolved, so that a batch whose
// outcome is unknown is never renumbered and no later sequence collides
// with it. It is safe for concurrent use.
type Sequencer struct {
	ctx  context.Context
	init InitFunc

	mu      sync.Mutex
	id      int64
	epoch   int32
	gen     uint64
	ready   bool
	resume  int64 // id to resume on the first init (0: a new one)
	want    Outcome
	wanted  bool  // a new identity is needed (want says which)
	fenced  error // set once: every later Number fails with it
	initing bool
	initErr error // the last failed init, until one succeeds
	open    int   // numbered batches not yet released
	seqs    map[seqKey]int32
	changed chan struct{} // closed and replaced when the state changes
}

type seqKey struct {
	topic string
	p     int32
}

// NewSequencer returns a sequencer taking identities through init; resume
// is an id to resume (bumping its epoch), 0 for a new one. ctx bounds the
// init calls.
func NewSequencer(ctx context.Context, resume int64, init InitFunc) *Sequencer {
	return &Sequencer{ctx: ctx, init: init, resume: resume, seqs: map[seqKey]int32{}, changed: make(chan struct{})}
}

// Identity returns the current id and epoch (0, 0 before the first).
func (s *Sequencer) Identity() (int64, int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id, s.epoch
}

// Number reserves counts[i] sequences of partition parts[i] of topic under
// the current identity. When the identity must be taken or replaced first,
// it returns a channel closed on the next change, to call Number again
// then; err is the producer's fencing, or an init that failed for good.
func (s *Sequencer) Number(topic string, parts, counts []int32) (n Numbers, wait <-chan struct{}, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fenced != nil {
		return Numbers{}, nil, s.fenced
	}
	if !s.ready || s.wanted {
		if s.initErr != nil && !s.initing {
			err, s.initErr = s.initErr, nil // fail this batch; the next one tries again
			return Numbers{}, nil, err
		}
		s.maybeInitLocked()
		return Numbers{}, s.changed, nil
	}
	n = Numbers{Gen: s.gen, ID: s.id, Epoch: s.epoch, First: make([]int32, len(parts))}
	for i, p := range parts {
		k := seqKey{topic, p}
		first := s.seqs[k]
		n.First[i] = first
		s.seqs[k] = first + counts[i]
		if first+counts[i] > 1<<30 {
			s.wantLocked(Failed) // restart sequences well before they wrap
		}
	}
	s.open++
	return n, nil, nil
}

// Release ends a numbered batch with its outcome.
func (s *Sequencer) Release(n Numbers, o Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open--
	if o != Stored && n.Gen == s.gen {
		s.wantLocked(o)
	}
	s.maybeInitLocked()
}

// LastInitError returns why the last identity request failed, if it did.
func (s *Sequencer) LastInitError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.initErr
}

// Fence records that a newer instance took over the id; it returns the
// first fencing error, which every later Number returns.
func (s *Sequencer) Fence(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fenced == nil {
		s.fenced = err
		s.broadcastLocked()
	}
	return s.fenced
}

func (s *Sequencer) wantLocked(o Outcome) {
	if !s.wanted || o == Expired {
		s.want = o
	}
	s.wanted = true
}

// maybeInitLocked starts taking a new identity when one is needed and no
// numbered batch is unresolved.
func (s *Sequencer) maybeInitLocked() {
	if s.initing || s.open > 0 || s.fenced != nil || (s.ready && !s.wanted) {
		return
	}
	id := s.id
	if !s.ready && id == 0 {
		id = s.resume
	}
	if s.wanted && s.want == Expired {
		id = 0
	}
	gen := s.gen
	s.initing = true
	go func() {
		nid, epoch, err := s.init(s.ctx, id)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.initing = false
		if err != nil {
			s.initErr = err
		} else if s.gen == gen {
			s.id, s.epoch = nid, epoch
			s.gen++
			s.ready, s.wanted, s.initErr = true, false, nil
			clear(s.seqs)
		}
		s.broadcastLocked()
	}()
}

func (s *Sequencer) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
