package node_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

// readyz returns the status and body of GET /readyz.
func readyz(t *testing.T, addr string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(addr + "/readyz")
	if err != nil {
		t.Fatalf("GET %s/readyz: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bytes.TrimSpace(b))
}

// TestReadyzFollowsObjectStore stops a real MinIO under an idle node and
// under a producing one: /readyz turns 503 (naming the object store)
// within a few probe intervals, so a load balancer drains the node, and
// turns 200 again once MinIO is back on the same address and data.
func TestReadyzFollowsObjectStore(t *testing.T) {
	const (
		probe = 200 * time.Millisecond
		// bound is how fast readiness must follow the store: a probe
		// interval to notice, one for the probe's own timeout, and slack
		// for a loaded machine.
		bound = 5 * time.Second
	)
	m, stop, err := testenv.StartMinIO(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	bucket := m.NewBucket(t)
	store, err := tier.NewS3(context.Background(), m.S3Config(bucket))
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = testenv.StartEtcd(t)
	cfg.Store = "s3://" + bucket
	cfg.Linger = 10 * time.Millisecond
	cfg.StoreProbeInterval = probe
	n, err := node.New(context.Background(), cfg, node.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	c := newClients(n.Addr())
	createTopic(t, c, "ready", 1)
	produce := func(ctx context.Context) error {
		_, err := c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{
			Topic: "ready", Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte("v")}}},
		}))
		return err
	}
	if err := produce(context.Background()); err != nil {
		t.Fatalf("produce with MinIO up: %v", err)
	}
	waitReady := func(what string, want int) {
		t.Helper()
		var code int
		var body string
		start := time.Now()
		if !testenv.EventuallyEvery(bound, 20*time.Millisecond, func() bool {
			code, body = readyz(t, n.Addr())
			return code == want
		}) {
			t.Fatalf("%s: /readyz still %d (%s) after %v, want %d", what, code, body, bound, want)
		}
		t.Logf("%s: /readyz %d after %v: %s", what, code, time.Since(start).Round(time.Millisecond), body)
	}
	waitReady("MinIO up", http.StatusOK)

	// 1. Idle node: the probe notices.
	stop()
	waitReady("idle node, MinIO stopped", http.StatusServiceUnavailable)
	if _, body := readyz(t, n.Addr()); !bytes.Contains([]byte(body), []byte("object store")) {
		t.Fatalf("/readyz while MinIO is stopped says %q; want it to name the object store", body)
	}
	if stop, err = m.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady("idle node, MinIO restarted", http.StatusOK)

	// 2. Producing node: the failing segment PUT itself makes the node
	// unready, and it is ready again only once a write works.
	stop()
	pctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	perr := make(chan error, 1)
	go func() { perr <- produce(pctx) }()
	waitReady("producing node, MinIO stopped", http.StatusServiceUnavailable)
	if stop, err = m.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady("producing node, MinIO restarted", http.StatusOK)
	if err := <-perr; err != nil {
		t.Logf("produce across the MinIO outage answered %v (not acknowledged; retriable)", err)
	}
	if err := produce(context.Background()); err != nil {
		t.Fatalf("produce after MinIO is back: %v", err)
	}
}

// stuckHead is a store whose Head, once stuck is set, signals entered and
// then takes 500 ms whatever its context says (a store that does not honor
// cancellation).
type stuckHead struct {
	tier.Store
	stuck   atomic.Bool
	entered chan struct{}
}

func (s *stuckHead) Head(ctx context.Context, key string) (tier.ObjectInfo, error) {
	if s.stuck.Load() {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		time.Sleep(500 * time.Millisecond)
	}
	return s.Store.Head(ctx, key)
}

// TestShutdownEndsReadinessProbes: Shutdown returns only once the node's
// readiness probes (and the sequencer-leader watch they run) have ended,
// even when a probe is stuck in the store: they use the etcd client and
// the store Shutdown releases.
func TestShutdownEndsReadinessProbes(t *testing.T) {
	dir := t.TempDir()
	fs, err := tier.NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	st := &stuckHead{Store: fs, entered: make(chan struct{}, 1)}
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = testenv.StartEtcd(t)
	cfg.Store = "fs:" + filepath.Join(dir, "objects")
	cfg.StoreProbeInterval = 100 * time.Millisecond
	n, err := node.New(context.Background(), cfg, node.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	st.stuck.Store(true)
	select {
	case <-st.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no store probe within 10 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, f := range []string{"node.(*readiness).run", "node.(*seqLeader).run", "seqlog.(*Log).WatchLeader"} {
		if strings.Contains(stacks, f) {
			t.Fatalf("%s still runs after Shutdown returned:\n%s", f, stacks)
		}
	}
}
