package blockcache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// TestObjectTooLargeForTheAskerIsReadPerBlock: a fetcher whose memory tier
// is too small to take a fresh object whole asks its owner for it once;
// the owner refuses (ErrNotWhole), and the fetcher asks for each block
// instead — never for the object again — with no GET.
func TestObjectTooLargeForTheAskerIsReadPerBlock(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := flushKey("b", 1)
	entries := writeSegment(t, fs, key, 20, 200)
	last := entries[len(entries)-1]
	size := last.Off + last.Len
	fetchers, peers := cluster(rec, 64<<20, "a", "b")
	fetchers[1].Memory().PutObject(key, objectBlocks(t, fs, entries))
	// a takes objects whole up to a bound that holds the first block only.
	fetchers[0].SetWholeObjectBytes(entries[0].Off + entries[0].Len)
	reading(fetchers[0], entries)
	ctx := context.Background()
	for range 2 {
		for p, e := range entries {
			recs, err := fetchers[0].Block(ctx, e)
			checkBlock(t, recs, err, p, 200)
		}
	}
	if g := gets(rec); len(g) != 0 {
		t.Fatalf("GETs %v, want none (the owner holds the object)", g)
	}
	if peers.objects != 1 || peers.calls != len(entries) {
		t.Fatalf("%d GetObject and %d GetBlock calls for an object of %d bytes in %d blocks, want 1 refused GetObject, then one GetBlock per block",
			peers.objects, peers.calls, size, len(entries))
	}
}

// twoObjectsOfB makes fetchers a and b, and two fresh objects of
// partitions blocks of 20 records each that b wrote and holds in memory.
// It returns the recorder of the bucket, the second object's key, the
// objects' entries, the fetchers and their peer calls.
func twoObjectsOfB(t *testing.T, partitions int) (*tier.Recorder, string, []metadata.IndexEntry, []metadata.IndexEntry, []*blockcache.Reader, *fetcherPeers) {
	t.Helper()
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key1, key2 := flushKey("b", 1), flushKey("b", 2)
	e1 := writeSegment(t, fs, key1, partitions, 20)
	e2 := writeSegment(t, fs, key2, partitions, 20)
	fetchers, peers := cluster(rec, 64<<20, "a", "b")
	fetchers[1].Memory().PutObject(key1, objectBlocks(t, fs, e1))
	fetchers[1].Memory().PutObject(key2, objectBlocks(t, fs, e2))
	return rec, key2, e1, e2, fetchers, peers
}

// TestOwnerGoneAfterAnswering: blocks of an object the owner answered stay
// served from memory once the owner is gone; an object asked of the gone
// owner is read from the bucket whole, once.
func TestOwnerGoneAfterAnswering(t *testing.T) {
	rec, key2, e1, e2, fetchers, peers := twoObjectsOfB(t, 10)
	reading(fetchers[0], e1)
	ctx := context.Background()
	recs, err := fetchers[0].Block(ctx, e1[0])
	checkBlock(t, recs, err, 0, 20)
	peers.mu.Lock()
	delete(peers.nodes, "addr-b")
	peers.mu.Unlock()
	for _, entries := range [][]metadata.IndexEntry{e1, e2} {
		for p, e := range entries {
			recs, err := fetchers[0].Block(ctx, e)
			checkBlock(t, recs, err, p, 20)
		}
	}
	if g := gets(rec); len(g) != 1 || g[0] != key2+" 0+-1" {
		t.Fatalf("GETs %v, want one whole read of the object asked after the owner went", g)
	}
	if peers.objects != 2 || peers.calls != 0 {
		t.Fatalf("%d GetObject, %d GetBlock calls, want 2 GetObject (one answered, one failed)", peers.objects, peers.calls)
	}
}

// TestObjectBytesBadInputs: requests that name no fresh object, or ask for
// no bytes or more than MaxObjectBytes, are refused as invalid arguments
// before anything is read or cached; an object larger than max_bytes is
// ErrNotWhole, a missing one data loss, and neither is cached.
func TestObjectBytesBadInputs(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := flushKey("ingest-1", 1)
	entries := writeSegment(t, fs, key, 4, 20)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		object   string
		maxBytes int64
		want     error
		gets     int
	}{
		{"empty key", "", 1 << 20, metadata.ErrInvalidArgument, 0},
		{"parent segment", "../" + key, 1 << 20, metadata.ErrInvalidArgument, 0},
		{"too long", strings.Repeat("k", tier.MaxKeyLen+1), 1 << 20, metadata.ErrInvalidArgument, 0},
		{"not a flush's key", "seg/x.vseg", 1 << 20, metadata.ErrInvalidArgument, 0},
		{"compacted object", tier.CompactedKey(1, "t", 0, 0, 100, "c"), 1 << 20, metadata.ErrInvalidArgument, 0},
		{"zero max_bytes", key, 0, metadata.ErrInvalidArgument, 0},
		{"max_bytes over the bound", key, blockcache.MaxObjectBytes + 1, metadata.ErrInvalidArgument, 0},
		{"missing object", flushKey("ingest-1", 2), 1 << 20, blockcache.ErrDataLoss, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			f := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
			blocks, _, err := f.ObjectBytes(ctx, tc.object, tc.maxBytes, nil)
			if !errors.Is(err, tc.want) || blocks != nil {
				t.Fatalf("got %d blocks, %v; want %v", len(blocks), err, tc.want)
			}
			if g := gets(rec); len(g) != tc.gets {
				t.Fatalf("GETs %v, want %d", g, tc.gets)
			}
			if n := f.Memory().Size(); n != 0 {
				t.Fatalf("%d bytes cached", n)
			}
		})
	}
	// An object held in memory but larger than max_bytes: refused, no GET.
	rec.Reset()
	f := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
	f.Memory().PutObject(key, objectBlocks(t, fs, entries))
	cached := f.Memory().Size()
	if _, _, err := f.ObjectBytes(ctx, key, entries[0].Len, nil); !errors.Is(err, blockcache.ErrNotWhole) {
		t.Fatalf("object over max_bytes: %v, want ErrNotWhole", err)
	}
	blocks, tr, err := f.ObjectBytes(ctx, key, 1<<20, nil)
	if err != nil || len(blocks) != len(entries) || tr != blockcache.TierMemory {
		t.Fatalf("object in memory: %d blocks from %q, %v; want %d from memory", len(blocks), tr, err, len(entries))
	}
	if g := gets(rec); len(g) != 0 || f.Memory().Size() != cached {
		t.Fatalf("GETs %v, cache %d → %d bytes", g, cached, f.Memory().Size())
	}
}

// TestRememberedObjectsAreBounded: the memory tier remembers the blocks of
// the last objects only, and answers an object whole only while every
// block of it is cached.
func TestRememberedObjectsAreBounded(t *testing.T) {
	mem := blockcache.NewMemory(64 << 20)
	block := func(off int64) blockcache.ObjectBlock {
		return blockcache.ObjectBlock{Offset: off, Stored: make([]byte, 40), Records: 1, RawBytes: 10}
	}
	for i := range 1100 {
		mem.PutObject(fmt.Sprint("o", i), []blockcache.ObjectBlock{block(8), block(48)})
	}
	if _, ok := mem.ObjectBlocks("o0", nil); ok {
		t.Fatal("the first of 1,100 objects is still remembered")
	}
	if b, ok := mem.ObjectBlocks("o1099", nil); !ok || len(b) != 2 || b[1].Offset != 48 {
		t.Fatalf("the last object: %v %v", b, ok)
	}
	// A block missing from the cache: not answered whole.
	mem.RememberObject("partial", []blockcache.ObjectBlock{block(8), block(48)})
	mem.PutEncoded("partial", 8, make([]byte, 40), 1, 10)
	if _, ok := mem.ObjectBlocks("partial", nil); ok {
		t.Fatal("an object with an uncached block was answered whole")
	}
}

// TestOwnerDeadConcurrentReaders: many concurrent readers of the blocks of
// objects whose owner is gone ask it for each object at most once and never
// for a block: a reader that joins after the failed ask (it missed the
// memory tier before the ask ended) reads the bucket too, as the ask's own
// callers did, instead of asking the suspected owner for its block.
func TestOwnerDeadConcurrentReaders(t *testing.T) {
	fs := newFS(t)
	const objects, blocks = 4, 64
	var keys []string
	var all [][]metadata.IndexEntry
	for i := range objects {
		key := flushKey("b", uint64(i+1))
		keys = append(keys, key)
		all = append(all, writeSegment(t, fs, key, blocks, 2))
	}
	ctx := context.Background()
	for round := range 200 {
		rec := tier.NewRecorder(fs)
		fetchers, peers := cluster(rec, 64<<20, "a", "b")
		peers.mu.Lock()
		delete(peers.nodes, "addr-b")
		peers.mu.Unlock()
		var wg sync.WaitGroup
		for _, entries := range all {
			for p, e := range entries {
				wg.Go(func() {
					recs, err := fetchers[0].Block(ctx, e)
					if err != nil || len(recs) != 2 {
						t.Errorf("block of partition %d: %d records, %v", p, len(recs), err)
					}
				})
			}
		}
		wg.Wait()
		if peers.calls != 0 || peers.objects > objects {
			t.Fatalf("round %d: %d GetBlock and %d GetObject calls to the dead owner, want none and at most %d", round, peers.calls, peers.objects, objects)
		}
	}
}

// TestAskerTakesItsPartitionsOnly: a fetch node whose partitions have
// settled asks the owner of a fresh object for the blocks of the
// partitions it serves, and caches only those; a block of a partition it
// begins to read afterwards is asked for alone, and the next object's ask
// names that partition too. What it was answered is never served to others
// as the whole object. While its partitions grow (TestHotPartitionsSettle)
// it asks for whole objects.
func TestAskerTakesItsPartitionsOnly(t *testing.T) {
	rec, key2, e1, e2, fetchers, peers := twoObjectsOfB(t, 8)
	key1 := e1[0].Object
	a := fetchers[0]
	blockcache.SetHotSettle(a, 0) // as if a's consumers had read for a while
	ctx := context.Background()

	reading(a, e1[:4]) // a's consumers read partitions 0-3
	for p, e := range e1[:4] {
		recs, err := a.Block(ctx, e)
		checkBlock(t, recs, err, p, 20)
	}
	if peers.objects != 1 || peers.calls != 0 {
		t.Fatalf("%d GetObject, %d GetBlock calls, want 1 GetObject", peers.objects, peers.calls)
	}
	for p, e := range e1 {
		if _, ok := a.Memory().Stored(key1, e.Off); ok != (p < 4) {
			t.Fatalf("partition %d's block cached: %v, want %v (only the partitions read)", p, ok, p < 4)
		}
	}

	// Partition 5 begins to be read: its block of the object asked
	// already is asked for alone; the next object's ask names it.
	reading(a, e1[5:6])
	recs, err := a.Block(ctx, e1[5])
	checkBlock(t, recs, err, 5, 20)
	if peers.objects != 1 || peers.calls != 1 {
		t.Fatalf("%d GetObject, %d GetBlock calls, want 1 and 1", peers.objects, peers.calls)
	}
	for _, p := range []int{5, 0, 1, 2, 3} {
		recs, err := a.Block(ctx, e2[p])
		checkBlock(t, recs, err, p, 20)
	}
	if peers.objects != 2 || peers.calls != 1 {
		t.Fatalf("%d GetObject, %d GetBlock calls, want 2 and 1", peers.objects, peers.calls)
	}
	if _, ok := a.Memory().Stored(key2, e2[4].Off); ok {
		t.Fatal("a block of an unread partition was cached")
	}
	if g := gets(rec); len(g) != 0 {
		t.Fatalf("GETs %v, want none (the owner holds both objects)", g)
	}

	// a holds some blocks of key1: asked for the object, it reads it
	// whole rather than answer with what it has.
	blocks, tr, err := a.ObjectBytes(ctx, key1, 1<<20, nil)
	if err != nil || len(blocks) != len(e1) || tr != blockcache.TierBucket {
		t.Fatalf("ObjectBytes of a partly cached object: %d blocks from %q, %v; want %d from the bucket", len(blocks), tr, err, len(e1))
	}
}

// TestObjectBytesPartitions: an owner answers the blocks of the partitions
// asked for (none when the object has none of them), checks max_bytes
// against those, and refuses a malformed list before reading anything.
func TestObjectBytesPartitions(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := flushKey("ingest-1", 1)
	entries := writeSegment(t, fs, key, 6, 20)
	f := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
	f.Memory().PutObject(key, objectBlocks(t, fs, entries))
	ctx := context.Background()

	parts := []blockcache.TopicPartitions{{Topic: "t", Partitions: []int32{3, 1}}, {Topic: "other", Partitions: []int32{1}}}
	blocks, _, err := f.ObjectBytes(ctx, key, entries[1].Len+entries[3].Len, parts)
	if err != nil || len(blocks) != 2 || blocks[0].Offset != entries[1].Off || blocks[1].Offset != entries[3].Off {
		t.Fatalf("partitions 1 and 3: %d blocks, %v; want the blocks of partitions 1 and 3 by offset", len(blocks), err)
	}
	if _, _, err := f.ObjectBytes(ctx, key, entries[1].Len, parts); !errors.Is(err, blockcache.ErrNotWhole) {
		t.Fatalf("two blocks over max_bytes: %v, want ErrNotWhole", err)
	}
	blocks, _, err = f.ObjectBytes(ctx, key, 1<<20, []blockcache.TopicPartitions{{Topic: "other", Partitions: []int32{0}}})
	if err != nil || len(blocks) != 0 {
		t.Fatalf("a topic the object does not hold: %d blocks, %v; want none", len(blocks), err)
	}

	many := make([]int32, blockcache.MaxAskPartitions+1)
	for i := range many {
		many[i] = int32(i)
	}
	for name, bad := range map[string][]blockcache.TopicPartitions{
		"no topic":           {{Topic: "", Partitions: []int32{0}}},
		"topic twice":        {{Topic: "t", Partitions: []int32{0}}, {Topic: "t", Partitions: []int32{1}}},
		"negative partition": {{Topic: "t", Partitions: []int32{-1}}},
		"too many":           {{Topic: "t", Partitions: many}},
	} {
		rec.Reset()
		g := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
		blocks, _, err := g.ObjectBytes(ctx, key, 1<<20, bad)
		if !errors.Is(err, metadata.ErrInvalidArgument) || blocks != nil || len(gets(rec)) != 0 {
			t.Fatalf("%s: %d blocks, %v, GETs %v; want ErrInvalidArgument before any read", name, len(blocks), err, gets(rec))
		}
	}
}

// TestHotPartitionsSettle: while the partitions a node reads keep growing
// (consumers starting, a rebalance), it asks for whole objects, so that a
// block of a partition first read after the ask costs no call of its own.
func TestHotPartitionsSettle(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := flushKey("b", 1)
	entries := writeSegment(t, fs, key, 8, 20)
	fetchers, peers := cluster(rec, 64<<20, "a", "b")
	a := fetchers[0]
	fetchers[1].Memory().PutObject(key, objectBlocks(t, fs, entries))
	ctx := context.Background()
	for p, e := range entries { // each partition first fetched here
		reading(a, entries[p:p+1])
		recs, err := a.Block(ctx, e)
		checkBlock(t, recs, err, p, 20)
	}
	if peers.objects != 1 || peers.calls != 0 {
		t.Fatalf("%d GetObject, %d GetBlock calls, want 1 GetObject for the whole object", peers.objects, peers.calls)
	}
}

// BenchmarkObjectBytesPartitions: an owner answers a peer's ask for the
// blocks of 250 of the 1,000 partitions of a fresh object it holds in
// memory (four fetch nodes at 1,000 partitions).
func BenchmarkObjectBytesPartitions(b *testing.B) {
	const partitions = 1000
	blocks := make([]blockcache.ObjectBlock, partitions)
	for p := range blocks {
		blocks[p] = blockcache.ObjectBlock{Offset: int64(8 + 64*p), Stored: make([]byte, 64), Records: 1, RawBytes: 40, Topic: "t", Partition: int32(p)}
	}
	key := flushKey("ingest-1", 1)
	f := blockcache.New(nil, blockcache.NewMemory(64<<20), nil, nil)
	f.Memory().PutObject(key, blocks)
	var ps []int32
	for p := int32(1); p < partitions; p += 4 {
		ps = append(ps, p)
	}
	parts := []blockcache.TopicPartitions{{Topic: "t", Partitions: ps}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		got, _, err := f.ObjectBytes(ctx, key, 1<<20, parts)
		if err != nil || len(got) != len(ps) {
			b.Fatalf("%d blocks, %v", len(got), err)
		}
	}
}

// TestBatchFetchDecodesNothing: a fetch that ships stored batches
// (BlockStored) of a fresh object another node owns gets the blocks' bytes
// from the owner's whole-object answer without decoding any; a record
// fetch of the same block decodes it then, once; a block the owner
// answered corrupt is not served from those bytes.
func TestBatchFetchDecodesNothing(t *testing.T) {
	rec, _, e1, _, fetchers, peers := twoObjectsOfB(t, 4)
	a, ctx := fetchers[0], context.Background()
	reading(a, e1)
	for p, e := range e1 {
		b, recs, err := a.BlockStored(ctx, e)
		if err != nil || recs != nil || int64(len(b)) != e.Len {
			t.Fatalf("partition %d: %d stored bytes, %d records, %v; want the block's %d bytes", p, len(b), len(recs), err, e.Len)
		}
		if blockcache.Decoded(a.Memory(), e.Object, e.Off) {
			t.Fatalf("partition %d: the block was decoded to ship its bytes", p)
		}
	}
	if peers.objects != 1 || peers.calls != 0 {
		t.Fatalf("%d GetObject, %d GetBlock calls, want 1 GetObject", peers.objects, peers.calls)
	}
	recs, err := a.Block(ctx, e1[2])
	checkBlock(t, recs, err, 2, 20)
	if !blockcache.Decoded(a.Memory(), e1[2].Object, e1[2].Off) {
		t.Fatal("a record fetch did not keep the block decoded")
	}

	// The owner's copy of a third object is corrupt: the asker checks
	// each block's CRC and serves the block by another read (here the
	// owner's block answer, then the bucket), never those bytes.
	key3 := flushKey("b", 3)
	e3 := writeSegment(t, rec, key3, 4, 20)
	bad := objectBlocks(t, rec, e3)
	for i := range bad {
		bad[i].Stored = append([]byte(nil), bad[i].Stored...)
		bad[i].Stored[len(bad[i].Stored)-1] ^= 0xff
	}
	fetchers[1].Memory().PutObject(key3, bad)
	reading(a, e3)
	b, recs, err := a.BlockStored(ctx, e3[1])
	if err != nil {
		t.Fatal(err)
	}
	if recs == nil {
		if _, err := segment.CheckBlock(b); err != nil {
			t.Fatalf("shipped the owner's corrupt bytes: %v", err)
		}
	} else {
		checkBlock(t, recs, nil, 1, 20)
	}
}
