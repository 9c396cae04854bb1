package blockcache

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// A fresh level 0 object (one ingest flush: one block per partition) is
// read whole, once, by its owner, which caches every block of it; compacted
// objects are read a block at a time. See docs/cache.md, "Tail reads by
// object".

const (
	// DefaultWholeObjectBytes bounds the objects read whole: an object is
	// read whole only when the block asked for ends within it. An L0 object
	// is about the ingest flush size (8 MiB by default) plus at most one
	// request, so this leaves room for flush sizes up to about 32 MiB.
	DefaultWholeObjectBytes = 64 << 20
	// wholeReads bounds the whole-object reads of one node under way at
	// once, and so the memory they hold before their blocks are cached.
	wholeReads = 2
	// wholeRemembered is how many objects a node remembers having read
	// whole: a block of one of them that is no longer cached is read by
	// range, never by reading the object again.
	wholeRemembered = 4096
)

// errReadWhole: the object was read whole already; read the block by range.
var errReadWhole = errors.New("object read whole already")

// wholeObjects is the state of whole-object reads: the collapsing of
// concurrent reads of one object, their bound, and the objects read.
type wholeObjects struct {
	max int64 // 0: never read an object whole
	sf  singleflight.Group
	sem *semaphore.Weighted

	mu   sync.Mutex
	done map[string]struct{}
	ring []string // done's keys, oldest first out
	next int
}

func (w *wholeObjects) init() {
	w.max = DefaultWholeObjectBytes
	w.sem = semaphore.NewWeighted(wholeReads)
	w.done = map[string]struct{}{}
	w.ring = make([]string, wholeRemembered)
}

func (w *wholeObjects) wasRead(object string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.done[object]
	return ok
}

func (w *wholeObjects) markRead(object string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.done[object]; ok {
		return
	}
	if old := w.ring[w.next]; old != "" {
		delete(w.done, old)
	}
	w.ring[w.next] = object
	w.next = (w.next + 1) % len(w.ring)
	w.done[object] = struct{}{}
}

// SetWholeObjectBytes sets the bound of the fresh (level 0) objects read
// whole (DefaultWholeObjectBytes by default; 0: read every block by
// range). Call it before the reader serves.
func (r *Reader) SetWholeObjectBytes(n int64) { r.whole.max = max(n, 0) }

// perObject reports whether the blocks of the entry's object are owned per
// object, and by which writer: a level 0 object named by an ingest flush.
func perObject(e metadata.IndexEntry) (string, bool) {
	if e.Level != 0 {
		return "", false
	}
	return tier.FlushKeyNode(e.Object)
}

// readsWhole reports whether a miss for the block at off+length of object
// reads the whole object: an ingest flush's object, a block within the
// bound, which is also at most half the memory tier (the object's blocks
// must fit in it).
func (r *Reader) readsWhole(object string, off, length int64) bool {
	if _, ok := tier.FlushKeyNode(object); !ok {
		return false
	}
	limit := min(r.whole.max, r.mem.max/2)
	return off+length <= limit
}

// fromMemory serves a block this node owns from the memory tier, when a
// whole-object read cached it after the caller missed it there.
func (r *Reader) fromMemory(ctx context.Context, object string, off, length int64) (loaded, bool) {
	b, ok := r.mem.Stored(object, off)
	if !ok || int64(len(b)) != length {
		return loaded{}, false
	}
	n, err := segment.CheckBlock(b)
	if err != nil {
		return loaded{}, false
	}
	r.tiers.hit(ctx, TierMemory)
	r.hits.Add(ctx, 1)
	return loaded{stored: b, records: n, tier: TierMemory}, true
}

// fromWhole serves a block by reading its object whole (once for every
// concurrent caller, and never again once read): every block of the object
// goes to the memory tier (as stored bytes, decoded at their first read)
// and to the disk tier. It reports false when the block must be read by
// range: the object was read whole before, or the read failed (the ranged
// read then reports why).
func (r *Reader) fromWhole(ctx context.Context, object string, off, length int64) (loaded, bool) {
	if r.whole.wasRead(object) {
		// Read whole since the caller missed the memory tier (its blocks
		// were cached before it was marked read), or long before.
		return r.fromMemory(ctx, object, off, length)
	}
	ch := r.whole.sf.DoChan(object, func() (any, error) {
		return r.readWhole(ctx, object)
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return loaded{}, false
	}
	if res.Shared {
		r.tiers.collapsed.Add(context.WithoutCancel(ctx), 1)
	}
	if res.Err != nil {
		if errors.Is(res.Err, errReadWhole) {
			return r.fromMemory(ctx, object, off, length)
		}
		return loaded{}, false
	}
	b, ok := blockAt(res.Val.([]ObjectBlock), off, length)
	if !ok {
		return loaded{}, false // not a block of the object: the ranged read says why
	}
	return r.servedBlock(object, off, b, TierBucket)
}

// blockAt returns the stored bytes of the block at off+length among
// blocks (by ascending offset).
func blockAt(blocks []ObjectBlock, off, length int64) ([]byte, bool) {
	i, found := slices.BinarySearchFunc(blocks, off, func(b ObjectBlock, off int64) int { return cmp.Compare(b.Offset, off) })
	if !found || int64(len(blocks[i].Stored)) != length {
		return nil, false
	}
	return blocks[i].Stored, true
}

// servedBlock is the block at off of object, whose stored bytes b an
// object's read just cached (as stored bytes, decoded at their first Get),
// served from tier tr. It checks the block's header and CRC and decodes
// nothing: a fetch of record batches ships b as it is (BlockStored), and
// a fetch of records decodes it once (decoded). A block that does not
// check reports false.
func (r *Reader) servedBlock(object string, off int64, b []byte, tr Tier) (loaded, bool) {
	n, err := segment.CheckBlock(b)
	if err != nil {
		return loaded{}, false
	}
	return loaded{stored: b, records: n, tier: tr}, true
}

// readWhole GETs object whole and caches its blocks. It returns every
// block by ascending offset, each its own copy, so that no cached block
// keeps the whole object's buffer alive. ctx is the context of a shared
// read (detached from its callers).
func (r *Reader) readWhole(ctx context.Context, object string) ([]ObjectBlock, error) {
	if r.whole.wasRead(object) {
		return nil, errReadWhole
	}
	if err := r.whole.sem.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	defer r.whole.sem.Release(1)
	r.tiers.hit(ctx, TierBucket)
	r.misses.Add(ctx, 1)
	r.gets.Add(ctx, 1)
	gctx, end := r.tiers.span(ctx, "store.get", attribute.String("varve.object", object), attribute.Int64("varve.off", 0), attribute.Int64("varve.len", -1))
	obj, err := r.store.GetRange(gctx, object, 0, -1)
	end(err)
	if err != nil {
		if errors.Is(err, tier.ErrNotFound) {
			// Gone: every block of it is data loss, which the ranged
			// read reports; no other miss tries the object whole.
			r.whole.markRead(object)
		}
		return nil, fmt.Errorf("read object %s whole: %w", object, err)
	}
	// Read once: from now on, its blocks are read by range. Marked once
	// they are cached, so that a caller who finds it marked finds the
	// blocks cached unless they were evicted.
	defer r.whole.markRead(object)
	infos, err := splitObject(obj)
	if err != nil {
		r.log.Warn("object read whole does not split into blocks; reading its blocks by range", "object", object, "bytes", len(obj), "err", err)
		return nil, err
	}
	blocks := make([]ObjectBlock, len(infos))
	for i, bi := range infos {
		b := bytes.Clone(obj[bi.Offset : bi.Offset+bi.Length])
		blocks[i] = ObjectBlock{Offset: bi.Offset, Stored: b, Records: bi.Records, RawBytes: bi.RawBytes, Topic: bi.Topic, Partition: bi.Partition}
		if d := r.tiers.disk; d != nil {
			if err := d.Put(object, bi.Offset, b); err != nil {
				r.log.Warn("disk cache write failed", "err", err)
			}
		}
	}
	r.mem.PutObject(object, blocks)
	return blocks, nil
}

// splitObject lists the blocks of a whole object from its footer, checking
// that they tile it up to the footer. Each block's CRC is checked when it
// is decoded.
func splitObject(obj []byte) ([]segment.BlockInfo, error) {
	size := int64(len(obj))
	if size < segment.HeaderSize+segment.TrailerSize {
		return nil, fmt.Errorf("%w: object of %d bytes has no trailer", segment.ErrCorrupt, size)
	}
	n, err := segment.FooterSize(obj[size-segment.TrailerSize:])
	if err != nil {
		return nil, err
	}
	footerAt := size - segment.TrailerSize - n
	if footerAt < segment.HeaderSize {
		return nil, fmt.Errorf("%w: object of %d bytes: trailer says the footer is %d bytes", segment.ErrCorrupt, size, n)
	}
	infos, err := segment.DecodeFooter(obj[footerAt:])
	if err != nil {
		return nil, err
	}
	if last := infos[len(infos)-1]; last.Offset+last.Length != footerAt {
		return nil, fmt.Errorf("%w: the blocks end at byte %d, the footer starts at %d", segment.ErrCorrupt, last.Offset+last.Length, footerAt)
	}
	return infos, nil
}
