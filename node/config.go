package node

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/compact"
	"github.com/varve-io/varve/tier/gc"
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
	// EtcdRequestTimeout bounds every request to etcd: while etcd is down,
	// calls answer UNAVAILABLE (with retry advice) after it instead of
	// waiting for etcd to come back.
	EtcdRequestTimeout time.Duration `koanf:"etcd_request_timeout"`
	// StoreProbeInterval is how often readiness probes the object store
	// when no segment PUT told it recently whether the store works.
	StoreProbeInterval time.Duration `koanf:"store_probe_interval"`
	// Store is where segments live: fs:DIR or s3://bucket[/prefix].
	Store       string `koanf:"store"`
	S3Endpoint  string `koanf:"s3_endpoint"`
	S3Region    string `koanf:"s3_region"`
	S3PathStyle bool   `koanf:"s3_path_style"`

	FlushBytes     int           `koanf:"flush_bytes"`
	Linger         time.Duration `koanf:"linger"`
	MaxBufferBytes int64         `koanf:"max_buffer_bytes"`
	// ProducerStateTTL is how long an idempotent producer's state lives in
	// etcd after its last commit (see docs/idempotence.md).
	ProducerStateTTL time.Duration `koanf:"producer_state_ttl"`
	CacheBytes       int64         `koanf:"cache_bytes"`
	// CacheDir holds the fetch role's disk cache of blocks (kept across
	// restarts); empty: no disk tier. DiskCacheBytes bounds it.
	CacheDir        string        `koanf:"cache_dir"`
	DiskCacheBytes  int64         `koanf:"disk_cache_bytes"`
	MaxRequestBytes int           `koanf:"max_request_bytes"`
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`

	LogLevel  string `koanf:"log_level"`
	LogFormat string `koanf:"log_format"`

	// FlightListen is the Arrow Flight address of the fetch role (scans);
	// empty: no Flight server.
	FlightListen string `koanf:"flight_listen"`

	// Janitor of the compact role (docs/gc.md): how often retention runs,
	// how often the bucket is swept for unreferenced objects and how long
	// they must have been unreferenced first, how often etcd's revision
	// history is compacted (0: never, etcd compacts itself) and how much of
	// it is kept.
	RetentionCheckInterval time.Duration `koanf:"retention_check_interval"`
	GCInterval             time.Duration `koanf:"gc_interval"`
	GCGrace                time.Duration `koanf:"gc_grace"`
	EtcdCompactionInterval time.Duration `koanf:"etcd_compaction_interval"`
	EtcdHistoryRetain      time.Duration `koanf:"etcd_history_retain"`

	// Compaction of the compact role (docs/compaction.md): how often every
	// partition is looked at, the stored size of the objects it writes, and
	// how many level-0 index entries in a row make a partition worth it.
	CompactionInterval    time.Duration `koanf:"compaction_interval"`
	CompactionTargetBytes int64         `koanf:"compaction_target_bytes"`
	CompactionMinEntries  int           `koanf:"compaction_min_entries"`
}

// DefaultConfig returns the defaults every flag starts from.
func DefaultConfig() Config {
	return Config{
		Roles:            []string{RoleIngest, RoleFetch},
		Listen:           "127.0.0.1:7700",
		FlushBytes:       ingest.DefaultFlushBytes,
		Linger:           ingest.DefaultLinger,
		MaxBufferBytes:   ingest.DefaultMaxBufferBytes,
		ProducerStateTTL: ingest.DefaultProducerStateTTL,
		CacheBytes:       256 << 20,
		DiskCacheBytes:   4 << 30,
		MaxRequestBytes:  64 << 20,
		ShutdownTimeout:  30 * time.Second,
		S3Region:         "us-east-1",
		LogLevel:         "info",
		LogFormat:        "text",

		// Outages of etcd and of the object store (node/ready.go).
		EtcdRequestTimeout: metadata.DefaultRequestTimeout,
		StoreProbeInterval: DefaultStoreProbeInterval,

		// The compact role's janitor (tier/gc).
		RetentionCheckInterval: gc.DefaultRetentionInterval,
		GCInterval:             gc.DefaultGCInterval,
		GCGrace:                gc.DefaultGrace,
		EtcdCompactionInterval: gc.DefaultHistoryInterval,
		EtcdHistoryRetain:      gc.DefaultHistoryRetain,

		// The compact role's compactor (tier/compact).
		CompactionInterval:    compact.DefaultInterval,
		CompactionTargetBytes: compact.DefaultTargetBytes,
		CompactionMinEntries:  compact.DefaultMinEntries,
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
	if c.ProducerStateTTL != 0 && c.ProducerStateTTL < 2*time.Second {
		return fmt.Errorf("config: producer_state_ttl %v is below 2s (etcd's shortest lease)", c.ProducerStateTTL)
	}
	if c.MaxBufferBytes < int64(c.FlushBytes) {
		return fmt.Errorf("config: max_buffer_bytes %d is below flush_bytes %d", c.MaxBufferBytes, c.FlushBytes)
	}
	if c.CacheBytes < 0 || c.MaxRequestBytes <= 0 {
		return fmt.Errorf("config: cache_bytes and max_request_bytes must be positive")
	}
	if c.CacheDir != "" && c.DiskCacheBytes <= 0 {
		return fmt.Errorf("config: disk_cache_bytes %d must be positive when cache_dir is set", c.DiskCacheBytes)
	}
	// Zero janitor settings take the defaults (etcd_compaction_interval 0:
	// off).
	if c.RetentionCheckInterval != 0 && c.RetentionCheckInterval < time.Second || c.GCInterval != 0 && c.GCInterval < time.Second {
		return fmt.Errorf("config: retention_check_interval %v and gc_interval %v must be at least 1s", c.RetentionCheckInterval, c.GCInterval)
	}
	if c.GCGrace != 0 && c.GCGrace < time.Minute {
		return fmt.Errorf("config: gc_grace %v is below 1m; it must exceed the longest read and the longest segment PUT-to-commit window (docs/gc.md)", c.GCGrace)
	}
	if c.EtcdCompactionInterval < 0 || c.EtcdHistoryRetain != 0 && c.EtcdHistoryRetain < time.Second {
		return fmt.Errorf("config: etcd_compaction_interval %v must be 0 (off) or positive and etcd_history_retain %v at least 1s", c.EtcdCompactionInterval, c.EtcdHistoryRetain)
	}
	if c.EtcdRequestTimeout != 0 && c.EtcdRequestTimeout < 100*time.Millisecond || c.EtcdRequestTimeout > 5*time.Minute {
		return fmt.Errorf("config: etcd_request_timeout %v must be between 100ms and 5m (0: the default %v)", c.EtcdRequestTimeout, metadata.DefaultRequestTimeout)
	}
	if c.StoreProbeInterval != 0 && c.StoreProbeInterval < 100*time.Millisecond {
		return fmt.Errorf("config: store_probe_interval %v is below 100ms (0: the default %v)", c.StoreProbeInterval, DefaultStoreProbeInterval)
	}
	if c.CompactionInterval < 0 || c.CompactionTargetBytes < 0 || c.CompactionMinEntries < 0 {
		return fmt.Errorf("config: compaction_interval %v, compaction_target_bytes %d and compaction_min_entries %d must not be negative (0: the default)", c.CompactionInterval, c.CompactionTargetBytes, c.CompactionMinEntries)
	}
	if c.CompactionTargetBytes != 0 && c.CompactionTargetBytes < 1<<20 {
		return fmt.Errorf("config: compaction_target_bytes %d is below 1 MiB", c.CompactionTargetBytes)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("config: log_format %q must be text or json", c.LogFormat)
	}
	return nil
}

func (c *Config) has(role string) bool { return slices.Contains(c.Roles, role) }
