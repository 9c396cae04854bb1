// Package place follows the producer placement of the cluster
// (docs/metadata.md, "Producer placement"): a client's Produce requests
// carry its key, and when a node's answer names another node as the
// client's writer, the client checks that it can reach that node (its
// /healthz, in the background) and then sends its next requests there,
// once none is in flight (so a producer's batches are never split between
// two nodes at once). A node the client cannot reach (behind a load
// balancer, its address is not the client's to use) is not asked again
// for ProbeHoldoff. A writer that stops answering sends the client back
// to its own addresses, and names are ignored for Holdoff: its
// registration may outlive it.
package place

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/internal/placement"
)

const (
	// Holdoff is how long names are ignored after a writer did not
	// answer: longer than a dead node's registration lives (10 s).
	Holdoff = 15 * time.Second
	// ProbeHoldoff is how long names are ignored after a named node did
	// not answer the client's probe.
	ProbeHoldoff = 5 * time.Minute
	// probeTimeout bounds a probe.
	probeTimeout = 2 * time.Second
)

// Transport sends a client's Produce requests to the node the cluster
// placed it on.
type Transport struct {
	next   connect.HTTPClient // for the client's own addresses (failover)
	direct connect.HTTPClient // for a writer named by a node
	base   string             // the address requests are built for
	key    string

	mu       sync.Mutex
	cur      string // "" : the client's own addresses
	want     string // the writer to move to (probed)
	probing  string // the named writer being probed
	inflight int
	hold     time.Time // names are ignored until then
}

// New returns a transport for requests built for base, sent through next,
// or straight through direct to a writer.
func New(next, direct connect.HTTPClient, base string) *Transport {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Transport{next: next, direct: direct, base: strings.TrimRight(base, "/"), key: hex.EncodeToString(b)}
}

// Writer returns the node the requests go to now ("" : the client's own).
func (t *Transport) Writer() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cur
}

// Do implements connect.HTTPClient.
func (t *Transport) Do(req *http.Request) (*http.Response, error) {
	req.Header.Set(placement.ClientHeader, t.key)
	t.mu.Lock()
	if t.want != t.cur && t.inflight == 0 {
		t.cur = t.want
	}
	to := t.cur
	t.inflight++
	t.mu.Unlock()

	var resp *http.Response
	var err error
	if rest, ok := strings.CutPrefix(req.URL.String(), t.base); ok && to != "" {
		nreq := req.Clone(req.Context())
		if nreq.URL, err = url.Parse(to + rest); err == nil {
			nreq.Host = ""
			resp, err = t.direct.Do(nreq)
		}
	} else {
		to = ""
		resp, err = t.next.Do(req)
	}

	now := time.Now()
	// The caller cancelled (not the request's deadline, which a hung
	// writer runs out): no verdict on the writer.
	cancelled := errors.Is(err, context.Canceled) || errors.Is(req.Context().Err(), context.Canceled)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inflight--
	switch {
	case to != "" && (err != nil && !cancelled || err == nil && resp.StatusCode == http.StatusServiceUnavailable):
		// The writer is gone, hung or going: back to the client's own
		// addresses, and no name followed for a while.
		t.cur, t.want, t.hold = "", "", now.Add(Holdoff)
	case err == nil && resp.StatusCode == http.StatusOK && now.After(t.hold):
		h := resp.Header.Get(placement.ToHeader)
		if h == "" {
			break
		}
		switch u, ok := t.accept(h); {
		case !ok:
		case u == "":
			t.want = "" // back to the client's own addresses
		case u == t.want || u == t.probing:
		case t.probing == "":
			t.probing = u
			go t.probe(u)
		}
	}
	return resp, err
}

// probe asks the named node's /healthz, straight, and moves the client
// there if it answers; otherwise names are ignored for ProbeHoldoff.
func (t *Transport) probe(u string) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	ok := false
	if req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/healthz", nil); err == nil {
		if resp, err := t.direct.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
			resp.Body.Close()
			ok = resp.StatusCode == http.StatusOK
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.probing = ""
	if ok {
		t.want = u
	} else {
		t.hold = time.Now().Add(ProbeHoldoff)
	}
}

// accept normalizes a named writer: an absolute URL of the base's scheme
// (never from https to http) with a host and no more; the base itself is
// "".
func (t *Transport) accept(h string) (string, bool) {
	u, err := url.Parse(strings.TrimRight(h, "/"))
	if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return "", false
	}
	b, err := url.Parse(t.base)
	if err != nil || u.Scheme != b.Scheme {
		return "", false
	}
	s := u.Scheme + "://" + u.Host
	if s == t.base {
		return "", true
	}
	return s, true
}
