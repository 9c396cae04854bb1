package blockcache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
)

// flushKey names an object as ingest node writer's flush does.
func flushKey(writer string, flush uint64) string {
	return tier.FlushKey("seg/", writer, flush, time.Now())
}

// cluster makes fetchers with the given ids sharing one membership, reading
// st, each with a memory tier of memBytes.
func cluster(st tier.Store, memBytes int64, ids ...string) ([]*blockcache.Reader, *fetcherPeers) {
	members := map[string]string{}
	for _, id := range ids {
		members[id] = "addr-" + id
	}
	peers := &fetcherPeers{nodes: map[string]*blockcache.Reader{}}
	var out []*blockcache.Reader
	for _, id := range ids {
		f := blockcache.New(st, blockcache.NewMemory(memBytes), nil, nil)
		o := blockcache.NewOwners(id)
		o.Set(members)
		f.SetOwners(o, peers)
		peers.nodes[members[id]] = f
		out = append(out, f)
	}
	return out, peers
}

// objectBlocks reads the blocks of entries (one object's) as the node that
// stored them caches them (Memory.PutObject).
func objectBlocks(t *testing.T, st tier.Store, entries []metadata.IndexEntry) []blockcache.ObjectBlock {
	t.Helper()
	var out []blockcache.ObjectBlock
	for _, e := range entries {
		b, err := st.GetRange(context.Background(), e.Object, e.Off, e.Len)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, blockcache.ObjectBlock{Offset: e.Off, Stored: b, Records: e.Records, RawBytes: e.RawBytes, Topic: e.Topic, Partition: e.Partition})
	}
	return out
}

// reading tells f that it serves the partitions of entries, as a fetch of
// them does before it reads a block.
func reading(f *blockcache.Reader, entries []metadata.IndexEntry) {
	for _, e := range entries {
		f.Reading(e.Topic, e.Partition)
	}
}

// gets returns the recorded GETs as "off+len".
func gets(rec *tier.Recorder) []string {
	var out []string
	for _, c := range rec.Calls() {
		if c.Op == tier.OpGet {
			out = append(out, fmt.Sprintf("%s %d+%d", c.Key, c.Off, c.Len))
		}
	}
	return out
}

// TestFreshObjectReadWholeOnce: every block of a fresh L0 object, read
// concurrently by three fetchers (none of them its writer), costs one GET
// of the whole object between them; the blocks are owned per object, and
// each of the two other fetchers asks the owner once, for the whole object
// (GetObject), not once per block (GetBlock).
func TestFreshObjectReadWholeOnce(t *testing.T) {
	fs := newFS(t)
	const partitions, n = 40, 20
	key := flushKey("ingest-1", 1)
	entries := writeSegment(t, fs, key, partitions, n)
	for range 5 {
		rec := tier.NewRecorder(fs)
		fetchers, peers := cluster(rec, 64<<20, "a", "b", "c")
		owners := map[string]bool{}
		for _, f := range fetchers {
			for _, e := range entries {
				p, _ := f.Owners().ObjectOwner(e.Object, "ingest-1")
				owners[p.ID] = true
			}
		}
		if len(owners) != 1 {
			t.Fatalf("the blocks of one object have owners %v, want one", owners)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 3*partitions)
		for _, f := range fetchers {
			reading(f, entries)
			for p, e := range entries {
				wg.Go(func() {
					recs, err := f.Block(context.Background(), e)
					if err == nil && (len(recs) != n || string(recs[n-1].Value) != fmt.Sprintf("p%d-v%d", p, n-1)) {
						err = fmt.Errorf("block of partition %d: %d records", p, len(recs))
					}
					if err != nil {
						errs <- err
					}
				})
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if g := gets(rec); len(g) != 1 || g[0] != key+" 0+-1" {
			t.Fatalf("3 fetchers read %d blocks of one object: GETs %v, want one whole read", partitions, g)
		}
		if peers.objects != 2 || peers.calls != 0 {
			t.Fatalf("%d GetObject and %d GetBlock calls to the owner for %d blocks read on 2 other fetchers, want 2 GetObject (one per fetcher) and no GetBlock",
				peers.objects, peers.calls, 2*partitions)
		}
	}
}

// TestWriterOwnsItsObject: the node that wrote an object (and cached its
// blocks when it stored them) owns it while it is a live fetch node, so
// the others read the object from it with no GET; once it is gone, the
// object goes to a hashed owner, which reads it whole once.
func TestWriterOwnsItsObject(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := flushKey("b", 7)
	entries := writeSegment(t, fs, key, 10, 20)
	fetchers, peers := cluster(rec, 64<<20, "a", "b", "c")
	fetchers[1].Memory().PutObject(key, objectBlocks(t, fs, entries))
	ctx := context.Background()
	for _, f := range fetchers {
		reading(f, entries)
		for p, e := range entries {
			recs, err := f.Block(ctx, e)
			checkBlock(t, recs, err, p, 20)
		}
	}
	if g := gets(rec); len(g) != 0 {
		t.Fatalf("readers of the writer's object made GETs %v, want none", g)
	}
	if peers.objects != 2 || peers.calls != 0 {
		t.Fatalf("%d GetObject and %d GetBlock calls to the writer, want one GetObject from each other fetcher", peers.objects, peers.calls)
	}

	// The writer is gone: the first reader to find it gone reads the
	// block itself (the object whole), then every reader agrees on the
	// next owner, which reads the object whole once.
	peers.mu.Lock()
	delete(peers.nodes, "addr-b")
	peers.mu.Unlock()
	key2 := flushKey("b", 8)
	more := writeSegment(t, fs, key2, 10, 20)
	rec.Reset()
	for _, f := range []*blockcache.Reader{fetchers[0], fetchers[2]} {
		for p, e := range more {
			recs, err := f.Block(ctx, e)
			checkBlock(t, recs, err, p, 20)
		}
	}
	g := gets(rec)
	for _, c := range g {
		if c != key2+" 0+-1" {
			t.Errorf("GET %s, want whole reads only", c)
		}
	}
	if len(g) == 0 || len(g) > 2 {
		t.Fatalf("with the writer gone: GETs %v, want 1 or 2 whole reads", g)
	}
}

// TestCompactedBlocksReadByRange: blocks of a compacted (level 1) object
// keep their per-block owners and ranged reads, one GET per block.
func TestCompactedBlocksReadByRange(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := tier.CompactedKey(1, "t", 0, 0, 100, "compactor")
	entries := writeSegment(t, fs, key, 12, 20)
	for i := range entries {
		entries[i].Level = 1
	}
	fetchers, _ := cluster(rec, 64<<20, "a", "b", "c")
	ctx := context.Background()
	for range 2 {
		for _, f := range fetchers {
			for p, e := range entries {
				recs, err := f.Block(ctx, e)
				checkBlock(t, recs, err, p, 20)
			}
		}
	}
	want := map[string]bool{}
	owners := map[string]bool{}
	for _, e := range entries {
		want[fmt.Sprintf("%s %d+%d", key, e.Off, e.Len)] = true
		p, _ := fetchers[0].Owners().Owner(e.Object, e.Off)
		owners[p.ID] = true
	}
	g := gets(rec)
	if len(g) != len(entries) {
		t.Fatalf("GETs %v, want one ranged read per block (%d)", g, len(entries))
	}
	for _, c := range g {
		if !want[c] {
			t.Errorf("GET %s is not a block's range", c)
		}
	}
	if len(owners) < 2 {
		t.Errorf("12 compacted blocks all owned by %v", owners)
	}
}

// TestWholeObjectReadOnce: blocks of an object read whole that were evicted
// since are read by range, never by reading the object again; the memory
// tier stays within its bound; objects whose blocks lie beyond the bound
// are read by range.
func TestWholeObjectReadOnce(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := flushKey("ingest-1", 1)
	entries := writeSegment(t, fs, key, 30, 200)
	var total int64
	for _, e := range entries {
		total += e.RawBytes + e.Len
	}
	// Room for about a third of the object's blocks.
	mem := blockcache.NewMemory(total / 3)
	f := blockcache.New(rec, mem, nil, nil)
	ctx := context.Background()
	for p, e := range entries {
		recs, err := f.Block(ctx, e)
		checkBlock(t, recs, err, p, 200)
		if mem.Size() > total/3 {
			t.Fatalf("memory tier holds %d bytes, bound %d", mem.Size(), total/3)
		}
	}
	g := gets(rec)
	if len(g) < 2 || g[0] != key+" 0+-1" {
		t.Fatalf("GETs %v, want one whole read then ranged reads of what was evicted", g)
	}
	for _, c := range g[1:] {
		if c == key+" 0+-1" {
			t.Fatalf("GETs %v: the object was read whole twice", g)
		}
	}
	if len(g) > len(entries) {
		t.Fatalf("%d GETs for %d blocks", len(g), len(entries))
	}

	// Blocks that end beyond the bound are read by range.
	rec.Reset()
	key2 := flushKey("ingest-1", 2)
	more := writeSegment(t, fs, key2, 5, 20)
	f2 := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
	f2.SetWholeObjectBytes(more[2].Off + more[2].Len)
	for p := len(more) - 1; p >= 0; p-- {
		recs, err := f2.Block(ctx, more[p])
		checkBlock(t, recs, err, p, 20)
	}
	g = gets(rec)
	if want := []string{
		fmt.Sprintf("%s %d+%d", key2, more[4].Off, more[4].Len),
		fmt.Sprintf("%s %d+%d", key2, more[3].Off, more[3].Len),
		key2 + " 0+-1",
	}; fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("GETs %v, want %v: blocks 5 and 4 (beyond the bound) by range, then block 3 by reading the object whole", g, want)
	}
}

// TestWholeObjectOwnerGone: readers whose object owner does not answer get
// every block (no error), reading the object themselves.
func TestWholeObjectOwnerGone(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := flushKey("ingest-1", 3)
	entries := writeSegment(t, fs, key, 20, 20)
	fetchers, peers := cluster(rec, 64<<20, "a", "b", "c")
	owner, _ := fetchers[0].Owners().ObjectOwner(key, "ingest-1")
	peers.mu.Lock()
	delete(peers.nodes, "addr-"+owner.ID)
	peers.mu.Unlock()
	ctx := context.Background()
	var live []*blockcache.Reader
	for _, f := range fetchers {
		if f.Owners().Self() != owner.ID {
			live = append(live, f)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, f := range live {
		for p, e := range entries {
			wg.Go(func() {
				recs, err := f.Block(ctx, e)
				if err == nil && (len(recs) != 20 || string(recs[19].Value) != fmt.Sprintf("p%d-v19", p)) {
					err = fmt.Errorf("partition %d: %d records", p, len(recs))
				}
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// Each live node reads the object whole at most once; blocks asked
	// before a node suspected the owner (and after its own whole read
	// finished) may be read by range.
	whole := 0
	for _, c := range gets(rec) {
		if c == key+" 0+-1" {
			whole++
		}
	}
	if whole == 0 || whole > len(live) {
		t.Fatalf("GETs %v: want 1 to %d whole reads", gets(rec), len(live))
	}
	if g := len(gets(rec)); g > len(live)*len(entries) {
		t.Fatalf("%d GETs for %d blocks on %d nodes", g, len(entries), len(live))
	}
}

// TestWholeObjectMissing: the blocks of a fresh object that is gone are
// data loss, each costing at most its ranged read once the whole read
// found the object missing.
func TestWholeObjectMissing(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	key := flushKey("ingest-1", 9)
	entries := writeSegment(t, fs, key, 5, 20)
	if err := fs.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	f := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
	for _, e := range entries {
		if _, err := f.Block(context.Background(), e); !errors.Is(err, blockcache.ErrDataLoss) {
			t.Fatalf("block of a missing object: %v, want data loss", err)
		}
	}
	if g := gets(rec); len(g) != len(entries)+1 {
		t.Fatalf("GETs %v: want one whole read, then one ranged read per block", g)
	}
}
