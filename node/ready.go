package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
	"github.com/varve-io/varve/tier"
)

// DefaultStoreProbeInterval is how often readiness probes an idle object
// store.
const DefaultStoreProbeInterval = 5 * time.Second

// probePrefix holds the objects of write probes (deleted right after).
const probePrefix = "_varve/probe/"

// readiness tells whether the node can flush: whether the object store
// works, learnt from the segment PUTs the node makes anyway, and from a
// probe when none told it recently: a HEAD while the store answers, a
// small PUT (deleted at once) after a PUT failed, so that a store that
// answers reads but refuses writes keeps the node unready.
//
// /readyz answers 503 while the store fails, so a load balancer sends
// producers to nodes that can store their records.
type readiness struct {
	store    tier.Store // undecorated: probes are not recorded twice
	interval time.Duration
	nodeID   string

	mu         sync.Mutex
	lastOK     time.Time // last answer from the store
	lastErr    time.Time // last failure
	err        error     // the last failure
	putFailing bool      // the last PUT (segment or probe) failed

	// seq follows the sequencer leader for an ingest node on commit_path
	// sequencer (nil otherwise); set before run starts.
	seq *seqLeader
}

func newReadiness(store tier.Store, interval time.Duration, nodeID string) *readiness {
	if interval <= 0 {
		interval = DefaultStoreProbeInterval
	}
	return &readiness{store: store, interval: interval, nodeID: nodeID, lastOK: time.Now()}
}

// record notes the outcome of one store call; put marks a write.
func (r *readiness) record(ctx context.Context, put bool, err error) {
	if err != nil && ctx.Err() != nil {
		return // the caller gave up; says nothing about the store
	}
	answered := err == nil || errors.Is(err, tier.ErrExists) || errors.Is(err, tier.ErrNotFound)
	r.mu.Lock()
	defer r.mu.Unlock()
	if answered {
		r.lastOK = time.Now()
		if put {
			r.putFailing = false
		}
		return
	}
	r.lastErr, r.err = time.Now(), err
	if put {
		r.putFailing = true
	}
}

// ready returns nil when the store works, else why not.
func (r *readiness) ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.putFailing:
		return fmt.Errorf("object store refuses writes since %s: %v", r.lastErr.UTC().Format(time.RFC3339), r.err)
	case r.lastErr.After(r.lastOK):
		return fmt.Errorf("object store fails since %s: %v", r.lastErr.UTC().Format(time.RFC3339), r.err)
	case time.Since(r.lastOK) > 3*r.interval:
		return fmt.Errorf("object store has not answered since %s", r.lastOK.UTC().Format(time.RFC3339))
	}
	return nil
}

// run probes the store until ctx ends, whenever nothing told how it is
// within the interval or it last failed.
func (r *readiness) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if r.seq != nil {
		wg.Go(func() { r.seq.run(ctx) })
	}
	pollEvery(ctx, r.interval, nil, func() {
		r.mu.Lock()
		need := r.putFailing || r.lastErr.After(r.lastOK) || time.Since(r.lastOK) >= r.interval
		write := r.putFailing
		r.mu.Unlock()
		if need {
			r.probe(ctx, write)
		}
	})
}

// pollEvery calls check every quarter of interval (at least every 25 ms),
// and at once whenever wake fires (nil: never), until ctx ends.
func pollEvery(ctx context.Context, interval time.Duration, wake <-chan struct{}, check func()) {
	tick := time.NewTicker(max(interval/4, 25*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-wake:
		}
		check()
	}
}

func (r *readiness) probe(ctx context.Context, write bool) {
	pctx, cancel := context.WithTimeout(ctx, r.interval)
	defer cancel()
	if !write {
		_, err := r.store.Head(pctx, probePrefix+r.nodeID)
		r.record(pctx, false, err)
		return
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	key := probePrefix + r.nodeID + "-" + hex.EncodeToString(b)
	err := r.store.PutIfAbsent(pctx, key, []byte("probe"))
	r.record(pctx, true, err)
	if err == nil {
		_ = r.store.Delete(pctx, key)
	}
}

// watchedStore tells readiness how the node's segment PUTs fare.
type watchedStore struct {
	tier.Store
	r *readiness
}

var _ tier.Store = watchedStore{}

func (s watchedStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	err := s.Store.PutIfAbsent(ctx, key, data)
	s.r.record(ctx, true, err)
	return err
}

// watchStore makes the node's readiness follow its object store; New
// calls it on the store before any role uses it.
func (n *Node) watchStore(store tier.Store) tier.Store {
	n.ready = newReadiness(store, n.cfg.StoreProbeInterval, n.cfg.NodeID)
	return watchedStore{Store: store, r: n.ready}
}

// readyz answers 200 when the node can serve: it is not draining, its
// object store works, an ingest node on commit_path sequencer knows a
// reachable sequencer leader, and etcd answers; otherwise 503 with the
// reason.
func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	if n.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if err := n.ready.ready(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if s := n.ready.seq; s != nil {
		if err := s.ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	ctx, cancel := context.WithTimeout(metadata.WithCaller(r.Context(), metadata.CallerNode), 2*time.Second)
	defer cancel()
	if _, err := n.meta.Stats(ctx); err != nil {
		http.Error(w, "etcd: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// seqLeader tells whether an ingest node on commit_path sequencer can
// commit: some sequencer leads (learnt from one etcd watch of the
// election, seqlog.WatchLeader, not read per /readyz) and answers (its
// /healthz, probed when the leader changes and then every probe interval
// while another node leads). Without one every produce waits out the
// commit timeout, so /readyz turns 503 and a load balancer sends producers
// elsewhere. A failover shows as a short leaderless spell (a resigned
// leader is replaced within the time a candidate takes to win; a dead one
// within the election lease): /readyz may answer 503 for that long.
type seqLeader struct {
	log      *seqlog.Log
	http     *http.Client
	interval time.Duration
	self     func() string // this node's candidate id ("" without one)

	mu       sync.Mutex
	known    bool      // the watch answered once
	id       string    // the leader ("" none)
	since    time.Time // when id (or the watch's failure) began
	watchErr error     // etcd could not tell
	probed   string    // the leader probeErr and probedAt are about
	probedAt time.Time
	probeErr error
	changed  chan struct{} // poked when id changes
}

func newSeqLeader(meta *metadata.Client, client *http.Client, interval time.Duration, self func() string) *seqLeader {
	if interval <= 0 {
		interval = DefaultStoreProbeInterval
	}
	return &seqLeader{log: seqlog.New(meta), http: client, interval: interval, self: self,
		since: time.Now(), changed: make(chan struct{}, 1)}
}

// ready returns nil while a reachable leader is known, else why not.
func (s *seqLeader) ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	at := s.since.UTC().Format(time.RFC3339)
	switch {
	case s.watchErr != nil:
		return fmt.Errorf("sequencer leader unknown since %s (commit_path sequencer): %v", at, s.watchErr)
	case !s.known:
		return fmt.Errorf("sequencer leader not known yet (commit_path sequencer)")
	case s.id == "":
		return fmt.Errorf("no sequencer elected since %s: this ingest node (commit_path sequencer) cannot commit; run a node with the sequence role", at)
	case s.probeErr != nil && s.probed == s.id:
		return fmt.Errorf("sequencer leader %s unreachable since %s: %v", s.id, s.probedAt.UTC().Format(time.RFC3339), s.probeErr)
	}
	return nil
}

// run follows the election and probes the leader until ctx ends.
func (s *seqLeader) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.log.WatchLeader(ctx, s.observe) })
	pollEvery(ctx, s.interval, s.changed, func() {
		s.mu.Lock()
		id := s.id
		need := id != "" && (id != s.probed || s.probeErr != nil || time.Since(s.probedAt) >= s.interval)
		s.mu.Unlock()
		if need {
			s.probe(ctx, id)
		}
	})
}

// observe records what the election watch reports: the leader's id, or
// the watch's error.
func (s *seqLeader) observe(id string, err error) {
	s.mu.Lock()
	if err != nil {
		if s.watchErr == nil {
			s.since = time.Now()
		}
		s.watchErr = err
		s.mu.Unlock()
		return
	}
	if !s.known || s.watchErr != nil || id != s.id {
		s.since = time.Now()
	}
	s.known, s.watchErr, s.id = true, nil, id
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// probe asks the leader's /healthz (this node's own sequencer answers in
// process: nothing to ask).
func (s *seqLeader) probe(ctx context.Context, id string) {
	var err error
	if id != s.self() {
		err = s.healthz(ctx, id)
	}
	if ctx.Err() != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil || s.probed != id || s.probeErr == nil {
		s.probedAt = time.Now()
	}
	s.probed, s.probeErr = id, err
}

func (s *seqLeader) healthz(ctx context.Context, id string) error {
	pctx, cancel := context.WithTimeout(ctx, s.interval)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, id+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s/healthz: %s", id, resp.Status)
	}
	return nil
}

// watchSequencerLeader makes the readiness of an ingest node on
// commit_path sequencer follow the sequencer leader (seqLeader); the
// committer calls it with the client it reaches peers with.
func (n *Node) watchSequencerLeader(client *http.Client) {
	n.ready.seq = newSeqLeader(n.meta, client, n.cfg.StoreProbeInterval, func() string {
		n.seqw.mu.Lock()
		defer n.seqw.mu.Unlock()
		return n.seqw.self
	})
}
