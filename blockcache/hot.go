package blockcache

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A fetch node asks the owner of a fresh object for the blocks of the
// partitions it has served lately (its hot partitions), not the whole
// object: with N fetch nodes and consumers spread over them, each node
// reads about 1/N of the partitions, and taking every block of every
// peer's object made every node receive, unmarshal and cache the whole
// cluster's ingest. See docs/cache.md, "Tail reads by object".

const (
	// hotFor is how long a partition stays hot after its last read.
	hotFor = time.Minute
	// hotRebuild is how often the hot list sent with an ask is rebuilt
	// (a partition read for the first time rebuilds it at once).
	hotRebuild = time.Second
	// hotSettle is how long the hot partitions must not have grown before
	// an ask names them: while consumers start or move (a rebalance, many
	// consumers catching up at once), the partitions read change faster
	// than objects are asked for, and a block left out of an answer costs
	// a call of its own, so the whole object is asked for until they
	// settle.
	hotSettle = 5 * time.Second
	// MaxAskPartitions bounds the partitions one GetObject call names;
	// a node with more hot partitions asks for the whole object.
	MaxAskPartitions = 100_000
)

// TopicPartitions names partitions of one topic.
type TopicPartitions struct {
	Topic      string
	Partitions []int32
}

type hotKey struct {
	topic string
	p     int32
}

// hotPartitions are the partitions this node was asked to fetch lately.
type hotPartitions struct {
	m       sync.Map // hotKey -> *atomic.Int64: unix nanoseconds of the last read
	stale   atomic.Bool
	lastNew atomic.Int64  // unix nanoseconds of the last partition first read
	pruned  atomic.Int64  // unix nanoseconds of the last pruning
	settle  time.Duration // hotSettle; tests shorten it

	mu    sync.Mutex
	built time.Time
	list  []TopicPartitions
}

// touch notes a fetch of topic/p at now (unix nanoseconds): one
// lock-free lookup for a partition read in the last hotRebuild.
func (h *hotPartitions) touch(topic string, p int32, now int64) {
	k := hotKey{topic, p}
	if v, ok := h.m.Load(k); ok {
		t := v.(*atomic.Int64)
		if now-t.Load() > int64(hotRebuild) {
			t.Store(now)
		}
		return
	}
	v := new(atomic.Int64)
	v.Store(now)
	if _, loaded := h.m.LoadOrStore(k, v); !loaded {
		h.lastNew.Store(now)
		h.stale.Store(true) // asks from now on name it
		// Partitions no longer read go, even on a node that asks no
		// peer (a single node, whose topics come and go).
		if last := h.pruned.Load(); now-last > int64(hotFor) && h.pruned.CompareAndSwap(last, now) {
			h.prune(now - int64(hotFor))
		}
	}
}

// prune forgets the partitions last read before cutoff (unix nanoseconds).
func (h *hotPartitions) prune(cutoff int64) {
	h.m.Range(func(k, v any) bool {
		if v.(*atomic.Int64).Load() < cutoff {
			h.m.Delete(k)
		}
		return true
	})
}

// partitions returns the hot partitions, by topic and partition, for an
// ask at now; nil (ask for the whole object) while they have not settled,
// when there are more than MaxAskPartitions, or none.
func (h *hotPartitions) partitions(now time.Time) []TopicPartitions {
	if now.UnixNano()-h.lastNew.Load() < int64(h.settle) {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stale.Load() && now.Sub(h.built) < hotRebuild {
		return h.list
	}
	h.stale.Store(false)
	h.built = now
	byTopic := map[string][]int32{}
	n := 0
	cutoff := now.Add(-hotFor).UnixNano()
	h.pruned.Store(now.UnixNano())
	h.m.Range(func(k, v any) bool {
		if v.(*atomic.Int64).Load() < cutoff {
			h.m.Delete(k)
			return true
		}
		hk := k.(hotKey)
		byTopic[hk.topic] = append(byTopic[hk.topic], hk.p)
		n++
		return true
	})
	if n == 0 || n > MaxAskPartitions {
		h.list = nil
		return nil
	}
	list := make([]TopicPartitions, 0, len(byTopic))
	for t, ps := range byTopic {
		slices.Sort(ps)
		list = append(list, TopicPartitions{Topic: t, Partitions: ps})
	}
	slices.SortFunc(list, func(a, b TopicPartitions) int { return cmp.Compare(a.Topic, b.Topic) })
	h.list = list
	return list
}

// partitionFilter answers whether a block of topic/p was asked for; a
// block of unknown partition (topic "") always is. It remembers the last
// topic looked up (an object's blocks come topic by topic), so it is for
// one goroutine.
type partitionFilter struct {
	m      map[string][]int32 // sorted partitions by topic
	last   string
	lastPs []int32
}

// newPartitionFilter returns the filter of parts; nil (every block) when
// parts is empty.
func newPartitionFilter(parts []TopicPartitions) *partitionFilter {
	if len(parts) == 0 {
		return nil
	}
	f := &partitionFilter{m: make(map[string][]int32, len(parts))}
	for _, tp := range parts {
		ps := slices.Clone(tp.Partitions)
		slices.Sort(ps)
		f.m[tp.Topic] = ps
	}
	return f
}

func (f *partitionFilter) wants(topic string, p int32) bool {
	if f == nil || topic == "" {
		return true
	}
	if topic != f.last || f.lastPs == nil {
		f.last, f.lastPs = topic, f.m[topic]
	}
	_, ok := slices.BinarySearch(f.lastPs, p)
	return ok
}
