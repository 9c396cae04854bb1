package blockcache

import (
	"encoding/binary"
	"hash/fnv"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/varve-io/varve/internal/rendezvous"
)

// Peer is a live fetch node: its id and base URL.
type Peer struct {
	ID   string
	Addr string
}

// Owners chooses which fetch node owns each block, by rendezvous (highest
// random weight) hashing of the block's object key and offset over the live
// fetch nodes: every node computes the same owner from the same membership,
// and a node joining or leaving moves only the blocks it wins or owned.
// Ownership is per block for compacted objects (ObjectOwner: per object
// for fresh level 0 objects, which are read whole).
//
// Membership comes from the caller (a watch of the registered fetch nodes).
// A peer that fails to answer is suspected for a while and skipped, so its
// blocks move to their next owner at once instead of when its lease expires.
// It is safe for concurrent use.
type Owners struct {
	self string

	mu      sync.RWMutex
	peers   []Peer // sorted by ID
	suspect map[string]time.Time
	// writers are the live ingest nodes without the fetch role (id →
	// address), which answer the fresh objects they wrote from memory
	// (Writer).
	writers map[string]string
}

// NewOwners makes an Owners for the node with id self, alone until Set.
func NewOwners(self string) *Owners {
	return &Owners{self: self, suspect: map[string]time.Time{}}
}

// Self returns this node's id.
func (o *Owners) Self() string { return o.self }

// Set replaces the live nodes (id → address). A node that (re)appears is no
// longer suspected.
func (o *Owners) Set(nodes map[string]string) {
	peers := make([]Peer, 0, len(nodes))
	for id, addr := range nodes {
		peers = append(peers, Peer{ID: id, Addr: addr})
	}
	slices.SortFunc(peers, func(a, b Peer) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	old := map[string]bool{}
	for _, p := range o.peers {
		old[p.ID] = true
	}
	for id := range o.suspect {
		if _, w := o.writers[id]; w {
			continue // a writer's (SetWriters)
		}
		if _, live := nodes[id]; !live || !old[id] {
			delete(o.suspect, id)
		}
	}
	o.peers = peers
}

// SetWriters replaces the live ingest nodes that are not fetch nodes (id →
// address): Writer names one of them as the first to ask for a fresh
// object it wrote.
func (o *Owners) SetWriters(nodes map[string]string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for id := range o.suspect {
		_, was := o.writers[id]
		_, live := nodes[id]
		if was != live {
			delete(o.suspect, id) // gone, or (re)appeared
		}
	}
	o.writers = maps.Clone(nodes)
}

// Writer returns the node writer as the first to ask for the blocks of a
// fresh object it wrote, when it is a live, unsuspected ingest node without
// the fetch role (one with it is the object's owner: ObjectOwner), and not
// this node. It answers from memory only, while it holds the object.
func (o *Owners) Writer(writer string) (Peer, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	addr, ok := o.writers[writer]
	if !ok || writer == o.self {
		return Peer{}, false
	}
	if _, fetch := slices.BinarySearchFunc(o.peers, writer, func(p Peer, id string) int { return strings.Compare(p.ID, id) }); fetch {
		return Peer{}, false
	}
	if until, ok := o.suspect[writer]; ok && time.Now().Before(until) {
		return Peer{}, false
	}
	return Peer{ID: writer, Addr: addr}, true
}

// Peers returns the live nodes, suspected ones included, sorted by id.
func (o *Owners) Peers() []Peer {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return slices.Clone(o.peers)
}

// Suspect skips the node id as an owner for d (or until it registers
// again).
func (o *Owners) Suspect(id string, d time.Duration) {
	if id == o.self {
		return
	}
	o.mu.Lock()
	o.suspect[id] = time.Now().Add(d)
	o.mu.Unlock()
}

// Suspected reports whether the node id is skipped as an owner now.
func (o *Owners) Suspected(id string) bool {
	o.mu.RLock()
	defer o.mu.RUnlock()
	until, ok := o.suspect[id]
	return ok && time.Now().Before(until)
}

// Owner returns the owner of the block at off in object, and whether it
// is another node. With no live node but this one (or none at all) the
// owner is this node.
func (o *Owners) Owner(object string, off int64) (Peer, bool) {
	return o.pick("", func(id string) uint64 { return score(id, object, off) })
}

// ObjectOwner returns the owner of every block of a fresh (level 0) object
// written by the node writer, and whether it is another node: the writer
// itself when it is a live fetch node (it cached the blocks when it stored
// them), else the winner of rendezvous hashing of the object key alone, so
// one node reads the whole object once for the cluster.
func (o *Owners) ObjectOwner(object, writer string) (Peer, bool) {
	return o.pick(writer, func(id string) uint64 { return rendezvous.Score(id, object) })
}

// pick returns the live, unsuspected node preferred (if any), else the
// one of highest weight (ties to the lowest id), and whether it is
// another node than this one.
func (o *Owners) pick(preferred string, weight func(id string) uint64) (Peer, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var best Peer
	var bestScore uint64
	found := false
	now := time.Now()
	for _, p := range o.peers {
		if until, ok := o.suspect[p.ID]; ok && now.Before(until) {
			continue
		}
		if preferred != "" && p.ID == preferred {
			best, found = p, true
			break
		}
		s := weight(p.ID)
		if !found || s > bestScore || (s == bestScore && p.ID < best.ID) {
			best, bestScore, found = p, s, true
		}
	}
	if !found || best.ID == o.self {
		return Peer{ID: o.self}, false
	}
	return best, true
}

// score is the rendezvous weight of node id for a block: FNV-1a of both,
// finished with the SplitMix64 mixer so that similar ids spread well. It
// must stay the same on every node (no per-process seed).
func score(id, object string, off int64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(object))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(off))
	h.Write(b[:])
	return rendezvous.Mix(h.Sum64())
}
