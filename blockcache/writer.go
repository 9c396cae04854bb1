package blockcache

import (
	"context"
	"errors"
	"fmt"

	"github.com/varve-io/varve/metadata"
)

// Where ingest and fetch run on different nodes (the Terraform module's
// ingest and fetch services), no fetch node wrote a fresh object, so its
// owner would read it from the bucket. The ingest node that wrote it holds
// its blocks in memory for a while after the PUT (node: the ingest role
// alone keeps a small memory tier and answers GetObject from it, never
// reading the bucket), so a fetch node asks that writer first, once per
// object, for the blocks of the partitions it serves. Anything else — the
// writer gone, suspected, restarted, no longer holding the object, or its
// answer without the block — falls through to the tiers as before: the
// object's owner among the fetch nodes, the bucket. See docs/cache.md.

// errNotFromWriter: the block was not had from its writer; the other tiers
// serve it.
var errNotFromWriter = errors.New("block not served by its writer")

// writerOf returns the writer of e's object when the block is a fresh
// object's and its writer is a live ingest node without the fetch role
// that this node has not asked for the object yet.
func (r *Reader) writerOf(e metadata.IndexEntry) (Peer, bool) {
	if r.tiers.owners == nil || r.tiers.peers == nil {
		return Peer{}, false
	}
	writer, ok := perObject(e)
	if !ok {
		return Peer{}, false
	}
	w, ok := r.tiers.owners.Writer(writer)
	if !ok || r.writer.wasRead(e.Object) {
		return Peer{}, false
	}
	return w, true
}

// fromWriter serves a block of a fresh object from its writer's answer to
// one GetObject call for the object (shared by every concurrent caller),
// or fails with errNotFromWriter.
func (r *Reader) fromWriter(ctx context.Context, w Peer, object string, off, length int64) (loaded, error) {
	if l, ok := r.fromMemory(ctx, object, off, length); ok {
		return l, nil
	}
	res, err := r.askOnce(ctx, &r.writer, object, func() ([]ObjectBlock, error) {
		return r.askWriter(ctx, w, object)
	})
	if err != nil {
		return loaded{}, err
	}
	if res.Err != nil {
		if l, ok := r.fromMemory(ctx, object, off, length); ok {
			return l, nil // answered by an ask that ended after this caller missed
		}
		return loaded{}, errNotFromWriter
	}
	b, ok := blockAt(res.Val.([]ObjectBlock), off, length)
	if !ok {
		return loaded{}, errNotFromWriter
	}
	l, ok := r.servedBlock(object, off, b, TierPeer)
	if !ok {
		return loaded{}, errNotFromWriter
	}
	r.tiers.hit(ctx, TierPeer)
	r.hits.Add(ctx, 1)
	return l, nil
}

// askWriter asks the writer w for the blocks of object of this node's hot
// partitions (all when it has none or too many), once: the object is
// marked asked whatever the outcome. The blocks answered are cached.
func (r *Reader) askWriter(ctx context.Context, w Peer, object string) ([]ObjectBlock, error) {
	if r.writer.wasRead(object) {
		return nil, errReadWhole
	}
	defer r.writer.markRead(object)
	blocks, _, err := r.getObject(ctx, &r.writer, w, object, writerTimeout, "fetch.writer.object")
	switch {
	case err == nil:
		r.tiers.received.Add(ctx, int64(len(blocks)))
		// Never remembered as the object's layout: this node may own the
		// object among the fetch nodes, and must then not answer it whole
		// from what the writer chose to send.
		r.mem.PutBlocks(object, blocks)
		return blocks, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, ErrNotWhole):
		// It no longer holds the object (or never did: restarted).
		r.log.Debug("writer does not hold the object; reading it through the fetch tier", "writer", w.ID, "object", object, "err", err)
		return nil, err
	}
	r.peerFailed("writer", w, object, "writer did not answer for its object; reading it through the fetch tier", err)
	return nil, fmt.Errorf("object %s from its writer %s: %w", object, w.ID, err)
}
