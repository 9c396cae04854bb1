package tier_test

import (
	"testing"
	"time"

	"github.com/varve-io/varve/tier"
)

func TestFlushKeyNode(t *testing.T) {
	now := time.Date(2026, 12, 3, 5, 6, 7, 8e6, time.UTC)
	for _, tc := range []struct{ prefix, node string }{
		{"", "n1"},
		{"segments/", "fetch-1-b"},
		{"a/2026-12-03T05/", "x-7"},
		{"p/", "dev/odd"},
	} {
		key := tier.FlushKey(tc.prefix, tc.node, 42, now)
		got, ok := tier.FlushKeyNode(key)
		if !ok || got != tc.node {
			t.Errorf("FlushKeyNode(%q) = %q, %v; want %q", key, got, ok, tc.node)
		}
	}
	for _, key := range []string{
		tier.CompactedKey(1, "t", 3, 0, 100, "n1"),
		"seg/d.vseg",
		"2026-12-03T05/20261203T050607.008Z-n1-42-0a0b0c0d.parquet",
		"2026-12-03T06/20261203T050607.008Z-n1-42-0a0b0c0d.vseg", // hour and time disagree
		"2026-12-03T05/20261203T050607.008Z--42-0a0b0c0d.vseg",   // no node
	} {
		if n, ok := tier.FlushKeyNode(key); ok {
			t.Errorf("FlushKeyNode(%q) = %q, true; want not a flush key", key, n)
		}
	}
}
