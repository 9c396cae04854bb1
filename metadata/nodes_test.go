package metadata_test

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

// TestWatchNodes: the watch reports the registered nodes at once, a node
// that registers later, and a node whose key goes away; other roles are
// not reported.
func TestWatchNodes(t *testing.T) {
	endpoints := testenv.StartEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := metadata.Connect(ctx, metadata.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Register(ctx, "fetch", "a", "http://a"); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx, "ingest", "x", "http://x"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last map[string]string
	stop, err := c.WatchNodes(ctx, "fetch", func(m map[string]string) {
		mu.Lock()
		last = m
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := func(want map[string]string) bool {
		mu.Lock()
		defer mu.Unlock()
		return maps.Equal(last, want)
	}
	if !seen(map[string]string{"a": "http://a"}) {
		t.Fatalf("first call: got %v, want only fetch node a", last)
	}
	if err := c.Register(ctx, "fetch", "b", "http://b"); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool { return seen(map[string]string{"a": "http://a", "b": "http://b"}) }) {
		t.Fatalf("node b never appeared: %v", last)
	}
	raw, err := clientv3.New(clientv3.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Delete(ctx, "/varve/nodes/fetch/a"); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool { return seen(map[string]string{"b": "http://b"}) }) {
		t.Fatalf("node a never disappeared: %v", last)
	}
	// stop waits for the watch goroutine; a second stop is harmless.
	stop()
	stop()
}
