package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
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
