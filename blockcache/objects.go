package blockcache

import (
	"cmp"
	"container/list"
	"slices"
)

// ObjectBlock is one block of an object: its offset in the object, its
// stored bytes (header included) and what the object's footer lists for
// it. Topic and Partition are "" and 0 where not known (a peer's answer).
type ObjectBlock struct {
	Offset    int64
	Stored    []byte
	Records   int64
	RawBytes  int64
	Topic     string
	Partition int32
}

const (
	// layoutObjects and layoutBlocks bound the objects whose blocks the
	// memory tier remembers (RememberObject): the last 1,024 objects, at
	// most 262,144 blocks between them (56 bytes each, 14 MiB; a topic's
	// name is shared by its blocks).
	layoutObjects = 1024
	layoutBlocks  = 1 << 18
)

// span is a remembered block: its byte range and counts, not its bytes.
type span struct {
	off, length, records, raw int64
	topic                     string
	partition                 int32
}

// layouts remembers the blocks of recent objects, oldest out first.
type layouts struct {
	m      map[string][]span
	order  []string // the keys of m, oldest first
	blocks int
}

// PutObject caches every block of object by its stored bytes (as
// PutEncoded) and remembers the object's blocks (as RememberObject). Each
// block's Stored must be its own allocation, never a window of a larger
// buffer, so that the cache frees the blocks one by one.
func (c *Memory) PutObject(object string, blocks []ObjectBlock) {
	c.PutBlocks(object, blocks)
	c.RememberObject(object, blocks)
}

// PutBlocks caches blocks of object by their stored bytes (as PutEncoded,
// under one lock), without remembering them as the whole object: a
// peer's answer for some partitions. Each block's Stored must be its own
// allocation, as for PutObject.
func (c *Memory) PutBlocks(object string, blocks []ObjectBlock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range blocks {
		c.putEncodedLocked(object, b.Offset, b.Stored, b.Records, b.RawBytes)
	}
}

// RememberObject remembers which blocks object has (their ranges and
// counts; Stored is not kept), so that ObjectBlocks can answer the object
// whole while every block of it is cached. An object's blocks are
// remembered once; the oldest objects are forgotten first.
func (c *Memory) RememberObject(object string, blocks []ObjectBlock) {
	if len(blocks) == 0 || len(blocks) > layoutBlocks {
		return
	}
	spans := make([]span, len(blocks))
	for i, b := range blocks {
		spans[i] = span{off: b.Offset, length: int64(len(b.Stored)), records: b.Records, raw: b.RawBytes, topic: b.Topic, partition: b.Partition}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.off, b.off) })
	c.mu.Lock()
	defer c.mu.Unlock()
	l := &c.objects
	if l.m == nil {
		l.m = map[string][]span{}
	}
	if _, ok := l.m[object]; ok {
		return
	}
	for len(l.order) > 0 && (len(l.order) >= layoutObjects || l.blocks+len(spans) > layoutBlocks) {
		l.blocks -= len(l.m[l.order[0]])
		delete(l.m, l.order[0])
		l.order[0] = ""
		l.order = l.order[1:]
	}
	if len(l.order) == cap(l.order) {
		// Compact: the slice only ever drops its head. Twice the bound,
		// so that once full it compacts every layoutObjects objects, not
		// at every one (a copy of 1,023 names per fresh object).
		l.order = append(make([]string, 0, 2*layoutObjects), l.order...)
	}
	l.m[object] = spans
	l.order = append(l.order, object)
	l.blocks += len(spans)
}

// ObjectBlocks returns every block of object (that want selects, when want
// is not nil), by ascending offset, when its blocks are remembered
// (RememberObject) and each of those is cached with its stored bytes; it
// reports false otherwise. The blocks returned count as used.
func (c *Memory) ObjectBlocks(object string, want func(topic string, p int32) bool) ([]ObjectBlock, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	spans, ok := c.objects.m[object]
	if !ok {
		return nil, false
	}
	n := len(spans)
	if want != nil {
		n = 0 // some of them: grown as found
	}
	out := make([]ObjectBlock, 0, n)
	els := make([]*list.Element, 0, n)
	for _, s := range spans {
		if want != nil && !want(s.topic, s.partition) {
			continue
		}
		el, ok := c.items[blockKey{object, s.off}]
		if !ok {
			return nil, false
		}
		e := el.Value.(*cacheEntry)
		if e.stored == nil || int64(len(e.stored)) != s.length {
			return nil, false
		}
		out = append(out, ObjectBlock{Offset: s.off, Stored: e.stored, Records: s.records, RawBytes: s.raw, Topic: s.topic, Partition: s.partition})
		els = append(els, el)
	}
	for _, el := range els {
		c.ll.MoveToFront(el)
	}
	return out, true
}
