package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/varve-io/varve/metadata/internal/bounded"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Client is Varve's view of etcd. It is safe for concurrent use.
type Client struct {
	cli    *clientv3.Client
	log    *slog.Logger
	health *bounded.Health

	guardMu      sync.Mutex
	guardLease   clientv3.LeaseID
	guardGranted time.Time

	// commitRetries counts commit transactions that lost to a concurrent
	// write and were planned again (CommitRetries).
	commitRetries atomic.Int64
}

// CommitRetries counts the direct path's commit transactions that lost to
// a concurrent write (another node's commit, compaction, retention) and
// were reread and tried again (ingest.RetryCounter).
func (c *Client) CommitRetries() int64 { return c.commitRetries.Load() }

// Config configures a Client.
type Config struct {
	Endpoints   []string
	DialTimeout time.Duration
	// RequestTimeout bounds every request to etcd (default
	// DefaultRequestTimeout): past it the request fails with
	// ErrUnavailable instead of waiting for etcd to come back.
	RequestTimeout time.Duration
	Logger         *slog.Logger
	// MeterProvider receives varve_etcd_requests_total (caller.go); nil
	// counts nothing.
	MeterProvider metric.MeterProvider
}

// DefaultRequestTimeout is how long a request waits for etcd by default.
const DefaultRequestTimeout = 5 * time.Second

// Reconnection: gRPC's default backoff between connection attempts grows
// to 120 s, so after a long etcd outage a client could stay disconnected
// for up to two minutes after etcd was back. Varve retries at least every
// second and gives up on a dead connection within a few seconds.
var (
	reconnectBackoff = backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   time.Second,
	}
	// minConnectTimeout bounds one connection attempt (gRPC's default 20 s
	// would hold a reconnection that long behind a black-holed address).
	minConnectTimeout = 3 * time.Second
	// keepAliveTime and keepAliveTimeout detect a connection whose peer
	// vanished without closing it. etcd refuses pings more often than
	// every 5 s (its --grpc-keepalive-min-time).
	keepAliveTime    = 10 * time.Second
	keepAliveTimeout = 3 * time.Second
)

// Connect dials etcd and checks that it answers.
func Connect(ctx context.Context, c Config) (*Client, error) {
	if len(c.Endpoints) == 0 {
		return nil, fmt.Errorf("connect to etcd: no endpoints")
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	requests, err := newRequestCounter(c.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            c.Endpoints,
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    keepAliveTime,
		DialKeepAliveTimeout: keepAliveTimeout,
		PermitWithoutStream:  true,
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: reconnectBackoff, MinConnectTimeout: minConnectTimeout,
		}), grpc.WithChainUnaryInterceptor(requests.interceptor)},
		Logger: zap.NewNop(),
		// Commits carry up to a few hundred KiB; leave room below etcd's
		// 1.5 MiB request limit.
		MaxCallSendMsgSize: 2 << 20,
		MaxCallRecvMsgSize: 64 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", c.Endpoints, err)
	}
	sctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	if _, err := cli.Get(sctx, topicsPrefix(), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if ctx.Err() == nil && sctx.Err() != nil {
			return nil, fmt.Errorf("connect to etcd: no answer from etcd at %v within %v (is it running, and reachable from here?): %w",
				c.Endpoints, c.DialTimeout, err)
		}
		return nil, fmt.Errorf("connect to etcd %v: %w", c.Endpoints, err)
	}
	h := bounded.Wrap(cli, c.RequestTimeout)
	return &Client{cli: cli, log: c.Logger, health: h}, nil
}

// Endpoints returns the etcd endpoints the client uses.
func (c *Client) Endpoints() []string { return c.cli.Endpoints() }

// RequestTimeout is how long a request waits for etcd.
func (c *Client) RequestTimeout() time.Duration { return c.health.Timeout() }

// Unreachable reports how long etcd has failed every request (0 while it
// answers).
func (c *Client) Unreachable() time.Duration { return c.health.Down() }

// SuspectUnavailable notes that a peer reported etcd unanswering since
// the given time (bounded.Health.Suspect): this client's next calls wait
// one second for etcd, not the whole request timeout, until one is
// answered.
func (c *Client) SuspectUnavailable(since time.Time) { c.health.Suspect(since) }

// Close releases the connection.
func (c *Client) Close() error { return c.cli.Close() }

// Stats reports the size of Varve's state in etcd.
type Stats struct {
	Keys     int64
	DBSize   int64
	Revision int64
}

// Stats counts Varve's keys and reads the database size of the first endpoint.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	resp, err := c.cli.Get(ctx, root, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return Stats{}, fmt.Errorf("count keys: %w", err)
	}
	st := Stats{Keys: resp.Count, Revision: resp.Header.Revision}
	if eps := c.cli.Endpoints(); len(eps) > 0 {
		if s, err := c.cli.Status(ctx, eps[0]); err == nil {
			st.DBSize = s.DbSize
		}
	}
	return st, nil
}
