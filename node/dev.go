package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/varve-io/varve/metadata/embedded"
	"github.com/varve-io/varve/tier"
)

// DefaultDevMinFreeBytes is the free space `varve dev` keeps on its data
// directory's file system for the embedded etcd, which preallocates each
// WAL segment (64 MB) and the next one ahead and grows its database page by
// page. etcd stops the process when one of those writes fails; refusing
// segments first keeps it from having to.
const DefaultDevMinFreeBytes = 128 << 20

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
	// MinFreeBytes is the free space kept on the data directory's file
	// system for the embedded etcd: writes of segment objects that would
	// leave less are refused with an error wrapping ENOSPC. 0 means
	// DefaultDevMinFreeBytes; < 0 none.
	MinFreeBytes int64
	// StartTimeout bounds each blocking start-up step (embedded etcd
	// start and ready, the node's etcd connection, store and roles);
	// default 60s.
	StartTimeout time.Duration
}

// Dev is a running `varve dev`.
type Dev struct {
	*Node
	etcd *embedded.Etcd
	lock *os.File
}

// StartDev starts an embedded etcd and a node with every role, through the
// same constructors `varve serve` uses. Data survives a restart on the same
// DataDir.
func StartDev(ctx context.Context, c DevConfig) (*Dev, error) {
	if c.DataDir == "" {
		return nil, fmt.Errorf("dev: data dir is empty")
	}
	if c.Listen == "" {
		c.Listen = DefaultDevListen
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
	if c.StartTimeout == 0 {
		c.StartTimeout = 60 * time.Second
	}
	objects := filepath.Join(c.DataDir, "objects")
	if err := os.MkdirAll(objects, 0o755); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	// One process per data directory: a second one would wait forever on
	// the embedded etcd's file locks.
	lock, err := lockDataDir(c.DataDir)
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	e, err := embedded.StartContext(ctx, embedded.Config{
		Dir:          filepath.Join(c.DataDir, "etcd"),
		ClientURL:    fmt.Sprintf("http://%s", net.JoinHostPort(host, strconv.Itoa(clientPort))),
		PeerURL:      fmt.Sprintf("http://%s", net.JoinHostPort(host, strconv.Itoa(peerPort))),
		Logger:       c.Logger,
		ReadyTimeout: c.StartTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	cfg := mergeDefaults(c.Node, DefaultConfig())
	// Every role, as the design says: compaction, retention and GC too.
	cfg.Roles = []string{RoleIngest, RoleFetch, RoleSequence, RoleCompact}
	cfg.Listen = c.Listen
	if cfg.KafkaListen == "" {
		cfg.KafkaListen = devKafkaListen(host, port)
	}
	cfg.EtcdEndpoints = e.Endpoints()
	cfg.Store = "fs:" + objects
	if cfg.NodeID == "" {
		cfg.NodeID = "dev"
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(c.DataDir, "cache")
	}
	nctx, cancel := context.WithTimeoutCause(ctx, c.StartTimeout, fmt.Errorf("node not started after %v", c.StartTimeout))
	defer cancel()
	minFree := c.MinFreeBytes
	if minFree == 0 {
		minFree = DefaultDevMinFreeBytes
	}
	store, err := tier.NewFS(objects)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("dev: %w", err)
	}
	n, err := New(nctx, cfg, Options{Logger: c.Logger, Store: withFreeSpaceReserve(store, c.DataDir, uint64(max(minFree, 0)))})
	if err != nil {
		e.Close()
		if cause := context.Cause(nctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		return nil, fmt.Errorf("dev: %w", err)
	}
	ok = true
	return &Dev{Node: n, etcd: e, lock: lock}, nil
}

// mergeDefaults fills zero fields of c from def, for every setting.
func mergeDefaults(c, def Config) Config {
	for _, s := range Settings {
		if s.isZero(&c) {
			s.CopyFrom(&c, &def)
		}
	}
	return c
}

// Close drains the node, stops etcd and releases the data directory. etcd
// gets what is left of ctx, and at least two seconds, to stop.
func (d *Dev) Close(ctx context.Context) error {
	err := d.Node.Shutdown(ctx)
	stopped := make(chan struct{})
	go func() {
		d.etcd.Close()
		close(stopped)
	}()
	floor := time.NewTimer(2 * time.Second)
	defer floor.Stop()
	select {
	case <-stopped:
	case <-floor.C:
		select {
		case <-stopped:
		case <-ctx.Done():
			err = errors.Join(err, fmt.Errorf("dev: embedded etcd did not stop within the shutdown timeout"))
		}
	}
	d.lock.Close()
	return err
}

// DefaultDevListen is varve dev's API address, and DefaultDevKafkaPort its
// Kafka port with that address.
const (
	DefaultDevListen    = "127.0.0.1:7700"
	DefaultDevKafkaPort = 9092
)

// devKafkaListen is varve dev's Kafka address for the API's host and port:
// Kafka's own port 9092 with the default API port, a free one with port 0
// (tests), else the API's port + 3 (after the embedded etcd's two), so
// that several varve dev on one machine do not all want 9092.
func devKafkaListen(host string, port int) string {
	switch port {
	case 0:
		return net.JoinHostPort(host, "0")
	case 7700:
		return net.JoinHostPort(host, strconv.Itoa(DefaultDevKafkaPort))
	}
	return net.JoinHostPort(host, strconv.Itoa(port+3))
}
