package blockcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// Errors callers branch on.
var (
	// ErrDataLoss: a committed block could not be read back intact.
	ErrDataLoss = errors.New("data loss")
	// ErrUnavailable: object storage (or a peer) failed to answer; retry.
	ErrUnavailable = errors.New("object storage unavailable")
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

// PeerClient fetches blocks from another fetch node (the internal
// BlockService). Errors that mean the peer could not be reached or could
// not answer wrap ErrUnavailable.
type PeerClient interface {
	// GetBlock returns a block's stored bytes.
	GetBlock(ctx context.Context, addr, object string, off, length int64) ([]byte, error)
	// GetObject returns every block of a fresh level 0 object (of parts
	// only, when parts is not empty), by ascending offset, adding up to at
	// most maxBytes; each block's Stored must be its own allocation (they
	// are cached one by one). An owner that cannot answer the object whole
	// answers an error wrapping ErrNotWhole.
	GetObject(ctx context.Context, addr, object string, maxBytes int64, parts []TopicPartitions) ([]ObjectBlock, error)
}

// MaxBlockLength is the longest byte range a block can have: its header and
// a payload of at most segment.MaxBlockRawBytes.
const MaxBlockLength = segment.BlockHeaderSize + segment.MaxBlockRawBytes

const (
	// peerTimeout bounds one request to an owner; past it the block is read
	// from the bucket.
	peerTimeout = 5 * time.Second
	// objectTimeout bounds one request to an owner for a whole object (up
	// to DefaultWholeObjectBytes); past it the block is read from the
	// bucket.
	objectTimeout = 15 * time.Second
	// writerTimeout bounds one request to the ingest node that wrote a
	// fresh object, which answers from memory or not at all; past it the
	// fetch tier serves the block.
	writerTimeout = 2 * time.Second
	// suspectFor is how long an owner that failed to answer is skipped:
	// about a lease, after which the membership watch has dropped it.
	suspectFor = 10 * time.Second
	// loadTimeout bounds a shared read, which outlives the request that
	// started it.
	loadTimeout = time.Minute
)

// instrumentationScope names the meter and tracer. It is the read path's
// first package path, kept so that dashboards and alerts keep matching.
const instrumentationScope = "github.com/varve-io/varve/query"

// Reader reads blocks through the tiers, nearest first: the memory cache,
// the disk cache, the block's owner among the fetch nodes, and the bucket
// (the whole object, once, for a fresh L0 object; else one ranged GET).
// Concurrent reads of one block share one read. It is safe for concurrent
// use.
type Reader struct {
	store tier.Store
	mem   *Memory
	log   *slog.Logger

	gets   metric.Int64Counter
	hits   metric.Int64Counter
	misses metric.Int64Counter

	tiers blockTiers
	whole wholeObjects
	// remote is the state of the objects asked of their owners whole
	// (remote.go): the collapsing of concurrent asks, their bound, and
	// the objects answered.
	remote wholeObjects
	// writer is the state of the fresh objects asked of the ingest nodes
	// that wrote them (writer.go).
	writer wholeObjects
	// hot are the partitions this node was asked to fetch lately:
	// what it asks the owners of fresh objects for (hot.go).
	hot hotPartitions
}

// New makes a Reader of the blocks in store, keeping decoded blocks in mem.
// log and mp may be nil.
func New(store tier.Store, mem *Memory, log *slog.Logger, mp metric.MeterProvider) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(instrumentationScope)
	r := &Reader{store: store, mem: mem, log: log}
	r.gets, _ = m.Int64Counter("varve.fetch.object.gets", metric.WithDescription("Ranged GETs of blocks from object storage."))
	r.hits, _ = m.Int64Counter("varve.fetch.cache.hits", metric.WithDescription("Block reads served from the cache."))
	r.misses, _ = m.Int64Counter("varve.fetch.cache.misses", metric.WithDescription("Block reads that went to object storage."))
	r.tiers.init(r, m)
	r.whole.init()
	r.remote.init()
	r.writer.init()
	r.hot.settle = hotSettle
	return r
}

// Memory returns the memory tier (a node's ingester fills it at flush).
func (r *Reader) Memory() *Memory { return r.mem }

// Block returns the decoded records of an index entry's block: from the
// memory cache, else through the disk cache, the block's owner among the
// fetch nodes, or one ranged GET.
func (r *Reader) Block(ctx context.Context, e metadata.IndexEntry) ([]segment.Record, error) {
	if recs, ok := r.mem.Get(e.Object, e.Off); ok && int64(len(recs)) == e.Records {
		r.hits.Add(ctx, 1)
		r.tiers.hit(ctx, TierMemory)
		return recs, nil
	}
	r.tiers.miss(ctx, TierMemory)
	return r.tieredBlock(ctx, e)
}

// Reading notes that this node serves topic/p (a fetch of it is under
// way), before it reads any block of it: the owners of fresh objects are
// then asked for its blocks too (docs/cache.md, "Tail reads by object").
// Every fetch calls it (Block does not: a block read for another reason,
// a timestamp lookup, does not make its partition one this node serves);
// a fetch of many partitions notes them all first, so that its first ask
// of an object takes every one of them.
func (r *Reader) Reading(topic string, p int32) {
	r.hot.touch(topic, p, time.Now().UnixNano())
}

// ReadBlock GETs a block's byte range for a scan, unless it is in the
// memory cache: then it returns the cached records. Blocks read this way
// are not added to the cache, so a long scan does not evict what tailing
// consumers read.
func (r *Reader) ReadBlock(ctx context.Context, e metadata.IndexEntry) ([]byte, []segment.Record, error) {
	if recs, ok := r.mem.Get(e.Object, e.Off); ok {
		r.hits.Add(ctx, 1)
		return nil, recs, nil
	}
	r.misses.Add(ctx, 1)
	r.gets.Add(ctx, 1)
	b, err := r.store.GetRange(ctx, e.Object, e.Off, e.Len)
	if err != nil {
		if errors.Is(err, tier.ErrNotFound) || errors.Is(err, tier.ErrInvalidRange) {
			return nil, nil, DataLoss(e, err)
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("%w: read block %s@%d: %v", ErrUnavailable, e.Object, e.Off, err)
	}
	return b, nil, nil
}

// DataLoss is the error of the block of e that could not be read back
// intact because of err.
func DataLoss(e metadata.IndexEntry, err error) error {
	return fmt.Errorf("%w: %s/%d offsets %d-%d: object %s bytes %d+%d: %v", ErrDataLoss, e.Topic, e.Partition, e.Base, e.End()-1, e.Object, e.Off, e.Len, err)
}

// blockTiers is the state of the read path below the memory cache: the disk
// cache, the owners of blocks, and the collapsing of concurrent reads.
type blockTiers struct {
	disk   *Disk
	owners *Owners
	peers  PeerClient
	sf     singleflight.Group

	hits      metric.Int64Counter
	misses    metric.Int64Counter
	collapsed metric.Int64Counter
	calls     metric.Int64Counter
	received  metric.Int64Counter // blocks taken from peers' GetObject answers
	attrs     map[Tier]metric.MeasurementOption
	rpcAttrs  map[string]metric.MeasurementOption

	tracer trace.Tracer // nil: no spans
}

func (t *blockTiers) init(r *Reader, m metric.Meter) {
	t.attrs = map[Tier]metric.MeasurementOption{}
	for _, tr := range []Tier{TierMemory, TierDisk, TierPeer, TierBucket} {
		t.attrs[tr] = metric.WithAttributeSet(attribute.NewSet(attribute.String("tier", string(tr))))
	}
	t.hits, _ = m.Int64Counter("varve.cache.hits", metric.WithDescription("Block reads served, by the tier that served them (memory, disk, peer, bucket)."))
	t.misses, _ = m.Int64Counter("varve.cache.misses", metric.WithDescription("Block reads a tier could not serve (memory, disk, peer), passed to the next tier."))
	t.collapsed, _ = m.Int64Counter("varve.cache.collapsed", metric.WithDescription("Block reads that waited for the same block's read already under way instead of starting another."))
	t.rpcAttrs = map[string]metric.MeasurementOption{}
	for _, rpc := range []string{rpcGetBlock, rpcGetObject} {
		t.rpcAttrs[rpc] = metric.WithAttributeSet(attribute.NewSet(attribute.String("rpc", rpc)))
	}
	t.calls, _ = m.Int64Counter("varve.cache.peer.calls", metric.WithDescription("Calls to other fetch nodes' internal BlockService, by rpc: GetBlock (one block) or GetObject (every block of a fresh object)."))
	for _, o := range t.rpcAttrs {
		t.calls.Add(context.Background(), 0, o)
	}
	t.received, _ = m.Int64Counter("varve.cache.peer.object_blocks", metric.WithDescription("Blocks other fetch nodes answered this node's GetObject calls with: those of the partitions it serves, or every block of the object while they change (docs/cache.md)."))
	t.received.Add(context.Background(), 0)
	_, _ = m.Int64ObservableGauge("varve.cache.bytes", metric.WithUnit("By"),
		metric.WithDescription("Bytes held by the block cache, by tier (memory, disk)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if r.mem != nil {
				o.Observe(r.mem.Size(), t.attrs[TierMemory])
			}
			if t.disk != nil {
				o.Observe(t.disk.Size(), t.attrs[TierDisk])
			}
			return nil
		}))
	// Autoscaling reads the misses (terraform/modules/varve): they exist
	// from the start, at 0.
	r.hits.Add(context.Background(), 0)
	r.misses.Add(context.Background(), 0)
}

// SetTracerProvider makes block reads below the memory cache traced:
// fetch.block (attribute varve.tier: where it was served from), with
// store.get for a GET of the bucket, fetch.peer for a read from the
// block's owner and fetch.peer.object for a fresh object asked of its
// owner whole. Call it before the reader serves; nil: no spans.
func (r *Reader) SetTracerProvider(tp trace.TracerProvider) {
	if tp != nil {
		r.tiers.tracer = tp.Tracer(instrumentationScope)
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

// SetDisk adds the disk tier. Call it before the reader serves.
func (r *Reader) SetDisk(d *Disk) { r.tiers.disk = d }

// Disk returns the disk tier (nil without one).
func (r *Reader) Disk() *Disk { return r.tiers.disk }

// SetOwners makes the reader one of several fetch nodes: a block another
// node owns is asked of that node through peers, and only the owner reads
// the bucket. Call it before the reader serves.
func (r *Reader) SetOwners(o *Owners, peers PeerClient) { r.tiers.owners, r.tiers.peers = o, peers }

// Owners returns the ownership of blocks (nil on a lone reader).
func (r *Reader) Owners() *Owners { return r.tiers.owners }

// loaded is the result of a shared read of one block: its records, or
// (from the memory tier or a whole object's read) its checked stored bytes
// and record count only, decoded by whoever needs the records (decoded).
type loaded struct {
	recs    []segment.Record
	stored  []byte // nil when the records came from a peer
	records int64  // the block's record count when recs is nil
	tier    Tier
}

// decoded returns l's records, decoding its stored bytes (once per cached
// block: the memory tier decodes a block at its first Get) when the read
// did not.
func (r *Reader) decoded(object string, off int64, l loaded) ([]segment.Record, error) {
	if l.recs != nil || l.stored == nil {
		return l.recs, nil
	}
	if recs, ok := r.mem.Get(object, off); ok && int64(len(recs)) == l.records {
		return recs, nil
	}
	return segment.DecodeBlock(l.stored)
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
func (r *Reader) tieredBlock(ctx context.Context, e metadata.IndexEntry) ([]segment.Record, error) {
	l, err := r.tieredLoad(ctx, e, true)
	return l.recs, err
}

// tieredLoad is tieredBlock's read. With decode false, a block whose read
// handed over its checked stored bytes (the memory tier, a whole object's
// read) is returned as those bytes and its record count, not decoded.
func (r *Reader) tieredLoad(ctx context.Context, e metadata.IndexEntry, decode bool) (l loaded, err error) {
	ctx, end := r.tiers.span(ctx, "fetch.block", attribute.String("varve.topic", e.Topic), attribute.Int("varve.partition", int(e.Partition)),
		attribute.Int64("varve.base", e.Base), attribute.String("varve.object", e.Object), attribute.Int64("varve.off", e.Off), attribute.Int64("varve.len", e.Len))
	defer func() { end(err, attribute.String("varve.tier", string(l.tier))) }()
	if w, ok := r.writerOf(e); ok {
		// Its writer, an ingest node without the fetch role, may hold it.
		l, err = r.shared(ctx, "writer", e.Object, e.Off, e.Len, func(lctx context.Context) (loaded, error) {
			return r.fromWriter(lctx, w, e.Object, e.Off, e.Len)
		})
		if err == nil {
			return r.checkedLoad(e, l, nil, decode)
		}
		if ctx.Err() != nil {
			return loaded{}, ctx.Err()
		}
		err = nil // not from the writer: the tiers below
	}
	owner, remote, whole := Peer{}, false, false
	if r.tiers.owners != nil && r.tiers.peers != nil {
		if writer, ok := perObject(e); ok {
			owner, remote = r.tiers.owners.ObjectOwner(e.Object, writer)
			whole = remote && r.readsWhole(e.Object, e.Off, e.Len)
		} else {
			owner, remote = r.tiers.owners.Owner(e.Object, e.Off)
		}
	}
	switch {
	case whole:
		// A fresh object's owner is asked for the whole object, once.
		l, err = r.shared(ctx, "peer", e.Object, e.Off, e.Len, func(lctx context.Context) (loaded, error) {
			return r.fromOwnersObject(lctx, owner, e.Object, e.Off, e.Len)
		})
	case remote:
		l, err = r.shared(ctx, "peer", e.Object, e.Off, e.Len, func(lctx context.Context) (loaded, error) {
			return r.fromPeer(lctx, owner, e.Object, e.Off, e.Len)
		})
	default:
		l, err = r.ownedBlock(ctx, e.Object, e.Off, e.Len)
	}
	return r.checkedLoad(e, l, err, decode)
}

// checkedLoad ends tieredLoad: unless the load failed (err), it decodes
// the block when asked (or when the load did not keep its stored bytes)
// and checks its record count against the index entry.
func (r *Reader) checkedLoad(e metadata.IndexEntry, l loaded, err error, decode bool) (loaded, error) {
	if err == nil && (decode || l.stored == nil) {
		l.recs, err = r.decoded(e.Object, e.Off, l)
		if err != nil {
			err = fmt.Errorf("%w: object %s bytes %d+%d: %w", ErrDataLoss, e.Object, e.Off, e.Len, err)
		}
	}
	n := l.records
	if l.recs != nil {
		n = int64(len(l.recs))
	}
	if err == nil && n != e.Records {
		err = fmt.Errorf("%w: %w: object %s bytes %d+%d: block has %d records, the index says %d",
			ErrDataLoss, segment.ErrCorrupt, e.Object, e.Off, e.Len, n, e.Records)
	}
	if err != nil {
		if errors.Is(err, segment.ErrCorrupt) {
			r.log.Error("corrupt block", "topic", e.Topic, "partition", e.Partition, "offsets", fmt.Sprintf("%d-%d", e.Base, e.End()-1), "object", e.Object, "off", e.Off, "err", err)
		}
		return loaded{tier: l.tier}, blockErr(e, err)
	}
	return l, nil
}

// BlockStored is Block for a fetch that ships record batches as stored
// (fetch.FetchBatches): through the same tiers, it returns the block's
// stored bytes, checked (header, CRC, record count) but not decoded, when
// a tier has them — the memory tier, or the whole-object read of a fresh
// object from its owner or the bucket (a node that did not write the
// object used to decode every block of it only to ship its bytes) —, else
// its records (a block held only decoded).
func (r *Reader) BlockStored(ctx context.Context, e metadata.IndexEntry) ([]byte, []segment.Record, error) {
	if b, ok := r.mem.Stored(e.Object, e.Off); ok && int64(len(b)) == e.Len {
		// Checked by the caller's BlockBatches, as every stored block is.
		r.hits.Add(ctx, 1)
		r.tiers.hit(ctx, TierMemory)
		return b, nil, nil
	}
	if recs, ok := r.mem.Get(e.Object, e.Off); ok && int64(len(recs)) == e.Records {
		r.hits.Add(ctx, 1)
		r.tiers.hit(ctx, TierMemory)
		return nil, recs, nil
	}
	r.tiers.miss(ctx, TierMemory)
	l, err := r.tieredLoad(ctx, e, false)
	if err != nil {
		return nil, nil, err
	}
	if l.recs != nil {
		return nil, l.recs, nil
	}
	return l.stored, nil, nil
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
func (r *Reader) BlockBytes(ctx context.Context, object string, off, length int64) ([]byte, Tier, error) {
	if off < 0 || length < segment.BlockHeaderSize || length > MaxBlockLength {
		return nil, "", fmt.Errorf("%w: block %q bytes %d+%d: want an object key, offset ≥ 0 and %d ≤ length ≤ %d",
			metadata.ErrInvalidArgument, object, off, length, segment.BlockHeaderSize, MaxBlockLength)
	}
	if err := tier.ValidateKey(object); err != nil {
		return nil, "", fmt.Errorf("%w: block bytes %d+%d: %w", metadata.ErrInvalidArgument, off, length, err)
	}
	if b, ok := r.mem.Stored(object, off); ok && int64(len(b)) == length {
		r.tiers.hit(ctx, TierMemory)
		return b, TierMemory, nil
	}
	l, err := r.ownedBlock(ctx, object, off, length)
	switch {
	case err == nil:
		return l.stored, l.tier, nil
	case errors.Is(err, segment.ErrCorrupt) || errors.Is(err, tier.ErrInvalidRange):
		listed, ferr := r.listsBlock(ctx, object, off, length)
		if ferr == nil && !listed {
			return nil, "", fmt.Errorf("%w: object %s has no block at bytes %d+%d", metadata.ErrInvalidArgument, object, off, length)
		}
		if errors.Is(err, segment.ErrCorrupt) {
			r.log.Error("corrupt block", "object", object, "off", off, "err", err)
		}
	}
	return nil, "", err
}

// listsBlock reports whether object's footer lists a block at bytes
// off+length: two ranged reads of the object's end.
func (r *Reader) listsBlock(ctx context.Context, object string, off, length int64) (bool, error) {
	info, err := r.store.Head(ctx, object)
	if err != nil {
		return false, err
	}
	if info.Size < segment.TrailerSize {
		return false, fmt.Errorf("%w: object %s of %d bytes has no trailer", segment.ErrCorrupt, object, info.Size)
	}
	trailer, err := r.store.GetRange(ctx, object, info.Size-segment.TrailerSize, segment.TrailerSize)
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
	tail, err := r.store.GetRange(ctx, object, info.Size-segment.TrailerSize-n, n+segment.TrailerSize)
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
// serves a peer): disk, then bucket — the whole object, once, for a fresh
// level 0 object, else the block's range —, shared by every concurrent
// caller.
func (r *Reader) ownedBlock(ctx context.Context, object string, off, length int64) (loaded, error) {
	return r.shared(ctx, "own", object, off, length, func(lctx context.Context) (loaded, error) {
		whole := r.readsWhole(object, off, length)
		if whole {
			// A whole read of the object may have cached it since the
			// caller missed it.
			if l, ok := r.fromMemory(lctx, object, off, length); ok {
				return l, nil
			}
		}
		if l, ok := r.fromDisk(lctx, object, off, length); ok {
			return l, nil
		}
		if whole {
			if l, ok := r.fromWhole(lctx, object, off, length); ok {
				return l, nil
			}
		}
		return r.fromBucket(lctx, object, off, length)
	})
}

// shared runs load once for concurrent callers of the same block and kind,
// detached from any one caller's cancellation; each caller waits for it or
// for its own context.
func (r *Reader) shared(ctx context.Context, kind, object string, off, length int64, load func(context.Context) (loaded, error)) (loaded, error) {
	key := kind + "\x00" + object + "\x00" + strconv.FormatInt(off, 10) + "\x00" + strconv.FormatInt(length, 10)
	ch := r.tiers.sf.DoChan(key, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
		defer cancel()
		return load(lctx)
	})
	select {
	case res := <-ch:
		if res.Shared {
			r.tiers.collapsed.Add(context.WithoutCancel(ctx), 1)
		}
		if res.Err != nil {
			return loaded{}, res.Err
		}
		return res.Val.(loaded), nil
	case <-ctx.Done():
		return loaded{}, ctx.Err()
	}
}

func (r *Reader) fromDisk(ctx context.Context, object string, off, length int64) (loaded, bool) {
	d := r.tiers.disk
	if d == nil {
		return loaded{}, false
	}
	b, ok := d.Get(object, off, length)
	if ok {
		recs, err := segment.DecodeBlock(b)
		if err == nil {
			r.tiers.hit(ctx, TierDisk)
			r.hits.Add(ctx, 1)
			r.mem.PutStored(object, off, recs, rawSize(recs), b)
			return loaded{recs: recs, stored: b, tier: TierDisk}, true
		}
		// A torn or corrupt cache file is a miss, never bad data.
		r.log.Warn("corrupt block in the disk cache; reading it again", "object", object, "off", off, "file", d.Path(object, off, length), "err", err)
		d.Remove(object, off, length)
	}
	r.tiers.miss(ctx, TierDisk)
	return loaded{}, false
}

func (r *Reader) fromPeer(ctx context.Context, owner Peer, object string, off, length int64) (loaded, error) {
	pctx, cancel := context.WithTimeout(ctx, peerTimeout)
	pctx, end := r.tiers.span(pctx, "fetch.peer", attribute.String("varve.peer", owner.ID))
	r.tiers.calls.Add(ctx, 1, r.tiers.rpcAttrs[rpcGetBlock])
	b, err := r.tiers.peers.GetBlock(pctx, owner.Addr, object, off, length)
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
		r.tiers.hit(ctx, TierPeer)
		r.hits.Add(ctx, 1)
		// Only records: the owner keeps the stored bytes and the disk copy.
		r.mem.Put(object, off, recs, rawSize(recs))
		return loaded{recs: recs, tier: TierPeer}, nil
	}
	// Whatever went wrong, the client is served from the bucket; an owner
	// that could not be reached is skipped until it answers again.
	r.tiers.miss(ctx, TierPeer)
	if errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		r.tiers.owners.Suspect(owner.ID, suspectFor)
	}
	r.log.Warn("block owner did not serve the block; reading the bucket", "owner", owner.ID, "addr", owner.Addr, "object", object, "off", off, "err", err)
	return r.ownedBlock(ctx, object, off, length)
}

func (r *Reader) fromBucket(ctx context.Context, object string, off, length int64) (loaded, error) {
	r.tiers.hit(ctx, TierBucket)
	r.misses.Add(ctx, 1)
	r.gets.Add(ctx, 1)
	gctx, end := r.tiers.span(ctx, "store.get", attribute.String("varve.object", object), attribute.Int64("varve.off", off), attribute.Int64("varve.len", length))
	b, err := r.store.GetRange(gctx, object, off, length)
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
	if d := r.tiers.disk; d != nil {
		if err := d.Put(object, off, b); err != nil {
			r.log.Warn("disk cache write failed", "err", err)
		}
	}
	r.mem.PutStored(object, off, recs, rawSize(recs), b)
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
