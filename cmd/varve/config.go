package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/varve-io/varve/node"
)

// bucketKey is an alias of the store setting, for s3://bucket[/prefix].
const bucketKey = "bucket"

// otherEnv lists the VARVE_* environment variables that are not node
// settings, so that any other VARVE_* variable is refused as a misspelling.
var otherEnv = []string{
	"VARVE_ADDR",     // client commands: the node's API address
	"VARVE_CONFIG",   // the YAML file of node settings
	"VARVE_DATA_DIR", // varve dev --data-dir
	// Client commands: credentials and TLS (docs/security.md).
	"VARVE_TOKEN", "VARVE_CA_FILE", "VARVE_CERT_FILE", "VARVE_KEY_FILE",
	// varve serve: the bootstrap admin key, and secrets given as variables
	// instead of files (docs/security.md).
	"VARVE_BOOTSTRAP_TOKEN", node.EnvTLSCertPEM, node.EnvTLSKeyPEM, node.EnvTLSClientCAPEM, node.EnvTLSCAPEM, node.EnvClusterSecret,
	// Read by tests and benchmarks that run varve as a child process.
	"VARVE_MINIO_BIN", "VARVE_NATS_BIN", "VARVE_REDIS_BIN",
	"VARVE_SOAK_ROUNDS", "VARVE_CRASH_ROUNDS", "VARVE_HISTORY_ROUNDS", "VARVE_HISTORY_DIR", "VARVE_HISTORY_SEED",
	"VARVE_FOOTPRINT_MIB", "VARVE_GC_CRASH_CHILD", "VARVE_ETCD_OUTAGE", "VARVE_E2E_NO_TMPFS",
}

// addNodeFlags declares one flag per node setting (node.Settings), plus
// --config and --bucket (an alias of --store). Flag --a-b, variable
// VARVE_A_B and file key a_b name the same setting.
func addNodeFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "optional YAML configuration file (keys as flags, with _ for -; env VARVE_CONFIG)")
	for _, s := range node.Settings {
		f := fs.VarPF(&settingFlag{s: s}, s.Flag(), "", s.Help)
		f.DefValue = s.Default()
		if s.Type == "bool" {
			f.NoOptDefVal = "true"
		}
	}
	fs.String(bucketKey, "", "alias of --store for s3://bucket[/prefix]")
}

// settingFlag is the flag of one setting; it parses into its own Config so
// that the command line is applied last, over the file and the environment.
type settingFlag struct {
	s   node.Setting
	c   node.Config
	set bool
}

func (f *settingFlag) Set(v string) error {
	if f.set && f.s.Type == "strings" { // --roles a --roles b
		v = f.s.Get(&f.c) + "," + v
	}
	f.set = true
	return f.s.Set(&f.c, v)
}

func (f *settingFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return f.s.Get(&f.c)
}

func (f *settingFlag) Type() string { return f.s.Type }

// loadNodeConfig merges, lowest to highest precedence: defaults (the
// command's own, then node.Settings'), the YAML file, VARVE_* environment
// variables, flags given on the command line.
// Unknown file keys and unknown VARVE_* variables are errors naming the
// closest valid name.
func loadNodeConfig(fs *pflag.FlagSet) (node.Config, error) {
	c := node.DefaultConfig()
	// A command's own defaults: flag values set by the command itself
	// (f.Value.Set) without the user giving the flag.
	fs.VisitAll(func(f *pflag.Flag) {
		if sf, ok := f.Value.(*settingFlag); ok && sf.set && !f.Changed {
			sf.s.CopyFrom(&c, &sf.c)
		}
	})
	var bucket string
	path, _ := fs.GetString("config")
	if path == "" {
		path = os.Getenv("VARVE_CONFIG")
	}
	if path != "" {
		b, err := loadConfigFile(path, &c)
		if err != nil {
			return node.Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
		bucket = cmp.Or(b, bucket)
	}
	b, err := loadConfigEnv(os.Environ(), &c)
	if err != nil {
		return node.Config{}, err
	}
	bucket = cmp.Or(b, bucket)
	fs.Visit(func(f *pflag.Flag) {
		if sf, ok := f.Value.(*settingFlag); ok {
			sf.s.CopyFrom(&c, &sf.c)
		}
	})
	if fs.Changed(bucketKey) {
		bucket, _ = fs.GetString(bucketKey)
	}
	if bucket != "" {
		if c.Store != "" && c.Store != bucket {
			return node.Config{}, fmt.Errorf("config: both store %q and bucket %q are set", c.Store, bucket)
		}
		c.Store = bucket
	}
	c.FillDefaults() // 0 given anywhere means the default
	return c, nil
}

// loadConfigFile applies the YAML file's keys to c and returns its bucket.
func loadConfigFile(path string, c *node.Config) (bucket string, err error) {
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		return "", err
	}
	keys := k.Keys()
	sort.Strings(keys)
	for _, key := range keys {
		v := fileValue(k.Get(key))
		if key == bucketKey {
			bucket = v
			continue
		}
		s, ok := lookupSetting(key)
		if !ok {
			return "", fmt.Errorf("unknown key %q (did you mean %q?)", key, closest(key, settingNames()))
		}
		if err := s.Set(c, v); err != nil {
			return "", fmt.Errorf("%s: %w", key, err)
		}
	}
	return bucket, nil
}

// loadConfigEnv applies the VARVE_* variables of environ to c and returns
// VARVE_BUCKET.
func loadConfigEnv(environ []string, c *node.Config) (bucket string, err error) {
	for _, ev := range settingVars(environ) {
		name, key, v := ev.name, ev.key, ev.value
		if key == bucketKey {
			bucket = v
			continue
		}
		s, ok := lookupSetting(key)
		if !ok {
			return "", unknownEnvError(name)
		}
		if err := s.Set(c, v); err != nil {
			return "", fmt.Errorf("environment variable %s (setting %s): %w", name, key, err)
		}
	}
	return bucket, nil
}

func lookupSetting(key string) (node.Setting, bool) {
	for _, s := range node.Settings {
		if s.Name == key {
			return s, true
		}
	}
	return node.Setting{}, false
}

// settingNames is every file key: the settings and the bucket alias.
func settingNames() []string {
	names := []string{bucketKey}
	for _, s := range node.Settings {
		names = append(names, s.Name)
	}
	return names
}

// fileValue writes a YAML value the way a flag or a variable spells it.
func fileValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case []any:
		parts := make([]string, len(x))
		for i, p := range x {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(x)
	}
}

// closest returns the candidate with the smallest edit distance to s.
func closest(s string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
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

// unknownVarveEnv refuses a VARVE_* variable of environ that is neither a
// setting nor one of otherEnv (client commands run it first: a misspelled
// VARVE_ADR would otherwise leave the default address in force).
func unknownVarveEnv(environ []string) error {
	for _, ev := range settingVars(environ) {
		if _, ok := lookupSetting(ev.key); !ok && ev.key != bucketKey {
			return unknownEnvError(ev.name)
		}
	}
	return nil
}

// envVar is a VARVE_* variable meant as a setting: its name, its setting
// key (lower case, without the prefix) and its value.
type envVar struct{ name, key, value string }

// settingVars returns the VARVE_* variables of environ other than
// otherEnv, sorted by name.
func settingVars(environ []string) []envVar {
	var out []envVar
	for _, kv := range environ {
		name, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "VARVE_") || slices.Contains(otherEnv, name) {
			continue
		}
		out = append(out, envVar{name, strings.ToLower(strings.TrimPrefix(name, "VARVE_")), v})
	}
	slices.SortFunc(out, func(a, b envVar) int { return strings.Compare(a.name, b.name) })
	return out
}

func unknownEnvError(name string) error {
	valid := slices.Clone(otherEnv)
	for _, n := range settingNames() {
		valid = append(valid, "VARVE_"+strings.ToUpper(n))
	}
	return fmt.Errorf("environment variable %s is not a Varve setting (did you mean %s?)", name, closest(name, valid))
}
