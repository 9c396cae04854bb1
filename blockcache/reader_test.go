package blockcache_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// gatedStore holds every GetRange until open is closed, so a test can
// gather concurrent readers of one block before the first read returns.
type gatedStore struct {
	tier.Store
	open chan struct{}
}

func (g *gatedStore) GetRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	<-g.open
	return g.Store.GetRange(ctx, key, off, length)
}

// writeSegment stores a segment of one block per partition (n records
// each) and returns the index entries of its blocks.
func writeSegment(t *testing.T, st tier.Store, key string, partitions, n int) []metadata.IndexEntry {
	t.Helper()
	var bbs []*segment.BlockBuilder
	for p := range partitions {
		bb := segment.NewBlockBuilder("t", int32(p))
		for i := range n {
			bb.Append(segment.Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "p%d-v%d", p, i), Timestamp: int64(1000 + i)})
		}
		bbs = append(bbs, bb)
	}
	obj, infos, err := segment.Build(bbs)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutIfAbsent(context.Background(), key, obj); err != nil {
		t.Fatal(err)
	}
	var out []metadata.IndexEntry
	for _, bi := range infos {
		out = append(out, metadata.IndexEntry{Topic: bi.Topic, Partition: bi.Partition, Object: key, Off: bi.Offset, Len: bi.Length, Records: bi.Records, RawBytes: bi.RawBytes})
	}
	return out
}

func newFS(t *testing.T) tier.Store {
	t.Helper()
	fs, err := tier.NewFS(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func checkBlock(t *testing.T, recs []segment.Record, err error, p, n int) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n || string(recs[n-1].Value) != fmt.Sprintf("p%d-v%d", p, n-1) {
		t.Fatalf("block of partition %d: got %d records, last %q", p, len(recs), recs[len(recs)-1].Value)
	}
}

// TestConcurrentReadsShareOneGet: N readers of a block missing from every
// cache start one GET between them.
func TestConcurrentReadsShareOneGet(t *testing.T) {
	// Built and read once outside the bubble: zstd's shared encoders and
	// decoders must not be created inside it.
	fs := newFS(t)
	entries := writeSegment(t, fs, "seg/a.vseg", 1, 50)
	warm := blockcache.New(fs, blockcache.NewMemory(1), nil, nil)
	if _, err := warm.Block(context.Background(), entries[0]); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		rec := tier.NewRecorder(fs)
		gate := &gatedStore{Store: rec, open: make(chan struct{})}
		f := blockcache.New(gate, blockcache.NewMemory(64<<20), nil, nil)
		const n = 32
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				recs, err := f.Block(context.Background(), entries[0])
				if err == nil && len(recs) != 50 {
					err = fmt.Errorf("got %d records", len(recs))
				}
				errs[i] = err
			})
		}
		synctest.Wait() // every reader is blocked: one on the gate, the rest on it
		close(gate.open)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if got := rec.Count(tier.OpGet); got != 1 {
			t.Fatalf("%d concurrent reads made %d GETs, want 1", n, got)
		}
	})
}

// TestDiskCacheSurvivesRestart: a block read once is served from the disk
// cache by a new fetcher on the same directory, with no GET.
func TestDiskCacheSurvivesRestart(t *testing.T) {
	fs := newFS(t)
	entries := writeSegment(t, fs, "seg/b.vseg", 3, 40)
	rec := tier.NewRecorder(fs)
	dir := filepath.Join(t.TempDir(), "cache")
	ctx := context.Background()
	open := func() *blockcache.Reader {
		d, err := blockcache.OpenDisk(dir, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		f := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
		f.SetDisk(d)
		return f
	}
	f := open()
	for p, e := range entries {
		recs, err := f.Block(ctx, e)
		checkBlock(t, recs, err, p, 40)
	}
	if got := rec.Count(tier.OpGet); got != 3 {
		t.Fatalf("first reads: %d GETs, want 3", got)
	}
	rec.Reset()
	f = open() // a restart: empty memory, same directory
	if got := f.Disk().Len(); got != 3 {
		t.Fatalf("disk cache indexed %d blocks after a restart, want 3", got)
	}
	for p, e := range entries {
		recs, err := f.Block(ctx, e)
		checkBlock(t, recs, err, p, 40)
	}
	if got := rec.Count(tier.OpGet); got != 0 {
		t.Fatalf("reads after a restart made %d GETs, want 0", got)
	}
}

// TestCorruptDiskCacheFileIsAMiss: a cache file with flipped bytes or cut
// short is read again from the bucket, and the good copy replaces it.
func TestCorruptDiskCacheFileIsAMiss(t *testing.T) {
	for _, damage := range []string{"flipped", "torn"} {
		t.Run(damage, func(t *testing.T) {
			fs := newFS(t)
			e := writeSegment(t, fs, "seg/c.vseg", 1, 30)[0]
			rec := tier.NewRecorder(fs)
			d, err := blockcache.OpenDisk(t.TempDir(), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			read := func() {
				f := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
				f.SetDisk(d)
				recs, err := f.Block(ctx, e)
				checkBlock(t, recs, err, 0, 30)
			}
			read()
			path := d.Path(e.Object, e.Off, e.Len)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			switch damage {
			case "flipped":
				b[len(b)/2] ^= 0xff
			case "torn":
				b = b[:len(b)-7]
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			rec.Reset()
			read() // a fresh memory cache: the disk tier is asked
			if got := rec.Count(tier.OpGet); got != 1 {
				t.Fatalf("read of a %s cache file made %d GETs, want 1", damage, got)
			}
			rec.Reset()
			read()
			if got := rec.Count(tier.OpGet); got != 0 {
				t.Fatalf("the good copy was not cached again: %d GETs", got)
			}
		})
	}
}

// fetcherPeers routes BlockService calls to in-process fetchers by address.
type fetcherPeers struct {
	mu      sync.Mutex
	nodes   map[string]*blockcache.Reader
	calls   int // GetBlock
	objects int // GetObject
}

func (p *fetcherPeers) GetObject(ctx context.Context, addr, object string, maxBytes int64, parts []blockcache.TopicPartitions) ([]blockcache.ObjectBlock, error) {
	p.mu.Lock()
	f := p.nodes[addr]
	p.objects++
	p.mu.Unlock()
	if f == nil {
		return nil, fmt.Errorf("%w: no node at %s", blockcache.ErrUnavailable, addr)
	}
	blocks, _, err := f.ObjectBytes(ctx, object, maxBytes, parts)
	return blocks, err
}

func (p *fetcherPeers) GetBlock(ctx context.Context, addr, object string, off, length int64) ([]byte, error) {
	p.mu.Lock()
	f := p.nodes[addr]
	p.calls++
	p.mu.Unlock()
	if f == nil {
		return nil, fmt.Errorf("%w: no node at %s", blockcache.ErrUnavailable, addr)
	}
	b, _, err := f.BlockBytes(ctx, object, off, length)
	return b, err
}

// TestOwnersReadTheBucketOnce: three fetchers sharing one membership read
// each block from the bucket once between them; when a node is gone its
// blocks are still served (from the bucket by whoever asks, then by their
// next owner).
func TestOwnersReadTheBucketOnce(t *testing.T) {
	fs := newFS(t)
	entries := writeSegment(t, fs, "seg/d.vseg", 12, 20)
	rec := tier.NewRecorder(fs)
	members := map[string]string{"a": "addr-a", "b": "addr-b", "c": "addr-c"}
	peers := &fetcherPeers{nodes: map[string]*blockcache.Reader{}}
	var fetchers []*blockcache.Reader
	for id, addr := range members {
		f := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
		o := blockcache.NewOwners(id)
		o.Set(members)
		f.SetOwners(o, peers)
		peers.nodes[addr] = f
		fetchers = append(fetchers, f)
	}
	ctx := context.Background()
	for range 3 {
		for _, f := range fetchers {
			for p, e := range entries {
				recs, err := f.Block(ctx, e)
				checkBlock(t, recs, err, p, 20)
			}
		}
	}
	if got := rec.Count(tier.OpGet); got != len(entries) {
		t.Fatalf("3 nodes read %d blocks 3 times: %d GETs, want %d", len(entries), got, len(entries))
	}
	owned := map[string]int{}
	for _, e := range entries {
		p, _ := fetchers[0].Owners().Owner(e.Object, e.Off)
		owned[p.ID]++
	}
	if len(owned) < 2 {
		t.Fatalf("12 blocks all owned by one of 3 nodes: %v", owned)
	}

	// Node "c" dies: a new segment's blocks it owns are read from the
	// bucket by the asker (no error), then c is suspected and its blocks
	// go to the next owner.
	peers.mu.Lock()
	delete(peers.nodes, "addr-c")
	peers.mu.Unlock()
	more := writeSegment(t, fs, "seg/e.vseg", 12, 20)
	rec.Reset()
	for _, f := range fetchers {
		if f.Owners().Self() == "c" {
			continue
		}
		for p, e := range more {
			recs, err := f.Block(ctx, e)
			checkBlock(t, recs, err, p, 20)
		}
	}
	// One extra GET at most: each of the two live nodes finds c gone on the
	// first block of c's it asks for and reads that one from the bucket;
	// from then on both skip c and agree on the owners.
	if got := rec.Count(tier.OpGet); got > len(more)+1 {
		t.Fatalf("with a node gone: %d GETs for %d blocks", got, len(more))
	}
}

// TestOwnersMoveOnlyWhatTheyMust: a node joining takes about its share of
// the blocks, all from the others; a node leaving gives only its own.
func TestOwnersMoveOnlyWhatTheyMust(t *testing.T) {
	three := map[string]string{"n1": "a1", "n2": "a2", "n3": "a3"}
	four := map[string]string{"n1": "a1", "n2": "a2", "n3": "a3", "n4": "a4"}
	o := blockcache.NewOwners("n1")
	owner := func() map[string]string {
		m := map[string]string{}
		for i := range 4000 {
			p, remote := o.Owner("obj", int64(i)*1000)
			if remote == (p.ID == "n1") {
				t.Fatalf("owner %s, remote %v on node n1", p.ID, remote)
			}
			m[fmt.Sprint(i)] = p.ID
		}
		return m
	}
	o.Set(three)
	before := owner()
	share := map[string]int{}
	for _, id := range before {
		share[id]++
	}
	for id, n := range share {
		if n < 1000 || n > 1700 {
			t.Errorf("node %s owns %d of 4000 blocks, want about 1333", id, n)
		}
	}
	o.Set(four)
	after := owner()
	moved := 0
	for k, id := range after {
		if id != before[k] {
			moved++
			if id != "n4" {
				t.Fatalf("block %s moved from %s to %s, not to the new node", k, before[k], id)
			}
		}
	}
	if moved < 700 || moved > 1300 {
		t.Errorf("%d of 4000 blocks moved to the 4th node, want about 1000", moved)
	}
	o.Set(three)
	for k, id := range owner() {
		if id != before[k] {
			t.Fatalf("block %s: owner %s after n4 left, %s before it joined", k, id, before[k])
		}
	}
	// A suspected node is skipped: its blocks go where they would go
	// without it, and nobody else's move.
	o.Suspect("n3", time.Hour)
	without := map[string]string{"n1": "a1", "n2": "a2"}
	o2 := blockcache.NewOwners("n1")
	o2.Set(without)
	for i := range 4000 {
		p, _ := o.Owner("obj", int64(i)*1000)
		q, _ := o2.Owner("obj", int64(i)*1000)
		if p.ID != q.ID {
			t.Fatalf("block %d: owner %s with n3 suspected, %s without n3", i, p.ID, q.ID)
		}
	}
	// Registering again clears the suspicion.
	o.Set(without)
	o.Set(three)
	for k, id := range owner() {
		if id != before[k] {
			t.Fatalf("block %s: owner %s after n3 came back, %s before", k, id, before[k])
		}
	}
	// Alone, or before any membership is known, a node owns everything.
	lone := blockcache.NewOwners("x")
	if p, remote := lone.Owner("obj", 0); remote || p.ID != "x" {
		t.Fatalf("lone node: owner %v remote %v", p, remote)
	}
}

// TestDiskCacheBoundAndOrder: the disk cache stays within its bytes, evicts
// the least recently read first, keeps that order across a restart, and
// removes leftover temporary files.
func TestDiskCacheBoundAndOrder(t *testing.T) {
	dir := t.TempDir()
	d, err := blockcache.OpenDisk(dir, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	blk := make([]byte, 1000)
	for i := range 10 {
		if err := d.Put("o", int64(i), blk); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := d.Get("o", 0, 1000); !ok { // 0 becomes the most recent
		t.Fatal("block 0 missing")
	}
	if err := d.Put("o", 10, blk); err != nil { // evicts 1, the oldest unread
		t.Fatal(err)
	}
	if d.Size() > 10_000 {
		t.Fatalf("disk cache holds %d bytes, bound 10000", d.Size())
	}
	if _, ok := d.Get("o", 1, 1000); ok {
		t.Fatal("least recently used block kept past the bound")
	}
	if _, ok := d.Get("o", 0, 1000); !ok {
		t.Fatal("recently read block evicted")
	}
	if _, ok := d.Get("o", 2, 999); ok {
		t.Fatal("a block read back with another length")
	}
	if err := os.WriteFile(filepath.Join(dir, "block-123.tmp"), blk, 0o644); err != nil {
		t.Fatal(err)
	}
	// Reopened smaller: the oldest blocks go, the recently read stay.
	d, err = blockcache.OpenDisk(dir, 3000)
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 3 || d.Size() != 3000 {
		t.Fatalf("reopened with bound 3000: %d blocks, %d bytes", d.Len(), d.Size())
	}
	if _, ok := d.Get("o", 0, 1000); !ok {
		t.Fatal("most recently read block lost at restart")
	}
	if _, err := os.Stat(filepath.Join(dir, "block-123.tmp")); !os.IsNotExist(err) {
		t.Fatalf("leftover temporary file kept: %v", err)
	}
	if err := d.Put("big", 0, make([]byte, 4000)); err != nil || d.Size() != 3000 {
		t.Fatalf("a block larger than the cache changed it: %v, %d bytes", err, d.Size())
	}
	if _, err := blockcache.OpenDisk(t.TempDir(), 0); err == nil {
		t.Fatal("a disk cache of 0 bytes was accepted")
	}
}
