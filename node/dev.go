package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/varve-io/varve/metadata"
)

// DevConfig configures `varve dev`: every role in one process, an embedded
// etcd and the filesystem store under DataDir.
type DevConfig struct {
	// DataDir holds etcd's data (etcd/) and the segment objects (objects/).
	DataDir string
	// Listen is the API address. The embedded etcd listens on the next two
	// ports (client, peer), or on free ports when Listen's port is 0.
	Listen string
	// Node overrides node settings (flush_bytes, linger, ...); Roles,
	// Listen, EtcdEndpoints and Store are set by StartDev.
	Node   Config
	Logger *slog.Logger
}

// Dev is a running `varve dev`.
type Dev struct {
	*Node
	etcd *metadata.Embedded
}

// StartDev starts an embedded etcd and a node with every role, through the
// same constructors `varve serve` uses. Data survives a restart on the same
// DataDir.
func StartDev(ctx context.Context, c DevConfig) (*Dev, error) {
	if c.DataDir == "" {
		return nil, fmt.Errorf("dev: data dir is empty")
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:7700"
	}
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return nil, fmt.Errorf("dev: listen address %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("dev: listen port %q: %w", portStr, err)
	}
	clientPort, peerPort := 0, 0
	if port != 0 {
		clientPort, peerPort = port+1, port+2
	}
	objects := filepath.Join(c.DataDir, "objects")
	if err := os.MkdirAll(objects, 0o755); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	e, err := metadata.StartEmbedded(metadata.EmbeddedConfig{
		Dir:       filepath.Join(c.DataDir, "etcd"),
		ClientURL: fmt.Sprintf("http://%s", net.JoinHostPort(host, strconv.Itoa(clientPort))),
		PeerURL:   fmt.Sprintf("http://%s", net.JoinHostPort(host, strconv.Itoa(peerPort))),
	})
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	cfg := mergeDefaults(c.Node, DefaultConfig())
	// Every role, as the design says: compaction, retention and GC too.
	cfg.Roles = []string{RoleIngest, RoleFetch, RoleCompact}
	cfg.Listen = c.Listen
	cfg.EtcdEndpoints = e.Endpoints()
	cfg.Store = "fs:" + objects
	if cfg.NodeID == "" {
		cfg.NodeID = "dev"
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(c.DataDir, "cache")
	}
	n, err := New(ctx, cfg, Options{Logger: c.Logger})
	if err != nil {
		e.Close()
		return nil, err
	}
	return &Dev{Node: n, etcd: e}, nil
}

// mergeDefaults fills zero fields of c from def.
func mergeDefaults(c, def Config) Config {
	if c.FlushBytes == 0 {
		c.FlushBytes = def.FlushBytes
	}
	if c.Linger == 0 {
		c.Linger = def.Linger
	}
	if c.MaxBufferBytes == 0 {
		c.MaxBufferBytes = def.MaxBufferBytes
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = def.CacheBytes
	}
	if c.DiskCacheBytes == 0 {
		c.DiskCacheBytes = def.DiskCacheBytes
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = def.MaxRequestBytes
	}
	if c.FetchMaxBytes == 0 {
		c.FetchMaxBytes = def.FetchMaxBytes
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = def.ShutdownTimeout
	}
	if c.LogLevel == "" {
		c.LogLevel = def.LogLevel
	}
	if c.LogFormat == "" {
		c.LogFormat = def.LogFormat
	}
	return c
}

// Close drains the node, then stops etcd.
func (d *Dev) Close(ctx context.Context) error {
	err := d.Node.Shutdown(ctx)
	d.etcd.Close()
	return err
}
