package place

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/placement"
)

// node is a test server counting requests and naming a writer (to) in
// its answers.
type node struct {
	srv    *httptest.Server
	hits   atomic.Int64
	probes atomic.Int64
	mu     sync.Mutex
	to     string
	keys   []string
	// block, when set, holds a request until it is closed.
	block chan struct{}
}

func newNode(t *testing.T) *node {
	n := &node{}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			n.probes.Add(1)
			return
		}
		n.hits.Add(1)
		n.mu.Lock()
		n.keys = append(n.keys, r.Header.Get(placement.ClientHeader))
		to, block := n.to, n.block
		n.mu.Unlock()
		if block != nil {
			<-block
		}
		if to != "" {
			w.Header().Set(placement.ToHeader, to)
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *node) name(to string) { n.mu.Lock(); n.to = to; n.mu.Unlock() }

func call(t *testing.T, tr *Transport, base string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/varve.v1.ProduceService/Produce", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.Do(req)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	resp.Body.Close()
}

// waitUntil checks cond every millisecond until it holds, and fails t if
// it does not within 5 s; what names the awaited condition.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("not within 5 s: %s", what)
		case <-tick.C:
		}
	}
}

// callUntilAt calls until a request reaches n (the probe of a named node
// runs in the background), at most 5 s.
func callUntilAt(t *testing.T, tr *Transport, base string, n *node) {
	t.Helper()
	before := n.hits.Load()
	waitUntil(t, "a request reaching "+n.srv.URL, func() bool {
		call(t, tr, base)
		return n.hits.Load() != before
	})
}

func TestFollowsTheNamedWriter(t *testing.T) {
	base, writer := newNode(t), newNode(t)
	base.name(writer.srv.URL)
	tr := New(http.DefaultClient, http.DefaultClient, base.srv.URL)
	callUntilAt(t, tr, base.srv.URL, writer) // named the writer, probed it, moved
	b := base.hits.Load()
	call(t, tr, base.srv.URL)
	if base.hits.Load() != b || writer.hits.Load() != 2 || writer.probes.Load() != 1 {
		t.Fatalf("after the move: base %d → %d requests, writer %d and %d probes; want the base's unchanged, 2 and 1",
			b, base.hits.Load(), writer.hits.Load(), writer.probes.Load())
	}
	if got := tr.Writer(); got != writer.srv.URL {
		t.Fatalf("Writer() = %q, want %q", got, writer.srv.URL)
	}
	key := base.keys[0]
	if !placement.ValidKey(key) || writer.keys[0] != key || writer.keys[1] != key {
		t.Fatalf("client keys %q then %q: want one valid key on every request", base.keys, writer.keys)
	}
	// The writer names the base back (fewer writers): the client returns,
	// with no probe of its own address.
	writer.name(base.srv.URL + "/")
	b = base.hits.Load()
	call(t, tr, base.srv.URL)
	call(t, tr, base.srv.URL)
	if tr.Writer() != "" || base.hits.Load() != b+1 || base.probes.Load() != 0 {
		t.Fatalf("after the writer named the base: Writer() %q, base hits %d → %d, probes %d; want \"\", one more, none", tr.Writer(), b, base.hits.Load(), base.probes.Load())
	}
}

// TestAnUnreachableWriterIsNotFollowed: a node named by its registered
// address that the client cannot reach (a load balancer between them)
// fails the probe; the client stays and asks no more for ProbeHoldoff.
func TestAnUnreachableWriterIsNotFollowed(t *testing.T) {
	base, gone := newNode(t), newNode(t)
	gone.srv.Close()
	base.name(gone.srv.URL)
	tr := New(http.DefaultClient, http.DefaultClient, base.srv.URL)
	call(t, tr, base.srv.URL)
	waitUntil(t, "the failed probe setting the holdoff", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return time.Until(tr.hold) > ProbeHoldoff-time.Minute
	})
	for range 5 {
		call(t, tr, base.srv.URL)
	}
	if base.hits.Load() != 6 || tr.Writer() != "" {
		t.Fatalf("base got %d of 6 requests, Writer() %q: the client followed an unreachable node", base.hits.Load(), tr.Writer())
	}
}

func TestADeadWriterSendsTheClientBackAndHintsWait(t *testing.T) {
	base, writer := newNode(t), newNode(t)
	base.name(writer.srv.URL)
	tr := New(http.DefaultClient, http.DefaultClient, base.srv.URL)
	callUntilAt(t, tr, base.srv.URL, writer)
	writer.srv.Close()
	b := base.hits.Load()
	req, _ := http.NewRequest(http.MethodPost, base.srv.URL+"/p", strings.NewReader("x"))
	if resp, err := tr.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a request to the closed writer succeeded")
	}
	// Back to the base, and its hint (the dead writer) ignored.
	call(t, tr, base.srv.URL)
	call(t, tr, base.srv.URL)
	if got := base.hits.Load(); got != b+2 || tr.Writer() != "" {
		t.Fatalf("after the writer died: base hits %d → %d, Writer() %q; want two more and \"\"", b, got, tr.Writer())
	}
}

func TestSwitchesOnlyWithNothingInFlight(t *testing.T) {
	base, writer := newNode(t), newNode(t)
	tr := New(http.DefaultClient, http.DefaultClient, base.srv.URL)
	held := make(chan struct{})
	base.mu.Lock()
	base.block = held
	base.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); call(t, tr, base.srv.URL) }() // held at the base
	waitUntil(t, "the held request reaching the base", func() bool { return base.hits.Load() > 0 })
	base.name(writer.srv.URL)
	base.mu.Lock()
	base.block = nil
	base.mu.Unlock()
	call(t, tr, base.srv.URL) // named the writer; the held one still in flight
	waitUntil(t, "the named writer probed", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.want == writer.srv.URL
	})
	call(t, tr, base.srv.URL) // probed, but one is still in flight: stays at the base
	if w := writer.hits.Load(); w != 0 {
		t.Fatalf("the writer got %d requests while one was in flight at the base", w)
	}
	close(held)
	wg.Wait()
	call(t, tr, base.srv.URL)
	if w := writer.hits.Load(); w != 1 {
		t.Fatalf("the writer got %d requests once nothing was in flight, want 1", w)
	}
}

func TestRefusesWritersItCannotTrust(t *testing.T) {
	tr := New(http.DefaultClient, http.DefaultClient, "https://a:1")
	for _, h := range []string{"http://b:1", "https://b:1/path", "https://u@b:1", "b:1", "https://", "https://b:1?x=1"} {
		if _, ok := tr.accept(h); ok {
			t.Errorf("accepted %q as a writer for https://a:1", h)
		}
	}
	if u, ok := tr.accept("https://b:1/"); !ok || u != "https://b:1" {
		t.Errorf("accept(https://b:1/) = %q, %v", u, ok)
	}
}

// TestAHungWriterSendsTheClientBack: a writer that takes a request and
// never answers runs out the request's deadline; the client goes back to
// its own addresses. A request the caller cancels says nothing of the
// writer.
func TestAHungWriterSendsTheClientBack(t *testing.T) {
	base, writer := newNode(t), newNode(t)
	base.name(writer.srv.URL)
	tr := New(http.DefaultClient, http.DefaultClient, base.srv.URL)
	callUntilAt(t, tr, base.srv.URL, writer)
	hung := make(chan struct{})
	defer close(hung)
	writer.mu.Lock()
	writer.block = hung
	writer.mu.Unlock()

	send := func(ctx context.Context) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base.srv.URL+"/p", strings.NewReader("x"))
		if resp, err := tr.Do(req); err == nil {
			resp.Body.Close()
			t.Fatal("a request to the hung writer was answered")
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	send(ctx)
	if tr.Writer() != writer.srv.URL {
		t.Fatalf("after a cancelled request: Writer() %q, want the writer still", tr.Writer())
	}
	ctx, cancel = context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	send(ctx)
	b := base.hits.Load()
	call(t, tr, base.srv.URL)
	if tr.Writer() != "" || base.hits.Load() != b+1 {
		t.Fatalf("after a request ran out its deadline at the writer: Writer() %q, base hits %d → %d; want \"\" and one more", tr.Writer(), b, base.hits.Load())
	}
}
