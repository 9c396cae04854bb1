package blockcache

import (
	"container/list"
	"sync"

	"github.com/varve-io/varve/tier/segment"
)

// Memory is the memory tier: a byte-bounded LRU of decoded blocks,
// keyed by object and block offset. Blocks are immutable, so entries never
// go stale. An entry may also keep the block's stored (compressed) bytes, so
// the node can serve the block to the other fetch nodes it owns it for
// without reading it again.
type Memory struct {
	mu    sync.Mutex
	max   int64
	size  int64
	ll    *list.List
	items map[blockKey]*list.Element
	// objects remembers the blocks of recent objects (RememberObject).
	objects layouts
}

type blockKey struct {
	object string
	off    int64
}

type cacheEntry struct {
	key    blockKey
	recs   []segment.Record
	stored []byte // nil unless kept for peers
	size   int64
	// lazy is set for an entry added by PutEncoded: recs are decoded from
	// stored at the first Get.
	lazy *lazyRecords
}

// lazyRecords decodes a block's stored bytes once, at the first Get.
type lazyRecords struct {
	once    sync.Once
	records int64 // the block's count: a decode giving another is corrupt
	recs    []segment.Record
	ok      bool
}

// NewMemory makes a cache holding up to maxBytes of decoded records.
func NewMemory(maxBytes int64) *Memory {
	return &Memory{max: maxBytes, ll: list.New(), items: map[blockKey]*list.Element{}}
}

// Get returns a cached block. A block added by PutEncoded is decoded here,
// once, outside the cache's lock; one that does not decode is dropped and
// missed.
func (c *Memory) Get(object string, off int64) ([]segment.Record, bool) {
	k := blockKey{object, off}
	c.mu.Lock()
	el, ok := c.items[k]
	if !ok {
		c.mu.Unlock()
		return nil, false
	}
	c.ll.MoveToFront(el)
	e := el.Value.(*cacheEntry)
	lazy := e.lazy
	recs := e.recs
	c.mu.Unlock()
	if lazy == nil {
		return recs, true
	}
	lazy.once.Do(func() {
		recs, err := segment.DecodeBlock(e.stored)
		lazy.recs, lazy.ok = recs, err == nil && int64(len(recs)) == lazy.records
	})
	if !lazy.ok {
		c.mu.Lock()
		if el, ok := c.items[k]; ok && el.Value.(*cacheEntry) == e {
			c.ll.Remove(el)
			delete(c.items, k)
			c.size -= e.size
		}
		c.mu.Unlock()
		return nil, false
	}
	return lazy.recs, true
}

// PutEncoded adds a block by its stored bytes only, a block of records
// records and rawBytes decoded bytes: it is decoded at the first Get, so a
// block only ever shipped as stored (Stored) is never decoded. Its size
// counts both forms from the start. An entry already cached is kept.
func (c *Memory) PutEncoded(object string, off int64, stored []byte, records, rawBytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putEncodedLocked(object, off, stored, records, rawBytes)
}

// putEncodedLocked is PutEncoded with c.mu held.
func (c *Memory) putEncodedLocked(object string, off int64, stored []byte, records, rawBytes int64) {
	size := rawBytes + 128 + int64(len(stored)) + 96*records
	if size > c.max {
		return
	}
	k := blockKey{object, off}
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return
	}
	el := c.ll.PushFront(&cacheEntry{key: k, stored: stored, size: size, lazy: &lazyRecords{records: records}})
	c.items[k] = el
	c.size += size
	c.evictLocked(el)
}

// Put adds a block of rawBytes decoded bytes, evicting the least recently
// used blocks beyond the bound. Blocks larger than the whole cache are not kept.
func (c *Memory) Put(object string, off int64, recs []segment.Record, rawBytes int64) {
	c.PutStored(object, off, recs, rawBytes, nil)
}

// PutStored is Put keeping also the block's stored bytes (which count
// towards the bound); a block already cached without them gains them.
func (c *Memory) PutStored(object string, off int64, recs []segment.Record, rawBytes int64, stored []byte) {
	// A decoded Record is an 80-byte struct plus its header slice.
	size := rawBytes + 128 + int64(len(stored))
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
		if e := el.Value.(*cacheEntry); e.stored == nil && stored != nil && e.size+int64(len(stored)) <= c.max {
			e.stored = stored
			e.size += int64(len(stored))
			c.size += int64(len(stored))
			c.evictLocked(el)
		}
		return
	}
	el := c.ll.PushFront(&cacheEntry{key: k, recs: recs, stored: stored, size: size})
	c.items[k] = el
	c.size += size
	c.evictLocked(el)
}

// evictLocked drops least recently used blocks until the cache fits,
// never keep (the entry just added).
func (c *Memory) evictLocked(keep *list.Element) {
	for c.size > c.max {
		el := c.ll.Back()
		if el == keep {
			el = el.Prev()
			if el == nil {
				return
			}
		}
		e := el.Value.(*cacheEntry)
		c.ll.Remove(el)
		delete(c.items, e.key)
		c.size -= e.size
	}
}

// Stored returns the stored bytes of a cached block, when they were kept.
func (c *Memory) Stored(object string, off int64) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[blockKey{object, off}]; ok {
		if e := el.Value.(*cacheEntry); e.stored != nil {
			c.ll.MoveToFront(el)
			return e.stored, true
		}
	}
	return nil, false
}

// Size returns the bytes held.
func (c *Memory) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
