package blockcache_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
)

// writerPeers routes GetObject to ingest nodes without the fetch role by
// address (answered from what each holds, as node's heldBlockService
// does), and counts the calls.
type writerPeers struct {
	mu    sync.Mutex
	held  map[string]*blockcache.Memory
	asked map[string]int // GetObject calls by address
}

func (p *writerPeers) GetObject(_ context.Context, addr, object string, maxBytes int64, parts []blockcache.TopicPartitions) ([]blockcache.ObjectBlock, error) {
	p.mu.Lock()
	m := p.held[addr]
	p.asked[addr]++
	p.mu.Unlock()
	if m == nil {
		return nil, fmt.Errorf("%w: no node at %s", blockcache.ErrUnavailable, addr)
	}
	return blockcache.HeldObjectBytes(m, object, maxBytes, parts)
}

func (p *writerPeers) GetBlock(_ context.Context, addr, _ string, _, _ int64) ([]byte, error) {
	return nil, fmt.Errorf("GetBlock asked of %s: a writer is asked for objects only", addr)
}

func (p *writerPeers) calls(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asked[addr]
}

// TestFreshObjectsFromTheirWriter: a fetch node asks the ingest node that
// wrote a fresh object (one without the fetch role) for it, once, and
// reads no bucket while the writer holds it; an object the writer no
// longer holds, or asked of a writer that is gone, is read from the
// bucket whole, once; a writer that failed to answer is not asked again
// for a while.
func TestFreshObjectsFromTheirWriter(t *testing.T) {
	fs := newFS(t)
	rec := tier.NewRecorder(fs)
	var objects [][]metadata.IndexEntry
	for i := range 4 {
		objects = append(objects, writeSegment(t, fs, flushKey("w", uint64(i+1)), 10, 20))
	}
	held := blockcache.NewMemory(64 << 20)
	for _, i := range []int{0, 2} { // the writer holds the first and third
		held.PutObject(objects[i][0].Object, objectBlocks(t, fs, objects[i]))
	}
	peers := &writerPeers{held: map[string]*blockcache.Memory{"addr-w": held}, asked: map[string]int{}}
	f := blockcache.New(rec, blockcache.NewMemory(64<<20), nil, nil)
	o := blockcache.NewOwners("a")
	o.Set(map[string]string{"a": "addr-a"})
	o.SetWriters(map[string]string{"w": "addr-w"})
	f.SetOwners(o, peers)
	reading(f, objects[0])
	ctx := context.Background()
	read := func(i int) {
		t.Helper()
		for p, e := range objects[i] {
			recs, err := f.Block(ctx, e)
			checkBlock(t, recs, err, p, 20)
		}
	}
	expect := func(step string, asked int, getObjects ...int) {
		t.Helper()
		var want []string
		for _, i := range getObjects {
			want = append(want, objects[i][0].Object+" 0+-1")
		}
		if got := gets(rec); fmt.Sprint(got) != fmt.Sprint(want) || peers.calls("addr-w") != asked {
			t.Fatalf("%s: GETs %v and %d GetObject calls to the writer; want GETs %v and %d calls", step, got, peers.calls("addr-w"), want, asked)
		}
	}

	read(0)
	read(0)
	expect("an object the writer holds", 1)
	read(1)
	read(1)
	expect("an object it no longer holds", 2, 1)

	// The writer goes: asked once, it fails and is suspected; the object
	// is read whole from the bucket, and the next one without asking.
	peers.mu.Lock()
	delete(peers.held, "addr-w")
	peers.mu.Unlock()
	read(2)
	expect("an object of a writer gone", 3, 1, 2)
	read(3)
	expect("an object of a suspected writer", 3, 1, 2, 3)
}

// TestWriterIsOnlyAnIngestOnlyNode: Writer names a live ingest node that is
// neither this node nor a fetch node (a fetch node that wrote an object
// owns it), and none after it left.
func TestWriterIsOnlyAnIngestOnlyNode(t *testing.T) {
	o := blockcache.NewOwners("a")
	o.Set(map[string]string{"a": "addr-a", "b": "addr-b"})
	o.SetWriters(map[string]string{"a": "addr-a", "b": "addr-b", "w": "addr-w"})
	for id, want := range map[string]bool{"a": false, "b": false, "w": true, "x": false} {
		p, ok := o.Writer(id)
		if ok != want || (ok && (p.ID != id || p.Addr != "addr-"+id)) {
			t.Errorf("Writer(%q) = %+v, %v; want %v", id, p, ok, want)
		}
	}
	o.Suspect("w", 1<<40)
	if _, ok := o.Writer("w"); ok {
		t.Error("a suspected writer is named")
	}
	o.Set(map[string]string{"a": "addr-a"}) // fetch membership changes: the writer stays suspected
	if _, ok := o.Writer("w"); ok {
		t.Error("a writer's suspicion ended when the fetch nodes changed")
	}
	o.SetWriters(map[string]string{"a": "addr-a"})
	o.SetWriters(map[string]string{"a": "addr-a", "w": "addr-w2"}) // gone, then back at a new address
	if p, ok := o.Writer("w"); !ok || p.Addr != "addr-w2" {
		t.Errorf("a writer that came back: %+v, %v", p, ok)
	}
}

// TestHeldObjectBytes: an ingest node without the fetch role answers only
// the fresh objects it holds whole (of the partitions asked for), refuses
// anything else as not whole, and checks its arguments as ObjectBytes
// does, reading no bucket.
func TestHeldObjectBytes(t *testing.T) {
	fs := newFS(t)
	entries := writeSegment(t, fs, flushKey("w", 1), 6, 20)
	key := entries[0].Object
	held := blockcache.NewMemory(64 << 20)
	held.PutObject(key, objectBlocks(t, fs, entries))
	blocks, err := blockcache.HeldObjectBytes(held, key, 1<<20, []blockcache.TopicPartitions{{Topic: "t", Partitions: []int32{1, 4}}})
	if err != nil || len(blocks) != 2 || blocks[0].Offset != entries[1].Off || blocks[1].Offset != entries[4].Off {
		t.Fatalf("partitions 1 and 4: %d blocks, %v", len(blocks), err)
	}
	if blocks, err := blockcache.HeldObjectBytes(held, key, 1<<20, nil); err != nil || len(blocks) != 6 {
		t.Fatalf("every block: %d, %v", len(blocks), err)
	}
	for _, tc := range []struct {
		name, object string
		maxBytes     int64
		want         error
	}{
		{"not held", flushKey("w", 2), 1 << 20, blockcache.ErrNotWhole},
		{"more than taken", key, 10, blockcache.ErrNotWhole},
		{"compacted object", tier.CompactedKey(1, "t", 0, 0, 100, "c"), 1 << 20, metadata.ErrInvalidArgument},
		{"zero max_bytes", key, 0, metadata.ErrInvalidArgument},
	} {
		if blocks, err := blockcache.HeldObjectBytes(held, tc.object, tc.maxBytes, nil); !errors.Is(err, tc.want) || blocks != nil {
			t.Errorf("%s: %d blocks, %v; want %v", tc.name, len(blocks), err, tc.want)
		}
	}
}
