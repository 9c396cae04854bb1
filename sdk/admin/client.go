package admin

import (
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/sdk"
)

// Client manages a Varve cluster. It is safe for concurrent use.
type Client struct {
	c      *sdk.Client
	own    bool // Close closes c
	topics varvev1connect.TopicServiceClient
	groups varvev1connect.GroupServiceClient
	admin  varvev1connect.AdminServiceClient
	access varvev1connect.AccessServiceClient
}

// New returns an admin client of the cluster at addr, configured as
// sdk.New(addr, opts...) configures a data client. It does no I/O.
func New(addr string, opts ...sdk.Option) *Client {
	a := NewFromClient(sdk.New(addr, opts...))
	a.own = true
	return a
}

// NewFromClient returns an admin client sending through c: the same HTTP
// client, protocol, tracing and interceptors. Closing it leaves c open.
func NewFromClient(c *sdk.Client) *Client {
	hc, addr, copts := c.ConnectConfig()
	return &Client{
		c:      c,
		topics: varvev1connect.NewTopicServiceClient(hc, addr, copts...),
		groups: varvev1connect.NewGroupServiceClient(hc, addr, copts...),
		admin:  varvev1connect.NewAdminServiceClient(hc, addr, copts...),
		access: varvev1connect.NewAccessServiceClient(hc, addr, copts...),
	}
}

// Client returns the data client the admin client sends through.
func (a *Client) Client() *sdk.Client { return a.c }

// Close releases the idle connections of a client made by New; a client
// made by NewFromClient leaves its sdk.Client to its owner.
func (a *Client) Close() {
	if a.own {
		a.c.Close()
	}
}
