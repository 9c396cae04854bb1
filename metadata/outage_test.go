package metadata_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
)

// cutProxy forwards TCP connections to an etcd; cut drops every
// connection and refuses new ones (etcd looks down to the clients behind
// it while it serves others), restore listens again on the same address.
type cutProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	p := &cutProxy{t: t, addr: "127.0.0.1:0", target: strings.TrimPrefix(target, "http://")}
	p.restore()
	p.addr = p.ln.Addr().String()
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) restore() {
	p.t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen on %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// lockedBuffer is a log destination safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestEtcdOutageBoundedAndWatchesResync cuts one client off etcd while
// another changes topics and node registrations and compacts etcd's
// history past everything the first client's watches saw. While cut off,
// the client's requests fail with ErrUnavailable within its request
// timeout (1 s once etcd is known down) instead of waiting. Once it can reach etcd
// again, its watched topic cache and its node watch, whose revisions were
// compacted meanwhile, resync to the current state within 3 s.
func TestEtcdOutageBoundedAndWatchesResync(t *testing.T) {
	const timeout = 500 * time.Millisecond
	endpoints := testenv.StartEtcd(t)
	p := newCutProxy(t, endpoints[0])
	ctx := context.Background()
	logs := &lockedBuffer{}
	a, err := metadata.Connect(ctx, metadata.Config{Endpoints: []string{"http://" + p.addr}, RequestTimeout: timeout, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := metadata.Connect(ctx, metadata.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic(ctx, metadata.Topic{Name: "before", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	cache, err := a.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	var mu sync.Mutex
	var nodes map[string]string
	stop, err := a.WatchNodes(ctx, "fetch", func(m map[string]string) {
		mu.Lock()
		nodes = m
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	p.cut()
	for i := range 3 {
		start := time.Now()
		_, err := a.ListTopics(ctx)
		took := time.Since(start)
		if !errors.Is(err, metadata.ErrUnavailable) || !metadata.IsUnavailable(err) {
			t.Fatalf("list topics #%d cut off etcd: %v; want ErrUnavailable", i, err)
		}
		if took > timeout+time.Second {
			t.Fatalf("list topics #%d cut off etcd answered after %v; want at most the request timeout %v", i, took, timeout)
		}
		if a.Unreachable() == 0 {
			t.Fatalf("Unreachable is 0 after a request etcd did not answer")
		}
	}
	// Meanwhile the others go on, and history is compacted.
	if _, err := b.CreateTopic(ctx, metadata.Topic{Name: "during", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteTopic(ctx, "before"); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, "fetch", "n1", "http://n1"); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := maintenance.New(b).CompactHistory(ctx, st.Revision); err != nil {
		t.Fatal(err)
	}

	p.restore()
	back := time.Now()
	if !testenv.Eventually(3*time.Second, func() bool {
		_, during := cache.Topic("during")
		_, before := cache.Topic("before")
		mu.Lock()
		defer mu.Unlock()
		return during && !before && nodes["n1"] == "http://n1"
	}) {
		_, during := cache.Topic("during")
		_, before := cache.Topic("before")
		t.Fatalf("3s after etcd is reachable again: cache has topic during=%v before=%v (want true, false); nodes %v (want n1)", during, before, nodes)
	}
	t.Logf("watches resynced %v after etcd was reachable again", time.Since(back).Round(time.Millisecond))
	if !strings.Contains(logs.String(), "metadata watch compacted, reloading") {
		t.Fatalf("the cache's watch did not meet the compacted history (the test did not test it); log:\n%s", logs)
	}
	if _, err := a.ListTopics(ctx); err != nil {
		t.Fatalf("list topics after etcd is reachable again: %v", err)
	}
	if d := a.Unreachable(); d != 0 {
		t.Fatalf("Unreachable %v after a request etcd answered", d)
	}
}

// TestRegisterSurvivesLostLease cuts a registered node of three roles off
// etcd until its registration's lease expires (its keys go away, as for a
// dead node), and requires the node to register every role again within
// 3 s of reaching etcd again. Its roles share one lease.
func TestRegisterSurvivesLostLease(t *testing.T) {
	endpoints := testenv.StartEtcd(t)
	p := newCutProxy(t, endpoints[0])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := metadata.Connect(ctx, metadata.Config{Endpoints: []string{"http://" + p.addr}, RequestTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := metadata.Connect(ctx, metadata.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	roles := []string{"ingest", "fetch", "sequence"}
	// A role named twice (--roles given twice) is registered once.
	if err := a.RegisterRoles(ctx, "me", "http://me", append(roles, "fetch")...); err != nil {
		t.Fatal(err)
	}
	// registered counts the roles under which the node is listed.
	registered := func() (n int) {
		for _, role := range roles {
			if ns, err := b.Nodes(ctx, role); err == nil && ns["me"] == "http://me" {
				n++
			}
		}
		return n
	}
	if n := registered(); n != len(roles) {
		t.Fatalf("node registered under %d of %d roles", n, len(roles))
	}
	raw, err := clientv3.New(clientv3.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	leases, err := raw.Leases(ctx)
	if err != nil || len(leases.Leases) != 1 {
		t.Fatalf("leases after registering three roles: %v, %v; want one", leases, err)
	}
	p.cut()
	// The lease (10 s) expires while the node cannot keep it alive.
	if !testenv.EventuallyEvery(30*time.Second, 50*time.Millisecond, func() bool { return registered() == 0 }) {
		t.Fatal("registration still there 30s after the node was cut off etcd")
	}
	p.restore()
	back := time.Now()
	if !testenv.EventuallyEvery(3*time.Second, 20*time.Millisecond, func() bool { return registered() == len(roles) }) {
		t.Fatalf("node registered again under %d of %d roles 3s after reaching etcd again", registered(), len(roles))
	}
	t.Logf("registered again %v after reaching etcd again", time.Since(back).Round(time.Millisecond))
}
