package metadata

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Client is Varve's view of etcd. It is safe for concurrent use.
type Client struct {
	cli *clientv3.Client
	log *slog.Logger

	guardMu      sync.Mutex
	guardLease   clientv3.LeaseID
	guardGranted time.Time
}

// Config configures a Client.
type Config struct {
	Endpoints   []string
	DialTimeout time.Duration
	Logger      *slog.Logger
}

// Connect dials etcd and checks that it answers.
func Connect(ctx context.Context, c Config) (*Client, error) {
	if len(c.Endpoints) == 0 {
		return nil, fmt.Errorf("connect to etcd: no endpoints")
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		Logger:      zap.NewNop(),
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
		return nil, fmt.Errorf("connect to etcd %v: %w", c.Endpoints, err)
	}
	return &Client{cli: cli, log: c.Logger}, nil
}

// Endpoints returns the etcd endpoints the client uses.
func (c *Client) Endpoints() []string { return c.cli.Endpoints() }

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
