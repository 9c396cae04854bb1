package ingest

import "github.com/varve-io/varve/metadata"

// maxRememberedStates bounds the producer states a node remembers (about
// 200 bytes each).
const maxRememberedStates = 1 << 16

// producerCache remembers idempotent producers' states as this node's own
// commits wrote them (and as its reads found them), so that the common
// request — the next batch of a producer that wrote through this node — is
// accepted without reading etcd. It is advisory only: the commit
// transaction decides every batch again against etcd. A remembered state
// may be stale (another node committed for the producer, or a new epoch was
// issued), so it is used only to accept; a batch it would not accept is
// decided on a fresh read. All methods run under Ingester.mu.
type producerCache struct {
	producers map[int64]*rememberedProducer
	states    int
}

type rememberedProducer struct {
	epoch int32
	// states per partition; a nil value means known to have no state.
	states map[tpKey]*metadata.ProducerState
}

func newProducerCache() *producerCache {
	return &producerCache{producers: map[int64]*rememberedProducer{}}
}

// view returns a view of producer id on parts of topic, or nil if any part
// is not remembered.
func (c *producerCache) view(id int64, topic string, parts []int32) *metadata.ProducerView {
	rp := c.producers[id]
	if rp == nil {
		return nil
	}
	states := make(map[int32]*metadata.ProducerState, len(parts))
	for _, p := range parts {
		st, ok := rp.states[tpKey{topic, p}]
		if !ok {
			return nil
		}
		states[p] = st
	}
	return metadata.RememberedView(id, topic, rp.epoch, states)
}

// remember stores what a fresh read found: nothing is remembered of an
// unknown producer.
func (c *producerCache) remember(v *metadata.ProducerView, id int64, topic string, parts []int32) {
	epoch, known := v.Epoch()
	if !known {
		c.forget(id)
		return
	}
	rp := c.producers[id]
	if rp == nil || rp.epoch != epoch {
		c.forget(id)
		rp = &rememberedProducer{epoch: epoch, states: map[tpKey]*metadata.ProducerState{}}
		c.producers[id] = rp
	}
	for _, p := range parts {
		c.set(rp, tpKey{topic, p}, v.State(p))
	}
	c.evict()
}

// committed records that batch b of block tp committed at base.
func (c *producerCache) committed(tp tpKey, b metadata.ProducerBatch, base int64) {
	rp := c.producers[b.ID]
	if rp == nil || rp.epoch != b.Epoch {
		c.forget(b.ID)
		rp = &rememberedProducer{epoch: b.Epoch, states: map[tpKey]*metadata.ProducerState{}}
		c.producers[b.ID] = rp
	}
	c.set(rp, tp, metadata.AdvanceState(rp.states[tp], b, base))
	c.evict()
}

func (c *producerCache) set(rp *rememberedProducer, tp tpKey, st *metadata.ProducerState) {
	if _, ok := rp.states[tp]; !ok {
		c.states++
	}
	rp.states[tp] = st
}

// forget drops everything remembered of producer id.
func (c *producerCache) forget(id int64) {
	if rp := c.producers[id]; rp != nil {
		c.states -= len(rp.states)
		delete(c.producers, id)
	}
}

// evict drops producers (in map order: at random) until the bound holds
// with some room.
func (c *producerCache) evict() {
	if c.states <= maxRememberedStates {
		return
	}
	for id := range c.producers {
		c.forget(id)
		if c.states <= maxRememberedStates*3/4 {
			return
		}
	}
}
