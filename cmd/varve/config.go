package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/varve-io/varve/node"
)

// addNodeFlags declares every node setting as a flag. Flag --a-b, variable
// VARVE_A_B and file key a_b name the same setting.
func addNodeFlags(fs *pflag.FlagSet) {
	d := node.DefaultConfig()
	fs.String("config", "", "optional YAML configuration file (keys as flags, with _ for -)")
	fs.StringSlice("roles", d.Roles, "roles to run: ingest, fetch, compact (retention, garbage collection, compaction)")
	fs.String("listen", d.Listen, "API address (Connect, gRPC, gRPC-Web, /metrics, /healthz, /readyz)")
	fs.String("flight-listen", "", "Arrow Flight address of the fetch role (scans); empty: none")
	fs.String("node-id", "", "node id (default: random)")
	fs.StringSlice("etcd-endpoints", nil, "etcd client URLs")
	fs.Duration("etcd-request-timeout", d.EtcdRequestTimeout, "how long a request waits for etcd; while etcd is down, calls answer UNAVAILABLE after it")
	fs.Duration("store-probe-interval", d.StoreProbeInterval, "how often /readyz probes the object store when no segment PUT succeeded or failed recently")
	fs.String("store", "", "segment store: fs:DIR or s3://bucket[/prefix]")
	fs.String("bucket", "", "alias of --store for s3://bucket[/prefix]")
	fs.String("s3-endpoint", "", "S3 endpoint URL for S3-compatible stores (MinIO, R2, ...); empty for AWS")
	fs.String("s3-region", d.S3Region, "S3 region")
	fs.Bool("s3-path-style", false, "use path-style S3 addressing (MinIO and most S3-compatibles)")
	fs.Int("flush-bytes", d.FlushBytes, "seal the open segment at this many bytes of records")
	fs.Duration("linger", d.Linger, "seal the open segment this long after its first record")
	fs.Duration("producer-state-ttl", d.ProducerStateTTL, "how long an idempotent producer's state lives in etcd after its last commit")
	fs.Int64("max-buffer-bytes", d.MaxBufferBytes, "records buffered before produce is refused with RESOURCE_EXHAUSTED")
	fs.Int64("cache-bytes", d.CacheBytes, "decoded block cache size of the fetch role")
	fs.String("cache-dir", d.CacheDir, "disk cache of blocks of the fetch role, kept across restarts; empty: none (varve dev: DATA_DIR/cache)")
	fs.Int64("disk-cache-bytes", d.DiskCacheBytes, "size of the disk cache of blocks (with --cache-dir)")
	fs.Int("max-request-bytes", d.MaxRequestBytes, "largest API request accepted")
	fs.Duration("shutdown-timeout", d.ShutdownTimeout, "how long a drain may take on SIGTERM")
	fs.String("log-level", d.LogLevel, "debug, info, warn or error")
	fs.String("log-format", d.LogFormat, "text or json")
	fs.Duration("retention-check-interval", d.RetentionCheckInterval, "compact role: how often topic retention (time and size) is enforced")
	fs.Duration("gc-interval", d.GCInterval, "compact role: how often the bucket is swept for objects no index entry references")
	fs.Duration("gc-grace", d.GCGrace, "compact role: how old and how long unreferenced an object must be before it is deleted (longer than any read or PUT-to-commit)")
	fs.Duration("etcd-compaction-interval", d.EtcdCompactionInterval, "compact role: how often etcd's revision history is compacted; 0: never (etcd compacts itself)")
	fs.Duration("etcd-history-retain", d.EtcdHistoryRetain, "compact role: how much etcd revision history is kept so watches can resume")
	fs.Duration("compaction-interval", d.CompactionInterval, "compact role: how often every partition is checked for compaction")
	fs.Int64("compaction-target-bytes", d.CompactionTargetBytes, "compact role: stored size of the per-partition objects compaction writes")
	fs.Int("compaction-min-entries", d.CompactionMinEntries, "compact role: level-0 index entries in a row that make a partition worth compacting")
}

// loadNodeConfig merges, lowest to highest precedence: defaults, the YAML
// file, VARVE_* environment variables, flags given on the command line.
func loadNodeConfig(fs *pflag.FlagSet) (node.Config, error) {
	k := koanf.New(".")
	flagKey := func(f *pflag.Flag) string { return strings.ReplaceAll(f.Name, "-", "_") }
	// Defaults from the flag set.
	fs.VisitAll(func(f *pflag.Flag) {
		_ = k.Set(flagKey(f), posflag.FlagVal(fs, f))
	})
	path, _ := fs.GetString("config")
	if path == "" {
		path = os.Getenv("VARVE_CONFIG")
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return node.Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	if err := k.Load(env.Provider(".", env.Opt{
		Prefix: "VARVE_",
		TransformFunc: func(key, v string) (string, any) {
			key = strings.ToLower(strings.TrimPrefix(key, "VARVE_"))
			if key == "addr" {
				return "", nil // a client setting
			}
			if strings.Contains(v, ",") {
				return key, strings.Split(v, ",")
			}
			return key, v
		},
	}), nil); err != nil {
		return node.Config{}, err
	}
	if err := k.Load(posflag.ProviderWithFlag(fs, ".", nil, func(f *pflag.Flag) (string, any) {
		if !f.Changed {
			return "", nil
		}
		return flagKey(f), posflag.FlagVal(fs, f)
	}), nil); err != nil {
		return node.Config{}, err
	}
	if b := k.String("bucket"); b != "" {
		if k.String("store") != "" && k.String("store") != b {
			return node.Config{}, fmt.Errorf("config: both store %q and bucket %q are set", k.String("store"), b)
		}
		_ = k.Set("store", b)
	}
	var c node.Config
	err := k.UnmarshalWithConf("", &c, koanf.UnmarshalConf{DecoderConfig: &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      false,
		Result:           &c,
		TagName:          "koanf",
	}})
	if err != nil {
		return node.Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

func newLogger(c node.Config) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("config: log_level %q: %w", c.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}
