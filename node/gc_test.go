package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/node"
)

func TestJanitorConfigValidation(t *testing.T) {
	base := func() node.Config {
		c := node.DefaultConfig()
		c.EtcdEndpoints = []string{"http://127.0.0.1:2379"}
		c.Store = "fs:/tmp/x"
		return c
	}
	cases := []struct {
		name   string
		mutate func(*node.Config)
		want   string // "" valid
	}{
		{"defaults", func(*node.Config) {}, ""},
		{"zeros take defaults", func(c *node.Config) {
			c.RetentionCheckInterval, c.GCInterval, c.GCGrace, c.EtcdCompactionInterval, c.EtcdHistoryRetain = 0, 0, 0, 0, 0
		}, ""},
		{"short grace", func(c *node.Config) { c.GCGrace = 30 * time.Second }, "gc_grace"},
		{"fast retention", func(c *node.Config) { c.RetentionCheckInterval = 10 * time.Millisecond }, "retention_check_interval"},
		{"fast gc", func(c *node.Config) { c.GCInterval = time.Millisecond }, "gc_interval"},
		{"negative etcd compaction", func(c *node.Config) { c.EtcdCompactionInterval = -time.Second }, "etcd_compaction_interval"},
		{"tiny history", func(c *node.Config) { c.EtcdHistoryRetain = time.Millisecond }, "etcd_history_retain"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
