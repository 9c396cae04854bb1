package query

import (
	"container/list"
	"sync"

	"github.com/varve-io/varve/tier/segment"
)

// BlockCache is a byte-bounded LRU of decoded blocks, keyed by object and
// block offset. Blocks are immutable, so entries never go stale.
type BlockCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	ll    *list.List
	items map[blockKey]*list.Element
}

type blockKey struct {
	object string
	off    int64
}

type cacheEntry struct {
	key  blockKey
	recs []segment.Record
	size int64
}

// NewBlockCache makes a cache holding up to maxBytes of decoded records.
func NewBlockCache(maxBytes int64) *BlockCache {
	return &BlockCache{max: maxBytes, ll: list.New(), items: map[blockKey]*list.Element{}}
}

// Get returns a cached block.
func (c *BlockCache) Get(object string, off int64) ([]segment.Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[blockKey{object, off}]; ok {
		c.ll.MoveToFront(el)
		return el.Value.(*cacheEntry).recs, true
	}
	return nil, false
}

// Put adds a block of rawBytes decoded bytes, evicting the least recently
// used blocks beyond the bound. Blocks larger than the whole cache are not kept.
func (c *BlockCache) Put(object string, off int64, recs []segment.Record, rawBytes int64) {
	// A decoded Record is an 80-byte struct plus its header slice.
	size := rawBytes + 128
	for i := range recs {
		size += 80 + int64(len(recs[i].Headers))*40
	}
	if size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	k := blockKey{object, off}
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, recs: recs, size: size})
	c.size += size
	for c.size > c.max {
		el := c.ll.Back()
		e := el.Value.(*cacheEntry)
		c.ll.Remove(el)
		delete(c.items, e.key)
		c.size -= e.size
	}
}

// Size returns the bytes held.
func (c *BlockCache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
