package blockcache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sync/singleflight"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// A fetch node that does not own a fresh level 0 object asks its owner for
// the object's blocks of the partitions it serves (hot.go) in one call
// (PeerClient.GetObject), once, and caches them, instead of asking for
// each block it misses (an object holds a block per partition: about 1,000
// at 1,000 partitions). See docs/cache.md, "Tail reads by object".

// MaxObjectBytes is the most bytes of blocks one GetObject call may ask
// for.
const MaxObjectBytes = 1 << 30

// ErrNotWhole: the owner cannot answer an object whole (its blocks add up
// to more than the caller takes, or it read the object whole before and no
// longer holds every block of it); ask for its blocks one by one.
var ErrNotWhole = errors.New("object not served whole")

// RPC names of the calls to other fetch nodes, counted by
// varve.cache.peer.calls.
const (
	rpcGetBlock  = "GetBlock"
	rpcGetObject = "GetObject"
)

// fromOwnersObject serves a block of a fresh level 0 object that owner
// (another node) owns: from memory when an earlier answer of the owner
// cached it, else by asking the owner for every block of the object (once
// for every concurrent caller, and never again once answered). When the
// owner cannot answer the object whole the block is asked of it alone
// (fromPeer); when the owner fails, this node reads the block itself, as
// fromPeer does.
func (r *Reader) fromOwnersObject(ctx context.Context, owner Peer, object string, off, length int64) (loaded, error) {
	if l, ok := r.fromMemory(ctx, object, off, length); ok {
		return l, nil
	}
	if r.remote.wasRead(object) {
		// Answered since this caller missed the memory tier (the blocks
		// are cached before the object is marked answered), or long before.
		if l, ok := r.fromMemory(ctx, object, off, length); ok {
			return l, nil
		}
		return r.afterAsked(ctx, owner, object, off, length)
	}
	res, err := r.askOnce(ctx, &r.remote, object, func() ([]ObjectBlock, error) {
		return r.askObject(ctx, owner, object)
	})
	if err != nil {
		return loaded{}, err
	}
	switch err := res.Err; {
	case err == nil:
		if b, ok := blockAt(res.Val.([]ObjectBlock), off, length); ok {
			if l, ok := r.servedBlock(object, off, b, TierPeer); ok {
				r.tiers.hit(ctx, TierPeer)
				r.hits.Add(ctx, 1)
				return l, nil
			}
		}
		// Not a block of the object as the owner knows it, or it does
		// not decode: the block's own read says why.
		return r.fromPeer(ctx, owner, object, off, length)
	case errors.Is(err, errReadWhole):
		// Asked by an earlier call that ended after this caller missed
		// the memory tier.
		if l, ok := r.fromMemory(ctx, object, off, length); ok {
			return l, nil
		}
		return r.afterAsked(ctx, owner, object, off, length)
	case errors.Is(err, ErrNotWhole):
		return r.fromPeer(ctx, owner, object, off, length)
	case ctx.Err() != nil:
		return loaded{}, ctx.Err()
	}
	// Whatever else went wrong, the client is served from the bucket, as
	// fromPeer does (the failure is logged and the owner suspected).
	r.tiers.miss(ctx, TierPeer)
	return r.ownedBlock(ctx, object, off, length)
}

// afterAsked serves a block of an object its owner was asked for already:
// from the bucket when the ask failed and suspected the owner after this
// caller chose it (as the failed ask's callers were), else from the owner
// alone (the block was evicted since, or was not in the answer).
func (r *Reader) afterAsked(ctx context.Context, owner Peer, object string, off, length int64) (loaded, error) {
	if r.tiers.owners.Suspected(owner.ID) {
		r.tiers.miss(ctx, TierPeer)
		return r.ownedBlock(ctx, object, off, length)
	}
	return r.fromPeer(ctx, owner, object, off, length)
}

// askObject asks owner for the blocks of object of this node's hot
// partitions (every block when it has none or too many) and caches them.
// It runs once for the concurrent callers (ctx is a shared read's,
// detached from them) and marks the object answered, whatever the
// outcome, so that no later miss asks again: a block not in the answer
// (its partition was not hot yet) is asked for alone.
func (r *Reader) askObject(ctx context.Context, owner Peer, object string) ([]ObjectBlock, error) {
	if r.remote.wasRead(object) {
		return nil, errReadWhole
	}
	blocks, parts, err := r.getObject(ctx, &r.remote, owner, object, objectTimeout, "fetch.peer.object")
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	defer r.remote.markRead(object)
	if err == nil {
		r.tiers.received.Add(ctx, int64(len(blocks)))
	}
	switch {
	case err == nil && len(parts) > 0:
		// Some of the object: not remembered as its layout, so that
		// this node, should it own the object later, never answers it
		// whole from these blocks.
		r.mem.PutBlocks(object, blocks)
		return blocks, nil
	case err == nil:
		r.mem.PutObject(object, blocks)
		return blocks, nil
	case errors.Is(err, ErrNotWhole):
		r.log.Debug("object owner does not serve the object whole; asking it for each block", "owner", owner.ID, "object", object, "err", err)
		return nil, err
	}
	r.peerFailed("owner", owner, object, "block owner did not serve the block's whole object; reading the bucket", err)
	return nil, err
}

// peerFailed suspects peer (an object's owner or writer, named by role in
// the log) when it could not be reached in time, and logs why its answer
// for object is not used.
func (r *Reader) peerFailed(role string, peer Peer, object, msg string, err error) {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		r.tiers.owners.Suspect(peer.ID, suspectFor)
	}
	r.log.Warn(msg, role, peer.ID, "addr", peer.Addr, "object", object, "err", err)
}

// askOnce runs ask for object once for the concurrent callers (w's
// singleflight) and waits for it, or for ctx.
func (r *Reader) askOnce(ctx context.Context, w *wholeObjects, object string, ask func() ([]ObjectBlock, error)) (singleflight.Result, error) {
	ch := w.sf.DoChan(object, func() (any, error) { return ask() })
	select {
	case res := <-ch:
		if res.Shared {
			r.tiers.collapsed.Add(context.WithoutCancel(ctx), 1)
		}
		return res, nil
	case <-ctx.Done():
		return singleflight.Result{}, ctx.Err()
	}
}

// getObject makes one GetObject call to peer for the blocks of object of
// this node's hot partitions (every block when it has none or too many),
// within w's bound of calls under way and timeout, and checks the answer.
// It returns the partitions asked for.
func (r *Reader) getObject(ctx context.Context, w *wholeObjects, peer Peer, object string, timeout time.Duration, span string) ([]ObjectBlock, []TopicPartitions, error) {
	if err := w.sem.Acquire(ctx, 1); err != nil {
		return nil, nil, err
	}
	defer w.sem.Release(1)
	maxBytes := min(r.whole.max, r.mem.max/2, MaxObjectBytes)
	r.tiers.calls.Add(ctx, 1, r.tiers.rpcAttrs[rpcGetObject])
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pctx, end := r.tiers.span(pctx, span, attribute.String("varve.peer", peer.ID), attribute.String("varve.object", object))
	parts := r.hot.partitions(time.Now())
	blocks, err := r.tiers.peers.GetObject(pctx, peer.Addr, object, maxBytes, parts)
	if err == nil {
		err = checkObjectBlocks(peer, object, blocks, maxBytes, len(parts) > 0)
	}
	end(err, attribute.Int("varve.blocks", len(blocks)))
	return blocks, parts, err
}

// checkObjectBlocks checks an owner's answer for object: blocks by
// strictly ascending, non-overlapping ranges of plausible lengths, adding
// up to at most maxBytes, and at least one unless some partitions were
// asked for. Each block's CRC is checked when it is decoded.
func checkObjectBlocks(owner Peer, object string, blocks []ObjectBlock, maxBytes int64, some bool) error {
	if len(blocks) == 0 && !some {
		return fmt.Errorf("%w: node %s answered no block for object %s", segment.ErrCorrupt, owner.ID, object)
	}
	var total, end int64
	for i, b := range blocks {
		n := int64(len(b.Stored))
		switch {
		case b.Offset < end || (i == 0 && b.Offset < 0):
			return fmt.Errorf("%w: node %s answered object %s with block %d at byte %d, before the end %d of the one before", segment.ErrCorrupt, owner.ID, object, i, b.Offset, end)
		case n < segment.BlockHeaderSize || n > MaxBlockLength:
			return fmt.Errorf("%w: node %s answered object %s with block %d of %d bytes", segment.ErrCorrupt, owner.ID, object, i, n)
		case b.Records < 1 || b.RawBytes < 0:
			return fmt.Errorf("%w: node %s answered object %s with block %d of %d records, %d raw bytes", segment.ErrCorrupt, owner.ID, object, i, b.Records, b.RawBytes)
		}
		end = b.Offset + n
		total += n
	}
	if total > maxBytes {
		return fmt.Errorf("%w: node %s answered %d bytes of blocks for object %s, asked for at most %d", segment.ErrCorrupt, owner.ID, total, object, maxBytes)
	}
	return nil
}

// ObjectBytes returns every block of a fresh level 0 object (of parts
// only, when parts names some), by ascending offset, for another fetch
// node (the internal BlockService): from memory when it holds every block
// of the object (this node wrote it, or read it whole), else by reading
// the object whole (shared with this node's own reads of it, once). It
// never asks another node.
//
// A request that names no fresh object — an invalid key, a compacted
// object's —, asks for less than one byte or more than MaxObjectBytes, or
// names more than MaxAskPartitions partitions, a topic twice, an empty
// topic or a negative partition wraps metadata.ErrInvalidArgument, and is
// refused before anything is read. Blocks asked for that add up to more
// than maxBytes, or an object read whole before whose blocks are no
// longer all cached, wrap ErrNotWhole. A missing or corrupt object is data
// loss.
func (r *Reader) ObjectBytes(ctx context.Context, object string, maxBytes int64, parts []TopicPartitions) ([]ObjectBlock, Tier, error) {
	if err := checkObjectAsk(object, maxBytes, parts); err != nil {
		return nil, "", err
	}
	blocks, tr, err := r.objectBlocks(ctx, object, newPartitionFilter(parts))
	if err != nil {
		return nil, "", err
	}
	if err := checkObjectTaken(object, blocks, maxBytes); err != nil {
		return nil, "", err
	}
	return blocks, tr, nil
}

// HeldObjectBytes is ObjectBytes for a node that serves only the fresh
// objects it wrote (the ingest role without the fetch role): from mem
// alone. An object whose blocks mem does not all hold wraps ErrNotWhole;
// it never reads the bucket.
func HeldObjectBytes(mem *Memory, object string, maxBytes int64, parts []TopicPartitions) ([]ObjectBlock, error) {
	if err := checkObjectAsk(object, maxBytes, parts); err != nil {
		return nil, err
	}
	var want func(string, int32) bool
	if f := newPartitionFilter(parts); f != nil {
		want = f.wants
	}
	blocks, ok := mem.ObjectBlocks(object, want)
	if !ok {
		return nil, fmt.Errorf("%w: object %s is not held in memory here (this node serves only the fresh objects it wrote, while it holds them)", ErrNotWhole, object)
	}
	if err := checkObjectTaken(object, blocks, maxBytes); err != nil {
		return nil, err
	}
	return blocks, nil
}

// checkObjectAsk checks a GetObject call's arguments (ObjectBytes).
func checkObjectAsk(object string, maxBytes int64, parts []TopicPartitions) error {
	if maxBytes < 1 || maxBytes > MaxObjectBytes {
		return fmt.Errorf("%w: object %q: max_bytes %d: want 1 to %d", metadata.ErrInvalidArgument, object, maxBytes, MaxObjectBytes)
	}
	if err := checkAskPartitions(parts); err != nil {
		return fmt.Errorf("%w: object %q: %w", metadata.ErrInvalidArgument, object, err)
	}
	if err := tier.ValidateKey(object); err != nil {
		return fmt.Errorf("%w: object: %w", metadata.ErrInvalidArgument, err)
	}
	if _, ok := tier.FlushKeyNode(object); !ok {
		return fmt.Errorf("%w: object %q is not a fresh level 0 object (an ingest flush's key): the blocks of a compacted object are asked for one at a time (GetBlock)", metadata.ErrInvalidArgument, object)
	}
	return nil
}

// checkObjectTaken refuses, wrapping ErrNotWhole, blocks that add up to
// more than the caller takes.
func checkObjectTaken(object string, blocks []ObjectBlock, maxBytes int64) error {
	var total int64
	for _, b := range blocks {
		total += int64(len(b.Stored))
	}
	if total > maxBytes {
		return fmt.Errorf("%w: object %s has %d blocks of %d bytes asked for, more than the %d taken: ask for them one at a time (GetBlock)", ErrNotWhole, object, len(blocks), total, maxBytes)
	}
	return nil
}

// checkAskPartitions checks the partitions a GetObject call names.
func checkAskPartitions(parts []TopicPartitions) error {
	n := 0
	seen := make(map[string]bool, len(parts))
	for _, tp := range parts {
		switch {
		case tp.Topic == "":
			return errors.New("partitions: a topic without a name")
		case seen[tp.Topic]:
			return fmt.Errorf("partitions: topic %q is listed twice", tp.Topic)
		}
		seen[tp.Topic] = true
		n += len(tp.Partitions)
		if n > MaxAskPartitions {
			return fmt.Errorf("partitions: more than %d", MaxAskPartitions)
		}
		for _, p := range tp.Partitions {
			if p < 0 {
				return fmt.Errorf("partitions: topic %q partition %d is negative", tp.Topic, p)
			}
		}
	}
	return nil
}

// objectBlocks returns every block of object that f wants (all, when f is
// nil) from memory, else from one shared whole read of the bucket.
func (r *Reader) objectBlocks(ctx context.Context, object string, f *partitionFilter) ([]ObjectBlock, Tier, error) {
	var want func(string, int32) bool
	if f != nil {
		want = f.wants
	}
	if blocks, ok := r.mem.ObjectBlocks(object, want); ok {
		r.tiers.hit(ctx, TierMemory)
		return blocks, TierMemory, nil
	}
	if min(r.whole.max, r.mem.max/2) <= 0 {
		return nil, "", fmt.Errorf("%w: object %s: this node reads no object whole", ErrNotWhole, object)
	}
	ch := r.whole.sf.DoChan(object, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		defer cancel()
		return r.readWhole(lctx, object)
	})
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	if res.Shared {
		r.tiers.collapsed.Add(context.WithoutCancel(ctx), 1)
	}
	switch err := res.Err; {
	case err == nil:
		blocks := res.Val.([]ObjectBlock)
		if f != nil {
			blocks = slices.DeleteFunc(slices.Clone(blocks), func(b ObjectBlock) bool { return !f.wants(b.Topic, b.Partition) })
		}
		return blocks, TierBucket, nil
	case errors.Is(err, errReadWhole):
		// Read whole by an earlier call: served if all of it is still
		// cached (it was just checked, but a read may have finished since).
		if blocks, ok := r.mem.ObjectBlocks(object, want); ok {
			r.tiers.hit(ctx, TierMemory)
			return blocks, TierMemory, nil
		}
		return nil, "", fmt.Errorf("%w: object %s was read whole before and its blocks are no longer all cached: ask for them one at a time (GetBlock)", ErrNotWhole, object)
	case errors.Is(err, tier.ErrNotFound), errors.Is(err, segment.ErrCorrupt):
		return nil, "", fmt.Errorf("%w: %w", ErrDataLoss, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, "", err
	default:
		return nil, "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
}
