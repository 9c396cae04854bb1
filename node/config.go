package node

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/obs"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/tier"
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
	// RoleSequence makes the node a sequencer candidate (with commit_path
	// sequencer): one elected node orders every commit (docs/metadata.md).
	RoleSequence = "sequence"
)

// Values of commit_path: how ingest nodes commit their flushes.
const (
	// CommitDirect: each ingest node writes its commits to etcd itself.
	CommitDirect = "direct"
	// CommitSequencer: ingest nodes send their commits to the elected
	// sequencer (a node of the sequence role), which writes one etcd
	// transaction per batch of them.
	CommitSequencer = "sequencer"
)

// Config is the one configuration of a node. Each field is declared once,
// in Settings below: its file key (flush_bytes), flag (--flush-bytes),
// environment variable (VARVE_FLUSH_BYTES), default, validation and README
// row all come from that declaration.
//
// A zero field means the setting's default, for every setting (a duration
// of 0 too). The one setting that can be turned off, etcd_compaction_interval,
// says so with the value off (Off in Go).
type Config struct {
	Roles         []string
	Listen        string
	NodeID        string
	EtcdEndpoints []string
	// EtcdRequestTimeout bounds every request to etcd: while etcd is down,
	// calls answer UNAVAILABLE (with retry advice) after it instead of
	// waiting for etcd to come back.
	EtcdRequestTimeout time.Duration
	// StoreProbeInterval is how often readiness probes the object store
	// when no segment PUT told it recently whether the store works.
	StoreProbeInterval time.Duration
	// Store is where segments live: fs:DIR or s3://bucket[/prefix].
	Store       string
	S3Endpoint  string
	S3Region    string
	S3PathStyle bool

	// CommitPath is CommitSequencer (the default) or CommitDirect.
	CommitPath string
	// SequencerDedupeWindow is how long the sequencer remembers a
	// commit's answer for a retry; the compact role keeps sequencer batch
	// records at least 1.5 times as long (docs/gc.md).
	SequencerDedupeWindow time.Duration
	// SequencerGather is how long, at most, the sequencer waits for the
	// other ingest nodes' commits of a tick (sequencer.Config.Gather).
	SequencerGather time.Duration
	// WriterBytesPerSecond is the produce rate the sequencer places on
	// one ingest node before it asks for another
	// (sequencer.Config.WriterBytes; OffBytes: no placement).
	WriterBytesPerSecond int64

	FlushBytes     int
	Linger         time.Duration
	MaxBufferBytes int64
	// PutHedgeMin is ingest.Config.PutHedgeMin (Off: never hedge).
	PutHedgeMin time.Duration
	// ProducerStateTTL is how long an idempotent producer's state lives in
	// etcd after its last commit (see docs/idempotence.md).
	ProducerStateTTL time.Duration
	CacheBytes       int64
	// WriterCacheBytes is the memory an ingest node without the fetch role
	// keeps the objects it wrote in, for the fetch nodes (0: heldObjects ×
	// FlushBytes; OffBytes: none).
	WriterCacheBytes int64
	// CacheDir holds the fetch role's disk cache of blocks (kept across
	// restarts); empty: no disk tier. DiskCacheBytes bounds it.
	CacheDir        string
	DiskCacheBytes  int64
	MaxRequestBytes int
	ShutdownTimeout time.Duration

	// FetchMaxBytes caps the max_bytes of one fetch (Kafka's
	// fetch.max.bytes); a record larger than it is still returned alone.
	FetchMaxBytes int

	LogLevel  string
	LogFormat string

	// FlightListen is the Arrow Flight address of the fetch role (scans);
	// empty: no Flight server.
	FlightListen string

	// KafkaListen is the Kafka protocol address (package kafka) of a node
	// with the ingest or the fetch role; empty: none (varve dev: 9092).
	KafkaListen string
	// KafkaAdvertisedAddr is the host:port Kafka Metadata names for this
	// node; empty: the listen address (with an unspecified host, this
	// host's address).
	KafkaAdvertisedAddr string

	// OTLPEndpoint receives traces over OTLP/gRPC (host:port plaintext,
	// http(s)://host:port); empty: no tracing (docs/observability.md).
	OTLPEndpoint string
	// PProf serves /debug/pprof on the API address (on in varve dev).
	PProf bool

	// Janitor of the compact role (docs/gc.md).
	RetentionCheckInterval time.Duration
	GCInterval             time.Duration
	GCGrace                time.Duration
	// EtcdCompactionInterval is Off when etcd compacts itself.
	EtcdCompactionInterval time.Duration
	EtcdHistoryRetain      time.Duration

	// Compaction of the compact role (docs/compaction.md).
	CompactionInterval    time.Duration
	CompactionTargetBytes int64
	CompactionMinEntries  int

	// Security (docs/security.md): TLS on every listener, authentication,
	// authorization, the node credential and quotas.
	Security SecurityConfig
}

// Off turns off a duration setting that allows it (etcd_compaction_interval);
// in files, flags and the environment it is spelled off.
const Off time.Duration = -1

// Settings declares every node setting, in the order of --help and the
// README. To add a setting: add its field to Config, one line here, and use
// the field where the node starts the role it configures.
var Settings = []Setting{
	strs("roles", func(c *Config) *[]string { return &c.Roles }, []string{RoleIngest, RoleFetch, RoleSequence},
		"roles this node runs: ingest, fetch, sequence (a candidate for the elected sequencer, with commit_path sequencer), compact (retention, garbage collection, compaction)", eachOneOf(RoleIngest, RoleFetch, RoleSequence, RoleCompact)),
	str("listen", func(c *Config) *string { return &c.Listen }, "127.0.0.1:7700",
		"API address (Connect, gRPC, gRPC-Web, /metrics, /healthz, /readyz)", nil),
	str("node_id", func(c *Config) *string { return &c.NodeID }, "",
		"names the node in object keys, logs and etcd", nil).doc("random"),
	strs("etcd_endpoints", func(c *Config) *[]string { return &c.EtcdEndpoints }, nil,
		"etcd client URLs", nil).require(),
	duration("etcd_request_timeout", func(c *Config) *time.Duration { return &c.EtcdRequestTimeout }, metadata.DefaultRequestTimeout,
		"how long a request waits for etcd; while etcd is down, calls answer UNAVAILABLE with retry advice after it", between(100*time.Millisecond, 5*time.Minute)),
	str("store", func(c *Config) *string { return &c.Store }, "",
		"segment store: fs:DIR or s3://bucket[/prefix] (alias: bucket)", storeURL).require(),
	str("s3_endpoint", func(c *Config) *string { return &c.S3Endpoint }, "",
		"S3 endpoint URL for S3-compatible stores (MinIO, R2, ...); empty: AWS. Credentials come from the standard AWS chain", nil),
	str("s3_region", func(c *Config) *string { return &c.S3Region }, tier.DefaultRegion,
		"S3 region", nil),
	boolean("s3_path_style", func(c *Config) *bool { return &c.S3PathStyle },
		"use path-style S3 addressing (MinIO and most S3-compatibles)"),
	duration("store_probe_interval", func(c *Config) *time.Duration { return &c.StoreProbeInterval }, DefaultStoreProbeInterval,
		"how often /readyz probes the object store when no segment PUT succeeded or failed recently", atLeast(100*time.Millisecond)),
	str("commit_path", func(c *Config) *string { return &c.CommitPath }, CommitSequencer,
		"how ingest nodes commit: sequencer (through the elected node of the sequence role, one etcd transaction per batch, docs/metadata.md) or direct (each writes etcd itself); every node of a cluster uses the same one, and once a sequencer has led, direct commits are refused", oneOf(CommitSequencer, CommitDirect)),
	duration("sequencer_gather", func(c *Config) *time.Duration { return &c.SequencerGather }, sequencer.DefaultGather,
		"how long, at most, the sequencer holds a batch for the commits of the other ingest nodes that committed in the last second, so that one tick's flushes of every node become one etcd write (a lone ingest node never waits)", between(time.Millisecond, time.Second)),
	bytes64OrOff("writer_bytes_per_second", func(c *Config) *int64 { return &c.WriterBytesPerSecond }, sequencer.DefaultWriterBytes,
		"producer placement: the produce rate (records' bytes a second, before compression) one ingest node takes before producers are placed on another. The sequencer asks for ceil(rate / this) writers, the live ingest nodes with the lowest node ids, and a node names a producer's writer in its Produce answers (header Varve-Produce-To; the SDK follows it), so that at low load few nodes write objects (fewer PUTs, larger objects). Set it alike on every sequence node; off: every node keeps the producers that reach it"),
	duration("sequencer_dedupe_window", func(c *Config) *time.Duration { return &c.SequencerDedupeWindow }, sequencer.DefaultDedupeWindow,
		"how long the sequencer remembers a commit's answer for an ingest node's retry; the compact role keeps the sequencer's batch records at least 1.5 times as long (set it alike on every node)", atLeastWhy(5*time.Second, "an ingest node's commit retry must arrive within it")),
	bytesInt("flush_bytes", func(c *Config) *int { return &c.FlushBytes }, ingest.DefaultFlushBytes,
		"seal the open segment at this many bytes of records", atLeast(1024)),
	duration("linger", func(c *Config) *time.Duration { return &c.Linger }, ingest.DefaultLinger,
		"seal the open segment at the next multiple of this on the wall clock after its first record (at most this long), so every node flushes at the same ticks and the sequencer writes their commits as one batch", atLeast(time.Millisecond)),
	durationOrOff("put_hedge_min", func(c *Config) *time.Duration { return &c.PutHedgeMin }, ingest.DefaultPutHedgeMin,
		"a segment PUT that has not answered after twice the p90 of the node's recent PUTs, and at least this long, is raced by a second PUT of the same bytes under a new key; the first stored is committed, the other deleted (object stores' tail latency is per request); off: never", atLeast(time.Millisecond)),
	bytes64("max_buffer_bytes", func(c *Config) *int64 { return &c.MaxBufferBytes }, ingest.DefaultMaxBufferBytes,
		"records buffered before produce answers RESOURCE_EXHAUSTED with retry advice", nil),
	duration("producer_state_ttl", func(c *Config) *time.Duration { return &c.ProducerStateTTL }, ingest.DefaultProducerStateTTL,
		"how long an idempotent producer's state lives in etcd after its last commit", atLeastWhy(2*time.Second, "etcd's shortest lease")),
	bytes64("cache_bytes", func(c *Config) *int64 { return &c.CacheBytes }, 256<<20,
		"memory block cache of the fetch role", nil),
	bytes64OrOff("writer_cache_bytes", func(c *Config) *int64 { return &c.WriterCacheBytes }, 0,
		"on an ingest node without the fetch role: memory keeping the last objects it wrote, which the fetch nodes then ask it for instead of reading the bucket; 0: four flushes (4 × flush_bytes); off: none").doc("four flushes"),
	str("cache_dir", func(c *Config) *string { return &c.CacheDir }, "",
		"disk cache of blocks of the fetch role, kept across restarts; empty: no disk tier", nil).doc("empty (`varve dev`: `DATA_DIR/cache`)"),
	bytes64("disk_cache_bytes", func(c *Config) *int64 { return &c.DiskCacheBytes }, 4<<30,
		"bound of the disk cache (with cache_dir)", nil),
	bytesInt("max_request_bytes", func(c *Config) *int { return &c.MaxRequestBytes }, DefaultMaxRequestBytes,
		"largest API request accepted (a topic's max_record_bytes must fit in it with 1 MiB to spare), and the most a compressed (gzip) request may inflate to; compressed requests inflating at once share this budget, so one inflates to a quarter to a half of it at most (send larger ones uncompressed); one that finds the budget taken is refused with RESOURCE_EXHAUSTED and a retry delay", nil),
	bytesInt("fetch_max_bytes", func(c *Config) *int { return &c.FetchMaxBytes }, DefaultFetchMaxBytes,
		"cap of one fetch's max_bytes, like Kafka's fetch.max.bytes (a larger record is still returned alone)", nil),
	duration("shutdown_timeout", func(c *Config) *time.Duration { return &c.ShutdownTimeout }, 30*time.Second,
		"how long a drain may take on SIGTERM", nil),
	str("log_level", func(c *Config) *string { return &c.LogLevel }, "info",
		"structured logs on stderr: debug, info, warn or error", oneOf("debug", "info", "warn", "error")),
	str("log_format", func(c *Config) *string { return &c.LogFormat }, "text",
		"text, or json for machines", oneOf("text", "json")),
	str("flight_listen", func(c *Config) *string { return &c.FlightListen }, "",
		"Arrow Flight address of the fetch role, for parallel scans; empty: none", nil),
	str("kafka_listen", func(c *Config) *string { return &c.KafkaListen }, "",
		"Kafka protocol address of a node with the ingest or fetch role (docs/kafka.md); empty: none; varve dev: 127.0.0.1:9092 (with another --listen port P: P+3), off for none", hostPortOrOff),
	str("kafka_advertised_addr", func(c *Config) *string { return &c.KafkaAdvertisedAddr }, "",
		"host:port Kafka clients are told to reach this node at (Metadata); empty: the kafka_listen address", hostPortOrOff),
	str("otlp_endpoint", func(c *Config) *string { return &c.OTLPEndpoint }, "",
		"send traces over OTLP/gRPC to host:port (plaintext) or http(s)://host:port; empty: no tracing", obs.CheckOTLPEndpoint),
	boolean("pprof", func(c *Config) *bool { return &c.PProf },
		"serve /debug/pprof on the API address (varve dev: on)"),
	duration("retention_check_interval", func(c *Config) *time.Duration { return &c.RetentionCheckInterval }, gc.DefaultRetentionInterval,
		"compact role: how often retention by time and size is enforced", atLeast(time.Second)),
	duration("gc_interval", func(c *Config) *time.Duration { return &c.GCInterval }, gc.DefaultGCInterval,
		"compact role: how often the bucket is swept for objects no index entry references", atLeast(time.Second)),
	duration("gc_grace", func(c *Config) *time.Duration { return &c.GCGrace }, gc.DefaultGrace,
		"compact role: how old, and how long unreferenced, an object must be before it is deleted (longer than any read and any PUT-to-commit, docs/gc.md)",
		atLeastWhy(time.Minute, "it must exceed the longest read and the longest segment PUT-to-commit window, docs/gc.md")),
	durationOrOff("etcd_compaction_interval", func(c *Config) *time.Duration { return &c.EtcdCompactionInterval }, gc.DefaultHistoryInterval,
		"compact role: how often etcd's revision history is compacted; off: never (an etcd that compacts itself)", atLeast(time.Second)),
	duration("etcd_history_retain", func(c *Config) *time.Duration { return &c.EtcdHistoryRetain }, gc.DefaultHistoryRetain,
		"compact role: how much etcd revision history is kept so watches can resume", atLeast(time.Second)),
	duration("compaction_interval", func(c *Config) *time.Duration { return &c.CompactionInterval }, compact.DefaultInterval,
		"compact role: how often every partition is checked for compaction", nil),
	bytes64("compaction_target_bytes", func(c *Config) *int64 { return &c.CompactionTargetBytes }, compact.DefaultTargetBytes,
		"compact role: stored size of the per-partition objects compaction writes", atLeast[int64](1<<20)),
	integer("compaction_min_entries", func(c *Config) *int { return &c.CompactionMinEntries }, compact.DefaultMinEntries,
		"compact role: level-0 index entries in a row that make a partition worth compacting", nil),
	str("tls_cert_file", func(c *Config) *string { return &c.Security.TLSCertFile }, "",
		"PEM certificate (chain) of every listener (API, Flight); read again when the file changes; empty: no TLS", nil),
	str("tls_key_file", func(c *Config) *string { return &c.Security.TLSKeyFile }, "",
		"PEM private key of tls_cert_file", nil),
	str("tls_client_ca_file", func(c *Config) *string { return &c.Security.TLSClientCAFile }, "",
		"PEM CAs whose client certificates are accepted (mutual TLS; required by auth mtls); read again when the file changes", nil),
	str("tls_ca_file", func(c *Config) *string { return &c.Security.TLSCAFile }, "",
		"PEM CAs a node trusts when it calls another node (BlockService); empty: the system roots", nil),
	str("tls_peer_server_name", func(c *Config) *string { return &c.Security.TLSPeerServerName }, "",
		"name a node checks other nodes' certificates against when it calls them (one certificate for every node, e.g. behind a load balancer); empty: the address it dials", nil),
	str("auth", func(c *Config) *string { return &c.Security.Auth }, "none",
		"authentication: none, token (API keys, Authorization: Bearer) or mtls (client certificates)", oneOf("none", "token", "mtls")),
	str("mtls_principal", func(c *Config) *string { return &c.Security.MTLSPrincipal }, "cn",
		"auth mtls: the principal is the client certificate's subject cn, or its first dns, email or uri SAN", oneOf("cn", "dns", "email", "uri")),
	str("bootstrap_token_file", func(c *Config) *string { return &c.Security.BootstrapTokenFile }, "",
		"file holding a bootstrap admin API key (principal admin, every permission); the variable VARVE_BOOTSTRAP_TOKEN gives it too", nil),
	str("cluster_secret_file", func(c *Config) *string { return &c.Security.ClusterSecretFile }, "",
		"file holding the secret nodes present to each other's internal BlockService (the same on every node); empty: only mutual TLS between nodes, or no check with auth none", nil),
	strs("node_principals", func(c *Config) *[]string { return &c.Security.NodePrincipals }, nil,
		"principals of client certificates (named as mtls_principal says, verified against tls_client_ca_file) that are nodes: they may call the internal BlockService and nothing else; nodes present their tls_cert_file to each other, an alternative to cluster_secret_file", nil),
	boolean("insecure", func(c *Config) *bool { return &c.Security.Insecure },
		"serve: allow auth none without TLS on a non-loopback address (logged as a warning)"),
	bytes64("quota_produce_bytes", func(c *Config) *int64 { return &c.Security.QuotaProduceBytes }, 0,
		"default produce bytes/s of one principal across the cluster (split evenly among the live ingest nodes); 0: none", nil),
	bytes64("quota_fetch_bytes", func(c *Config) *int64 { return &c.Security.QuotaFetchBytes }, 0,
		"default fetch bytes/s of one principal across the cluster (split evenly among the live fetch nodes); 0: none", nil),
	strs("quotas", func(c *Config) *[]string { return &c.Security.Quotas }, nil,
		"per-principal quotas overriding the defaults: PRINCIPAL:produce=BYTES or PRINCIPAL:fetch=BYTES, comma-separated", nil),
}

// SecurityConfig is the security part of Config.
type SecurityConfig struct {
	TLSCertFile, TLSKeyFile, TLSClientCAFile, TLSCAFile string
	Auth                                                string
	MTLSPrincipal                                       string
	// BootstrapTokenFile holds an admin API key; BootstrapToken is the key
	// itself (from VARVE_BOOTSTRAP_TOKEN, never a flag).
	BootstrapTokenFile string
	BootstrapToken     string
	ClusterSecretFile  string
	Insecure           bool
	QuotaProduceBytes  int64
	QuotaFetchBytes    int64
	Quotas             []string

	// Env holds PEM texts and the cluster secret given by environment
	// variables instead of files (VARVE_TLS_CERT_PEM, ...), never by flags.
	Env SecretEnv
	// TLSPeerServerName overrides the name node-to-node calls verify.
	TLSPeerServerName string
	// NodePrincipals: client certificate principals that are nodes.
	NodePrincipals []string
}

// DefaultConfig returns the defaults every setting starts from.
func DefaultConfig() Config {
	var c Config
	for _, s := range Settings {
		s.setDefault(&c)
	}
	return c
}

// FillDefaults sets every zero field to its setting's default.
func (c *Config) FillDefaults() {
	for _, s := range Settings {
		if s.isZero(c) {
			s.setDefault(c)
		}
	}
}

// Validate checks the configuration and says what is wrong. Zero fields
// stand for their defaults.
func (c *Config) Validate() error {
	for _, s := range Settings {
		if err := s.validate(c); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	f := *c
	f.FillDefaults()
	if err := f.Security.validate(&f); err != nil {
		return err
	}
	if f.MaxBufferBytes < int64(f.FlushBytes) {
		return fmt.Errorf("config: max_buffer_bytes %d is below flush_bytes %d", f.MaxBufferBytes, f.FlushBytes)
	}
	return nil
}

// hostPortOrOff checks a host:port setting that may be empty or off.
func hostPortOrOff(s string) error {
	if s == "" || s == "off" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return fmt.Errorf("must be host:port: %v", err)
	}
	return nil
}

func storeURL(s string) error {
	if !strings.HasPrefix(s, "fs:") && !strings.HasPrefix(s, "file://") && !strings.HasPrefix(s, "s3://") {
		return fmt.Errorf("must be fs:DIR or s3://bucket[/prefix]")
	}
	return nil
}

func (c *Config) has(role string) bool { return slices.Contains(c.Roles, role) }
