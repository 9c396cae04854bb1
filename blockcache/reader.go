package query

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// Tier names where a block read was served from.
type Tier string

// The tiers a block is read through, nearest first.
const (
	TierMemory Tier = "memory" // decoded records in this process
	TierDisk   Tier = "disk"   // the stored bytes in a local file
	TierPeer   Tier = "peer"   // the block's owner, over the internal BlockService
	TierBucket Tier = "bucket" // one ranged GET of object storage
)

// PeerClient fetches a block's stored bytes from another fetch node (the
// internal BlockService). Errors that mean the peer could not be reached or
// could not answer wrap ErrUnavailable.
type PeerClient interface {
	GetBlock(ctx context.Context, addr, object string, off, length int64) ([]byte, error)
}

// MaxBlockLength is the longest byte range a block can have: its header and
// a payload of at most segment.MaxBlockRawBytes.
const MaxBlockLength = segment.BlockHeaderSize + segment.MaxBlockRawBytes

const (
	// peerTimeout bounds one request to an owner; past it the block is read
	// from the bucket.
	peerTimeout = 5 * time.Second
	// suspectFor is how long an owner that failed to answer is skipped:
	// about a lease, after which the membership watch has dropped it.
	suspectFor = 10 * time.Second
	// loadTimeout bounds a shared read, which outlives the request that
	// started it.
	loadTimeout = time.Minute
)

// blockTiers is the state of the read path below the memory cache: the disk
// cache, the owners of blocks, and the collapsing of concurrent reads.
type blockTiers struct {
	disk   *DiskCache
	owners *Owners
	peers  PeerClient
	sf     singleflight.Group

	hits      metric.Int64Counter
	misses    metric.Int64Counter
	collapsed metric.Int64Counter
	attrs     map[Tier]metric.MeasurementOption

	tracer trace.Tracer // nil: no spans
}

func (t *blockTiers) init(f *Fetcher, m metric.Meter) {
	t.attrs = map[Tier]metric.MeasurementOption{}
	for _, tr := range []Tier{TierMemory, TierDisk, TierPeer, TierBucket} {
		t.attrs[tr] = metric.WithAttributeSet(attribute.NewSet(attribute.String("tier", string(tr))))
	}
	t.hits, _ = m.Int64Counter("varve.cache.hits", metric.WithDescription("Block reads served, by the tier that served them (memory, disk, peer, bucket)."))
	t.misses, _ = m.Int64Counter("varve.cache.misses", metric.WithDescription("Block reads a tier could not serve (memory, disk, peer), passed to the next tier."))
	t.collapsed, _ = m.Int64Counter("varve.cache.collapsed", metric.WithDescription("Block reads that waited for the same block's read already under way instead of starting another."))
	_, _ = m.Int64ObservableGauge("varve.cache.bytes", metric.WithUnit("By"),
		metric.WithDescription("Bytes held by the block cache, by tier (memory, disk)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if f.blocks != nil {
				o.Observe(f.blocks.Size(), t.attrs[TierMemory])
			}
			if t.disk != nil {
				o.Observe(t.disk.Size(), t.attrs[TierDisk])
			}
			return nil
		}))
	// Autoscaling reads the misses (terraform/modules/varve): they exist
	// from the start, at 0.
	f.hits.Add(context.Background(), 0)
	f.misses.Add(context.Background(), 0)
}

// SetTracerProvider makes block reads below the memory cache traced:
// fetch.block (attribute varve.tier: where it was served from), with
// store.get for a GET of the bucket and fetch.peer for a read from the
// block's owner. Call it before the fetcher serves; nil: no spans.
func (f *Fetcher) SetTracerProvider(tp trace.TracerProvider) {
	if tp != nil {
		f.tiers.tracer = tp.Tracer("github.com/varve-io/varve/query")
	}
}

// span starts a span when tracing is on; end records err.
func (t *blockTiers) span(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, func(error, ...attribute.KeyValue)) {
	if t.tracer == nil {
		return ctx, func(error, ...attribute.KeyValue) {}
	}
	ctx, sp := t.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
	return ctx, func(err error, more ...attribute.KeyValue) {
		sp.SetAttributes(more...)
		if err != nil {
			sp.RecordError(err)
			sp.SetStatus(codes.Error, err.Error())
		}
		sp.End()
	}
}

func (t *blockTiers) hit(ctx context.Context, tr Tier) {
	t.hits.Add(context.WithoutCancel(ctx), 1, t.attrs[tr])
}

func (t *blockTiers) miss(ctx context.Context, tr Tier) {
	t.misses.Add(context.WithoutCancel(ctx), 1, t.attrs[tr])
}

// SetDiskCache adds the disk tier. Call it before the fetcher serves.
func (f *Fetcher) SetDiskCache(d *DiskCache) { f.tiers.disk = d }

// DiskCache returns the disk tier (nil without one).
func (f *Fetcher) DiskCache() *DiskCache { return f.tiers.disk }

// SetOwners makes the fetcher one of several fetch nodes: a block another
// node owns is asked of that node through peers, and only the owner reads
// the bucket. Call it before the fetcher serves.
func (f *Fetcher) SetOwners(o *Owners, peers PeerClient) { f.tiers.owners, f.tiers.peers = o, peers }

// Owners returns the ownership of blocks (nil on a lone fetcher).
func (f *Fetcher) Owners() *Owners { return f.tiers.owners }

// loaded is the result of a shared read of one block.
type loaded struct {
	recs   []segment.Record
	stored []byte // nil when the records came from a peer
	tier   Tier
}

// blockErr turns an error of the read of a block into the fetch's error,
// naming the partition and offsets as well as the object.
func blockErr(e metadata.IndexEntry, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s/%d offsets %d-%d: %w", e.Topic, e.Partition, e.Base, e.End()-1, err)
}

// tieredBlock reads a block missing from the memory cache: from the disk
// cache, else from its owner when that is another node, else (or when the
// owner fails to answer) from the bucket. Concurrent reads of one block
// share one read. The records are checked against the index entry's count.
func (f *Fetcher) tieredBlock(ctx context.Context, e metadata.IndexEntry) (_ []segment.Record, err error) {
	ctx, end := f.tiers.span(ctx, "fetch.block", attribute.String("varve.topic", e.Topic), attribute.Int("varve.partition", int(e.Partition)),
		attribute.Int64("varve.base", e.Base), attribute.String("varve.object", e.Object), attribute.Int64("varve.off", e.Off), attribute.Int64("varve.len", e.Len))
	var l loaded
	defer func() { end(err, attribute.String("varve.tier", string(l.tier))) }()
	owner, remote := Peer{}, false
	if f.tiers.owners != nil && f.tiers.peers != nil {
		owner, remote = f.tiers.owners.Owner(e.Object, e.Off)
	}
	if remote {
		l, err = f.shared(ctx, "peer", e.Object, e.Off, e.Len, func(lctx context.Context) (loaded, error) {
			return f.fromPeer(lctx, owner, e.Object, e.Off, e.Len)
		})
	} else {
		l, err = f.ownedBlock(ctx, e.Object, e.Off, e.Len)
	}
	if err != nil {
		if errors.Is(err, segment.ErrCorrupt) {
			f.log.Error("corrupt block", "topic", e.Topic, "partition", e.Partition, "offsets", fmt.Sprintf("%d-%d", e.Base, e.End()-1), "object", e.Object, "off", e.Off, "err", err)
		}
		return nil, blockErr(e, err)
	}
	if int64(len(l.recs)) != e.Records {
		err := fmt.Errorf("%w: %w: object %s bytes %d+%d: block has %d records, the index says %d",
			ErrDataLoss, segment.ErrCorrupt, e.Object, e.Off, e.Len, len(l.recs), e.Records)
		f.log.Error("corrupt block", "object", e.Object, "off", e.Off, "err", err)
		return nil, blockErr(e, err)
	}
	return l.recs, nil
}

// BlockBytes returns a block's stored bytes for another fetch node (the
// internal BlockService): from memory, disk, or one shared read of the
// bucket. It never asks another node, so requests between nodes whose views
// of the membership differ cannot loop.
//
// A request that names no block — an invalid key, a range the object's
// footer does not list — wraps metadata.ErrInvalidArgument; a block the
// object's footer lists that does not decode is logged and answered as data
// loss, as is a missing object.
func (f *Fetcher) BlockBytes(ctx context.Context, object string, off, length int64) ([]byte, Tier, error) {
	if off < 0 || length < segment.BlockHeaderSize || length > MaxBlockLength {
		return nil, "", fmt.Errorf("%w: block %q bytes %d+%d: want an object key, offset ≥ 0 and %d ≤ length ≤ %d",
			metadata.ErrInvalidArgument, object, off, length, segment.BlockHeaderSize, MaxBlockLength)
	}
	if err := tier.ValidateKey(object); err != nil {
		return nil, "", fmt.Errorf("%w: block bytes %d+%d: %w", metadata.ErrInvalidArgument, off, length, err)
	}
	if b, ok := f.blocks.Stored(object, off); ok && int64(len(b)) == length {
		f.tiers.hit(ctx, TierMemory)
		return b, TierMemory, nil
	}
	l, err := f.ownedBlock(ctx, object, off, length)
	switch {
	case err == nil:
		return l.stored, l.tier, nil
	case errors.Is(err, segment.ErrCorrupt) || errors.Is(err, tier.ErrInvalidRange):
		listed, ferr := f.listsBlock(ctx, object, off, length)
		if ferr == nil && !listed {
			return nil, "", fmt.Errorf("%w: object %s has no block at bytes %d+%d", metadata.ErrInvalidArgument, object, off, length)
		}
		if errors.Is(err, segment.ErrCorrupt) {
			f.log.Error("corrupt block", "object", object, "off", off, "err", err)
		}
	}
	return nil, "", err
}

// listsBlock reports whether object's footer lists a block at bytes
// off+length: two ranged reads of the object's end.
func (f *Fetcher) listsBlock(ctx context.Context, object string, off, length int64) (bool, error) {
	info, err := f.store.Head(ctx, object)
	if err != nil {
		return false, err
	}
	if info.Size < segment.TrailerSize {
		return false, fmt.Errorf("%w: object %s of %d bytes has no trailer", segment.ErrCorrupt, object, info.Size)
	}
	trailer, err := f.store.GetRange(ctx, object, info.Size-segment.TrailerSize, segment.TrailerSize)
	if err != nil {
		return false, err
	}
	n, err := segment.FooterSize(trailer)
	if err != nil {
		return false, err
	}
	if n+segment.TrailerSize > info.Size {
		return false, fmt.Errorf("%w: object %s of %d bytes: trailer says the footer is %d bytes", segment.ErrCorrupt, object, info.Size, n)
	}
	tail, err := f.store.GetRange(ctx, object, info.Size-segment.TrailerSize-n, n+segment.TrailerSize)
	if err != nil {
		return false, err
	}
	infos, err := segment.DecodeFooter(tail)
	if err != nil {
		return false, err
	}
	for _, b := range infos {
		if b.Offset == off && b.Length == length {
			return true, nil
		}
	}
	return false, nil
}

// ownedBlock reads a block this node reads itself (it owns it, or it
// serves a peer): disk, then bucket, shared by every concurrent caller.
func (f *Fetcher) ownedBlock(ctx context.Context, object string, off, length int64) (loaded, error) {
	return f.shared(ctx, "own", object, off, length, func(lctx context.Context) (loaded, error) {
		if l, ok := f.fromDisk(lctx, object, off, length); ok {
			return l, nil
		}
		return f.fromBucket(lctx, object, off, length)
	})
}

// shared runs load once for concurrent callers of the same block and kind,
// detached from any one caller's cancellation; each caller waits for it or
// for its own context.
func (f *Fetcher) shared(ctx context.Context, kind, object string, off, length int64, load func(context.Context) (loaded, error)) (loaded, error) {
	key := kind + "\x00" + object + "\x00" + strconv.FormatInt(off, 10) + "\x00" + strconv.FormatInt(length, 10)
	ch := f.tiers.sf.DoChan(key, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		defer cancel()
		return load(lctx)
	})
	select {
	case r := <-ch:
		if r.Shared {
			f.tiers.collapsed.Add(context.WithoutCancel(ctx), 1)
		}
		if r.Err != nil {
			return loaded{}, r.Err
		}
		return r.Val.(loaded), nil
	case <-ctx.Done():
		return loaded{}, ctx.Err()
	}
}

func (f *Fetcher) fromDisk(ctx context.Context, object string, off, length int64) (loaded, bool) {
	d := f.tiers.disk
	if d == nil {
		return loaded{}, false
	}
	b, ok := d.Get(object, off, length)
	if ok {
		recs, err := segment.DecodeBlock(b)
		if err == nil {
			f.tiers.hit(ctx, TierDisk)
			f.hits.Add(ctx, 1)
			f.blocks.PutStored(object, off, recs, rawSize(recs), b)
			return loaded{recs: recs, stored: b, tier: TierDisk}, true
		}
		// A torn or corrupt cache file is a miss, never bad data.
		f.log.Warn("corrupt block in the disk cache; reading it again", "object", object, "off", off, "file", d.Path(object, off, length), "err", err)
		d.Remove(object, off, length)
	}
	f.tiers.miss(ctx, TierDisk)
	return loaded{}, false
}

func (f *Fetcher) fromPeer(ctx context.Context, owner Peer, object string, off, length int64) (loaded, error) {
	pctx, cancel := context.WithTimeout(ctx, peerTimeout)
	pctx, end := f.tiers.span(pctx, "fetch.peer", attribute.String("varve.peer", owner.ID))
	b, err := f.tiers.peers.GetBlock(pctx, owner.Addr, object, off, length)
	end(err)
	cancel()
	if err == nil && int64(len(b)) != length {
		err = fmt.Errorf("%w: node %s answered %d bytes for block %s bytes %d+%d", segment.ErrCorrupt, owner.ID, len(b), object, off, length)
	}
	var recs []segment.Record
	if err == nil {
		recs, err = segment.DecodeBlock(b)
	}
	if err == nil {
		f.tiers.hit(ctx, TierPeer)
		f.hits.Add(ctx, 1)
		// Only records: the owner keeps the stored bytes and the disk copy.
		f.blocks.Put(object, off, recs, rawSize(recs))
		return loaded{recs: recs, tier: TierPeer}, nil
	}
	// Whatever went wrong, the client is served from the bucket; an owner
	// that could not be reached is skipped until it answers again.
	f.tiers.miss(ctx, TierPeer)
	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		f.tiers.owners.Suspect(owner.ID, suspectFor)
	}
	f.log.Warn("block owner did not serve the block; reading the bucket", "owner", owner.ID, "addr", owner.Addr, "object", object, "off", off, "err", err)
	return f.fromBucket(ctx, object, off, length)
}

func (f *Fetcher) fromBucket(ctx context.Context, object string, off, length int64) (loaded, error) {
	f.tiers.hit(ctx, TierBucket)
	f.misses.Add(ctx, 1)
	f.gets.Add(ctx, 1)
	gctx, end := f.tiers.span(ctx, "store.get", attribute.String("varve.object", object), attribute.Int64("varve.off", off), attribute.Int64("varve.len", length))
	b, err := f.store.GetRange(gctx, object, off, length)
	end(err)
	if err != nil {
		if errors.Is(err, tier.ErrNotFound) || errors.Is(err, tier.ErrInvalidRange) {
			return loaded{}, fmt.Errorf("%w: object %s bytes %d+%d: %w", ErrDataLoss, object, off, length, err)
		}
		return loaded{}, fmt.Errorf("%w: read block %s@%d: %v", ErrUnavailable, object, off, err)
	}
	recs, err := segment.DecodeBlock(b)
	if err != nil {
		// Logged by the caller, who knows whether an index entry named
		// this range (tieredBlock) or a peer's request did (BlockBytes).
		return loaded{}, fmt.Errorf("%w: object %s bytes %d+%d: %w", ErrDataLoss, object, off, length, err)
	}
	if d := f.tiers.disk; d != nil {
		if err := d.Put(object, off, b); err != nil {
			f.log.Warn("disk cache write failed", "err", err)
		}
	}
	f.blocks.PutStored(object, off, recs, rawSize(recs), b)
	return loaded{recs: recs, stored: b, tier: TierBucket}, nil
}

// rawSize estimates the decoded bytes of records, for the memory bound
// when the index entry is not at hand.
func rawSize(recs []segment.Record) int64 {
	var n int64
	for i := range recs {
		r := &recs[i]
		n += int64(len(r.Key) + len(r.Value) + 8)
		for _, h := range r.Headers {
			n += int64(len(h.Key) + len(h.Value))
		}
	}
	return n
}
