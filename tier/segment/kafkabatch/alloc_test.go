//go:build !race

package kafkabatch

import (
	"runtime"
	"testing"
)

// Under the race detector sync.Pool drops buffers at random, so this
// measurement only means something without it.

// TestValidateNoAllocs: Strict validation of zstd batches decompresses
// them into pooled buffers and walks their records without allocating:
// what it allocates per call is a small fraction of the input (the
// summary), however the batch sizes vary.
func TestValidateNoAllocs(t *testing.T) {
	in := append(benchBatches(t, "json", 1<<20), benchBatches(t, "json", 20<<10)...)
	if _, err := ValidateBatches(in, strictProduced); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	const runs = 20
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := ValidateBatches(in, strictProduced); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > uint64(len(in)/8) {
		t.Fatalf("validating %d bytes of batches allocates %d bytes per call", len(in), per)
	}
}
