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
	tick := time.NewTicker(max(r.interval/4, 25*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r.mu.Lock()
		need := r.putFailing || r.lastErr.After(r.lastOK) || time.Since(r.lastOK) >= r.interval
		write := r.putFailing
		r.mu.Unlock()
		if need {
			r.probe(ctx, write)
		}
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
// object store works and etcd answers; otherwise 503 with the reason.
func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	if n.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	if err := n.ready.ready(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := n.meta.Stats(ctx); err != nil {
		http.Error(w, "etcd: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}
