package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchRefusesBadWorkloadFlags: a workload flag given is applied
// whatever its value and checked before anything starts: `--consumers 0`
// is refused with the reason, not silently replaced by the profile's 4,
// and no report is written.
func TestBenchRefusesBadWorkloadFlags(t *testing.T) {
	for _, c := range []struct{ flag, want string }{
		{"--consumers=0", "producers and consumers must be > 0"},
		{"--producers=0", "producers and consumers must be > 0"},
		{"--partitions=0", "--partitions 0: must be > 0"},
		{"--duration=0s", "duration must be > 0"},
		{"--warmup=-1s", "warm-up and linger must be >= 0"},
		{"--linger=-1ms", "warm-up and linger must be >= 0"},
		{"--rate=-5", "rate, keys"},
		{"--keys=-1", "rate, keys"},
		{"--flush-bytes=0", "--flush-bytes 0: must be > 0"},
		{"--payload=xml", `payload "xml"`},
		{"--rounds=0", "--rounds 0: must be ≥ 1"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		_, _, err := runCLI(t, "bench", "--profile", "scale", "--quiet", "--out", out, c.flag)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("varve bench %s: %v; want an error containing %q", c.flag, err, c.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("varve bench %s wrote %s (%v); want nothing", c.flag, out, err)
		}
	}
}
