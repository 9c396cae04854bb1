package main

import (
	"slices"
	"strings"
	"testing"
)

// TestRulesCatchViolations: each rule reports a package that breaks it and
// stays quiet for the tree as it is meant to be.
func TestRulesCatchViolations(t *testing.T) {
	std := func(path string) Package { return Package{ImportPath: path, Standard: true} }
	good := []Package{
		std("fmt"), std("hash/crc32"),
		{ImportPath: "go.etcd.io/etcd/client/v3", Imports: []string{"go.etcd.io/etcd/api/v3/mvccpb"}},
		{ImportPath: module + "/metadata", Imports: []string{"go.etcd.io/etcd/client/v3"}},
		{ImportPath: module + "/metadata/groups", Imports: []string{"go.etcd.io/etcd/client/v3"}},
		{ImportPath: module + "/tier/segment", Deps: []string{"fmt", "hash/crc32", "github.com/klauspost/compress/zstd", "github.com/pierrec/lz4/v4", module + "/tier/segment/kafkabatch"}},
		{ImportPath: module + "/tier/segment/kafkabatch", Deps: []string{"fmt", "hash/crc32", "github.com/klauspost/compress/zstd", "github.com/pierrec/lz4/v4"}},
		{ImportPath: module + "/sdk", Deps: []string{"fmt", "connectrpc.com/connect", module + "/gen/varve/v1", module + "/internal/murmur2", module + "/parquet", module + "/tier/segment", module + "/tier/segment/kafkabatch"}},
		{ImportPath: module + "/parquet", Deps: []string{"fmt", "github.com/apache/arrow-go/v18/parquet/pqarrow"}},
	}
	if v := Check(good); len(v) > 0 {
		t.Fatalf("violations in a tree that keeps every boundary: %q", v)
	}
	cases := []struct {
		name string
		pkg  Package
		want string
	}{
		{"node imports etcd", Package{ImportPath: module + "/node", Imports: []string{"go.etcd.io/etcd/client/v3"}}, "only metadata imports etcd"},
		{"segment depends on tier", Package{ImportPath: module + "/tier/segment", Deps: []string{"fmt", module + "/tier"}}, "tier/segment imports only"},
		{"segment depends on a third party", Package{ImportPath: module + "/tier/segment", Deps: []string{"github.com/golang/snappy"}}, "tier/segment imports only"},
		{"segment depends on franz-go", Package{ImportPath: module + "/tier/segment", Deps: []string{"github.com/twmb/franz-go/pkg/kmsg"}}, "tier/segment imports only"},
		{"segment subpackage depends on franz-go", Package{ImportPath: module + "/tier/segment/kafkabatch", Deps: []string{"github.com/twmb/franz-go/pkg/kmsg"}}, "tier/segment imports only"},
		{"segment subpackage depends on tier", Package{ImportPath: module + "/tier/segment/kafkabatch", Deps: []string{module + "/tier"}}, "tier/segment imports only"},
		{"sdk depends on ingest", Package{ImportPath: module + "/sdk", Deps: []string{module + "/ingest"}}, "sdk imports no server package"},
		{"parquet depends on scan", Package{ImportPath: module + "/parquet", Deps: []string{"fmt", module + "/scan"}}, "parquet imports no server package"},
		{"parquet depends on tier", Package{ImportPath: module + "/parquet", Deps: []string{module + "/tier"}}, "parquet imports no server package"},
		{"sdk subpackage depends on metadata", Package{ImportPath: module + "/sdk/admin", Deps: []string{module + "/metadata"}}, "sdk imports no server package"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkgs := append(slices.Clone(good), c.pkg)
			v := Check(pkgs)
			if len(v) != 1 || !strings.HasPrefix(v[0], c.want) {
				t.Fatalf("violations %q, want one for %q", v, c.want)
			}
		})
	}
}
