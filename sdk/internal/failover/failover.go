// Package failover spreads a client's requests over several addresses of
// one cluster: every request goes to the current address, and a request
// that fails without an answer (the node is down, unreachable or hung)
// moves the client on to the next one, so that the caller's retry reaches
// another node.
package failover

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"

	"connectrpc.com/connect"
)

// Addresses splits a comma-separated list of addresses and normalizes
// each: a bare host:port means http://, and trailing slashes go.
func Addresses(list string) []string {
	var out []string
	for a := range strings.SplitSeq(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		out = append(out, strings.TrimRight(a, "/"))
	}
	if len(out) == 0 {
		out = []string{"http://"}
	}
	return out
}

// Client sends requests built for addrs[0] to the current address.
type Client struct {
	next  connect.HTTPClient
	addrs []string
	cur   atomic.Int64
}

// New returns a client rotating over addrs (at least one) through next.
func New(next connect.HTTPClient, addrs []string) *Client {
	return &Client{next: next, addrs: addrs}
}

// Do sends req to the current address; on a failure without an answer
// (other than the caller's cancellation) it moves on to the next address.
func (c *Client) Do(req *http.Request) (*http.Response, error) {
	i := c.cur.Load()
	if i != 0 {
		u := req.URL.String()
		if rest, ok := strings.CutPrefix(u, c.addrs[0]); ok {
			nreq := req.Clone(req.Context())
			nu, err := req.URL.Parse(c.addrs[i] + rest)
			if err != nil {
				return nil, err
			}
			nreq.URL, nreq.Host = nu, ""
			req = nreq
		}
	}
	resp, err := c.next.Do(req)
	if err != nil && !errors.Is(err, context.Canceled) {
		c.cur.CompareAndSwap(i, (i+1)%int64(len(c.addrs)))
	}
	return resp, err
}
