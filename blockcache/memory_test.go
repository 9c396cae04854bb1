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
