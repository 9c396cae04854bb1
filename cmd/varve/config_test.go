package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/varve-io/varve/node"
)

func TestConfigSameNamesEverywhere(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "varve.yaml")
	if err := os.WriteFile(file, []byte(strings.Join([]string{
		"flush_bytes: 1048576",
		"linger: 250ms",
		"etcd_endpoints: [http://a:2379, http://b:2379]",
		"store: s3://from-file/prefix",
		"s3_path_style: true",
		"cache_bytes: 1000",
	}, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VARVE_LINGER", "40ms")           // beats the file
	t.Setenv("VARVE_ROLES", "ingest")          // a list from the environment
	t.Setenv("VARVE_CACHE_BYTES", "2000")      // beats the file, loses to the flag
	t.Setenv("VARVE_ADDR", "http://x:1")       // a client setting, ignored here
	t.Setenv("VARVE_NODE_ID", "node-from-env") // plain string

	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addNodeFlags(fs)
	if err := fs.Parse([]string{"--config", file, "--cache-bytes", "3000", "--s3-endpoint", "http://minio:9000"}); err != nil {
		t.Fatal(err)
	}
	c, err := loadNodeConfig(fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.FlushBytes != 1<<20 || c.Linger != 40*time.Millisecond || c.CacheBytes != 3000 ||
		!reflect.DeepEqual(c.Roles, []string{"ingest"}) || c.NodeID != "node-from-env" ||
		!reflect.DeepEqual(c.EtcdEndpoints, []string{"http://a:2379", "http://b:2379"}) ||
		c.Store != "s3://from-file/prefix" || !c.S3PathStyle || c.S3Endpoint != "http://minio:9000" ||
		c.MaxBufferBytes != 256<<20 {
		t.Fatalf("merged config wrong: %+v", c)
	}
}

func TestConfigBucketAliasAndErrors(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addNodeFlags(fs)
	if err := fs.Parse([]string{"--bucket", "s3://b/p"}); err != nil {
		t.Fatal(err)
	}
	c, err := loadNodeConfig(fs)
	if err != nil || c.Store != "s3://b/p" {
		t.Fatalf("bucket alias: %+v %v", c, err)
	}
	fs = pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addNodeFlags(fs)
	_ = fs.Parse([]string{"--bucket", "s3://b", "--store", "fs:/x"})
	if _, err := loadNodeConfig(fs); err == nil {
		t.Fatal("store and bucket both set: no error")
	}
	fs = pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addNodeFlags(fs)
	_ = fs.Parse([]string{"--config", "/does/not/exist.yaml"})
	if _, err := loadNodeConfig(fs); err == nil || !strings.Contains(err.Error(), "/does/not/exist.yaml") {
		t.Fatalf("missing file: %v", err)
	}
	t.Setenv("VARVE_LINGER", "soon")
	fs = pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addNodeFlags(fs)
	if _, err := loadNodeConfig(fs); err == nil || !strings.Contains(err.Error(), "linger") {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestConfigRefusesUnknownNames(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		file string
		env  []string
		want string
	}{
		{"file key", "lingr: 5ms", nil, `unknown key "lingr" (did you mean "linger"?)`},
		{"nested file key", "s3:\n  endpoint: http://x", nil, `unknown key "s3.endpoint" (did you mean "s3_endpoint"?)`},
		{"file bad value", "flush_bytes: lots", nil, `flush_bytes: "lots" is not a size in bytes`},
		{"file value below minimum", "linger: 10us", nil, "linger: 10µs is below 1ms"},
		{"negative duration", "gc_interval: -1m", nil, "gc_interval: -1m must not be negative (0: the default)"},
		{"off where not allowed", "linger: off", nil, "linger: cannot be off"},
		{"environment", "", []string{"VARVE_LINGR=5ms"}, "environment variable VARVE_LINGR is not a Varve setting (did you mean VARVE_LINGER?)"},
		{"environment near a client variable", "", []string{"VARVE_ADR=x"}, "did you mean VARVE_ADDR?"},
		{"environment bad value", "", []string{"VARVE_ROLES=ingest,fetsh"}, `environment variable VARVE_ROLES (setting roles): ingest,fetsh has unknown "fetsh"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{}
			if tc.file != "" {
				file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
				if err := os.WriteFile(file, []byte(tc.file), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", file)
			}
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			addNodeFlags(fs)
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			if _, err := loadNodeConfig(fs); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestConfigFlagErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--linger", "soon"},
		{"--flush-bytes", "-5"},
		{"--log-format", "xml"},
		{"--roles", "ingest,bogus"},
	} {
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		addNodeFlags(fs)
		if err := fs.Parse(args); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Fatalf("%v: got %v, want an error naming %s", args, err, args[0])
		}
	}
}

// TestClientCommandsRefuseUnknownVariables: a client command refuses a
// misspelled VARVE_* variable before it does anything, naming the closest.
func TestClientCommandsRefuseUnknownVariables(t *testing.T) {
	t.Setenv("VARVE_ADR", "http://127.0.0.1:1")
	for _, args := range [][]string{{"topic", "list"}, {"produce", "t"}, {"consume", "t"}, {"group", "list"}} {
		if _, _, err := runCLI(t, args...); err == nil || !strings.Contains(err.Error(), "environment variable VARVE_ADR is not a Varve setting (did you mean VARVE_ADDR?)") {
			t.Fatalf("varve %s with VARVE_ADR set: %v", strings.Join(args, " "), err)
		}
	}
}

// TestConfigNonSettingVariables: the VARVE_* variables of client commands,
// tests and exports are not refused.
func TestConfigNonSettingVariables(t *testing.T) {
	for _, name := range otherEnv {
		if name != "VARVE_CONFIG" {
			t.Setenv(name, "x")
		}
	}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addNodeFlags(fs)
	if _, err := loadNodeConfig(fs); err != nil {
		t.Fatal(err)
	}
}

// TestConfigZeroMeansDefault: 0 is the default for every setting, given in
// a file, a variable or a flag; off turns off the one setting that allows it.
func TestConfigZeroMeansDefault(t *testing.T) {
	file := filepath.Join(t.TempDir(), "varve.yaml")
	if err := os.WriteFile(file, []byte("linger: 0\nshutdown_timeout: 0s\ncache_bytes: 0\netcd_compaction_interval: off\nflush_bytes: 8MiB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VARVE_GC_GRACE", "0s")
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addNodeFlags(fs)
	if err := fs.Parse([]string{"--config", file, "--compaction-interval", "0", "--etcd-endpoints", "http://e:2379", "--store", "fs:/x"}); err != nil {
		t.Fatal(err)
	}
	c, err := loadNodeConfig(fs)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d := node.DefaultConfig()
	if c.Linger != d.Linger || c.ShutdownTimeout != d.ShutdownTimeout || c.CacheBytes != d.CacheBytes ||
		c.GCGrace != d.GCGrace || c.CompactionInterval != d.CompactionInterval || c.FlushBytes != 8<<20 ||
		c.EtcdCompactionInterval != node.Off {
		t.Fatalf("zeros did not take the defaults: %+v", c)
	}
	// Every setting: the zero Config filled is the default Config, and
	// every default is valid and prints in a syntax the setting reads back.
	var z node.Config
	z.FillDefaults()
	if !reflect.DeepEqual(z, d) {
		t.Fatalf("filled zero config %+v != defaults %+v", z, d)
	}
	for _, s := range node.Settings {
		var c node.Config
		if err := s.Set(&c, s.Default()); err != nil {
			t.Fatalf("%s: default %q does not parse: %v", s.Name, s.Default(), err)
		}
		if s.Get(&c) != s.Default() {
			t.Fatalf("%s: default %q reads back as %q", s.Name, s.Default(), s.Get(&c))
		}
	}
}

var updateREADME = flag.Bool("update-readme", false, "rewrite README.md's configuration table from node.Settings")

// TestREADMEConfigurationTable: the README's table of settings is the
// declarations in node.Settings (go test ./cmd/varve -run README -update-readme
// rewrites it).
func TestREADMEConfigurationTable(t *testing.T) {
	const begin, end = "<!-- settings table: generated from node.Settings -->\n", "<!-- end of settings table -->\n"
	path := filepath.Join("..", "..", "README.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	i, j := strings.Index(readme, begin), strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q ... %q section", begin, end)
	}
	want := settingsTable()
	got := readme[i+len(begin) : j]
	if got == want {
		return
	}
	if *updateREADME {
		if err := os.WriteFile(path, []byte(readme[:i+len(begin)]+want+readme[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("README.md's settings table differs from node.Settings; run go test ./cmd/varve -run README -update-readme\nwant:\n%s", want)
}

// settingsTable is the README's table of node settings.
func settingsTable() string {
	var b strings.Builder
	b.WriteString("| file key | type | default | meaning |\n|---|---|---|---|\n")
	for _, s := range node.Settings {
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", s.Name, s.Type, s.DefaultDoc(), strings.ReplaceAll(s.Help, "|", `\|`))
	}
	return b.String()
}

// TestConfigCommandDefaults: a command may give a setting its own default
// by setting the flag's value (varve dev turns pprof on that way); the
// file, the environment and the flag still override it.
func TestConfigCommandDefaults(t *testing.T) {
	fs := pflag.NewFlagSet("dev", pflag.ContinueOnError)
	addNodeFlags(fs)
	_ = fs.Lookup("linger").Value.Set("7ms")
	_ = fs.Lookup("flush-bytes").Value.Set("2MiB")
	t.Setenv("VARVE_FLUSH_BYTES", "3MiB")
	c, err := loadNodeConfig(fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Linger != 7*time.Millisecond || c.FlushBytes != 3<<20 {
		t.Fatalf("linger %v (want the command's 7ms), flush_bytes %d (want the environment's 3MiB)", c.Linger, c.FlushBytes)
	}
}
