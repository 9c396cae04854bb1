package blockcache

import (
	"fmt"
	"testing"

	"github.com/varve-io/varve/tier/segment"
)

func TestBlockCacheStaysWithinBytes(t *testing.T) {
	c := NewMemory(10_000)
	recs := []segment.Record{{Value: make([]byte, 1000)}}
	for i := range 100 {
		c.Put(fmt.Sprint("obj", i), 0, recs, 1000)
		if c.Size() > 10_000 {
			t.Fatalf("cache holds %d bytes, bound is 10000", c.Size())
		}
	}
	// The newest blocks stay, the oldest are evicted.
	if _, ok := c.Get("obj99", 0); !ok {
		t.Fatal("newest block evicted")
	}
	if _, ok := c.Get("obj0", 0); ok {
		t.Fatal("oldest block kept past the bound")
	}
	// A read refreshes a block: it outlives newer, unread ones.
	c.Get("obj95", 0)
	for i := 100; i < 107; i++ { // 8 blocks fit: 7 new ones evict the 7 unread
		c.Put(fmt.Sprint("obj", i), 0, recs, 1000)
	}
	if _, ok := c.Get("obj95", 0); !ok {
		t.Fatal("recently read block evicted before unread ones")
	}
	// A block larger than the whole cache is not kept and evicts nothing.
	before := c.Size()
	c.Put("huge", 0, recs, 1<<20)
	if _, ok := c.Get("huge", 0); ok || c.Size() != before {
		t.Fatal("oversized block changed the cache")
	}
}

// TestPutEncodedDecodesOnFirstGet: a block added by its stored bytes is
// served as stored at once, decoded once at its first Get (every Get gets
// the same records), and one whose bytes do not decode, or decode to
// another record count, is dropped and missed.
func TestPutEncodedDecodesOnFirstGet(t *testing.T) {
	b := segment.NewBatchBlockBuilder("t", 0)
	for i := range 50 {
		b.Append(segment.Record{Value: fmt.Appendf(nil, "value %d", i)})
	}
	obj, infos, err := segment.Build([]*segment.BlockBuilder{b})
	if err != nil {
		t.Fatal(err)
	}
	bi := infos[0]
	stored := obj[bi.Offset : bi.Offset+bi.Length]
	c := NewMemory(1 << 20)
	c.PutEncoded("o", bi.Offset, stored, bi.Records, bi.RawBytes)
	if got, ok := c.Stored("o", bi.Offset); !ok || len(got) != len(stored) {
		t.Fatal("stored bytes not served")
	}
	size := c.Size()
	recs, ok := c.Get("o", bi.Offset)
	if !ok || len(recs) != 50 || string(recs[49].Value) != "value 49" {
		t.Fatalf("Get: ok %v, %d records", ok, len(recs))
	}
	again, _ := c.Get("o", bi.Offset)
	if &again[0] != &recs[0] {
		t.Fatal("decoded twice")
	}
	if c.Size() != size {
		t.Fatalf("size changed at decode: %d, then %d", size, c.Size())
	}

	c.PutEncoded("count", bi.Offset, stored, bi.Records+1, bi.RawBytes)
	bad := append([]byte(nil), stored...)
	bad[len(bad)-1] ^= 0xff
	c.PutEncoded("corrupt", bi.Offset, bad, bi.Records, bi.RawBytes)
	for _, o := range []string{"count", "corrupt"} {
		if _, ok := c.Get(o, bi.Offset); ok {
			t.Fatalf("%s: a block that does not decode to its records was served", o)
		}
		if _, ok := c.Stored(o, bi.Offset); ok {
			t.Fatalf("%s: the bad block was kept", o)
		}
	}
	if c.Size() != size {
		t.Fatalf("cache holds %d bytes after dropping the bad blocks, want %d", c.Size(), size)
	}
}

// TestRememberObjectSteadyState: with layoutObjects objects remembered,
// remembering one more forgets the oldest and copies no list of names:
// the list of objects is compacted once per layoutObjects inserts, not at
// every insert.
func TestRememberObjectSteadyState(t *testing.T) {
	c := NewMemory(1 << 20)
	blocks := []ObjectBlock{{Offset: 0, Stored: make([]byte, 64), Records: 1}}
	names := make([]string, 6*layoutObjects)
	for i := range names {
		names[i] = fmt.Sprintf("obj-%06d", i)
	}
	name := func(i int) string { return names[i] }
	for i := range 3 * layoutObjects {
		c.RememberObject(name(i), blocks)
	}
	i := 3 * layoutObjects
	allocs := testing.AllocsPerRun(2*layoutObjects, func() {
		c.RememberObject(name(i), blocks)
		i++
	})
	// The spans, and now and then the map's growth and the compaction.
	if allocs > 1.5 {
		t.Fatalf("%.2f allocations per RememberObject with %d objects remembered", allocs, layoutObjects)
	}
	if n := len(c.objects.order); n != layoutObjects-1 && n != layoutObjects {
		t.Fatalf("%d objects remembered, want the last %d", n, layoutObjects)
	}
	if _, ok := c.objects.m[name(i-1)]; !ok {
		t.Fatal("the last object is not remembered")
	}
	if _, ok := c.objects.m[name(i-layoutObjects-1)]; ok {
		t.Fatal("an object older than the last layoutObjects is still remembered")
	}
}
