package node

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/varve-io/varve/ingest"
)

// Roles a node can run.
const (
	RoleIngest = "ingest"
	RoleFetch  = "fetch"
	// RoleCompact runs the background jobs on the object tier: compaction,
	// retention and garbage collection.
	RoleCompact = "compact"
)

// Config is the one configuration of a node. Every field has the same name
// as a flag (--flush-bytes), an environment variable (VARVE_FLUSH_BYTES) and
// a YAML file key (flush_bytes).
type Config struct {
	Roles         []string `koanf:"roles"`
	Listen        string   `koanf:"listen"`
	NodeID        string   `koanf:"node_id"`
	EtcdEndpoints []string `koanf:"etcd_endpoints"`
	// Store is where segments live: fs:DIR or s3://bucket[/prefix].
	Store       string `koanf:"store"`
	S3Endpoint  string `koanf:"s3_endpoint"`
	S3Region    string `koanf:"s3_region"`
	S3PathStyle bool   `koanf:"s3_path_style"`

	FlushBytes      int           `koanf:"flush_bytes"`
	Linger          time.Duration `koanf:"linger"`
	MaxBufferBytes  int64         `koanf:"max_buffer_bytes"`
	CacheBytes      int64         `koanf:"cache_bytes"`
	MaxRequestBytes int           `koanf:"max_request_bytes"`
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`

	LogLevel  string `koanf:"log_level"`
	LogFormat string `koanf:"log_format"`

	// FlightListen is the Arrow Flight address of the fetch role (scans);
	// empty: no Flight server.
	FlightListen string `koanf:"flight_listen"`
}

// DefaultConfig returns the defaults every flag starts from.
func DefaultConfig() Config {
	return Config{
		Roles:           []string{RoleIngest, RoleFetch},
		Listen:          "127.0.0.1:7700",
		FlushBytes:      ingest.DefaultFlushBytes,
		Linger:          ingest.DefaultLinger,
		MaxBufferBytes:  ingest.DefaultMaxBufferBytes,
		CacheBytes:      256 << 20,
		MaxRequestBytes: 64 << 20,
		ShutdownTimeout: 30 * time.Second,
		S3Region:        "us-east-1",
		LogLevel:        "info",
		LogFormat:       "text",
	}
}

// Validate checks the configuration and says what is wrong.
func (c *Config) Validate() error {
	if len(c.Roles) == 0 {
		return fmt.Errorf("config: roles is empty; use ingest, fetch, compact or a list of them")
	}
	for _, r := range c.Roles {
		if r != RoleIngest && r != RoleFetch && r != RoleCompact {
			return fmt.Errorf("config: unknown role %q; use ingest, fetch, compact or a list of them", r)
		}
	}
	if c.Listen == "" {
		return fmt.Errorf("config: listen is empty")
	}
	if len(c.EtcdEndpoints) == 0 {
		return fmt.Errorf("config: etcd_endpoints is empty")
	}
	if !strings.HasPrefix(c.Store, "fs:") && !strings.HasPrefix(c.Store, "file://") && !strings.HasPrefix(c.Store, "s3://") {
		return fmt.Errorf("config: store %q must be fs:DIR or s3://bucket[/prefix]", c.Store)
	}
	if c.FlushBytes < 1024 {
		return fmt.Errorf("config: flush_bytes %d is below 1024", c.FlushBytes)
	}
	if c.Linger < time.Millisecond {
		return fmt.Errorf("config: linger %v is below 1ms", c.Linger)
	}
	if c.MaxBufferBytes < int64(c.FlushBytes) {
		return fmt.Errorf("config: max_buffer_bytes %d is below flush_bytes %d", c.MaxBufferBytes, c.FlushBytes)
	}
	if c.CacheBytes < 0 || c.MaxRequestBytes <= 0 {
		return fmt.Errorf("config: cache_bytes and max_request_bytes must be positive")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("config: log_format %q must be text or json", c.LogFormat)
	}
	return nil
}

func (c *Config) has(role string) bool { return slices.Contains(c.Roles, role) }
