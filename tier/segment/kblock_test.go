package segment

import (
	"bytes"
	"testing"

	"github.com/varve-io/varve/internal/testenv"
)

// TestAppendBatchesGrowth: a block filled by many produced entries grows
// its buffer by doubling, so its bytes are copied about once in all
// (append's 1.25x growth of large slices copies them about four times).
func TestAppendBatchesGrowth(t *testing.T) {
	batches, err := AppendProducerBatches(nil, []Record{{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 4000), Timestamp: 1}})
	if err != nil {
		t.Fatal(err)
	}
	info, err := ValidateBatches(batches, BatchLimits{Strict: true, Produced: true})
	if err != nil {
		t.Fatal(err)
	}
	const entries = 2000 // about 8 MiB, one flush
	var b *BlockBuilder
	allocs := testenv.AllocsPerRun(3, func() {
		b = NewBatchBlockBuilder("t", 0)
		for range entries {
			if err := b.AppendBatches(batches, &info); err != nil {
				t.Fatal(err)
			}
		}
	})
	if b.Len() != entries || len(b.kbuf) != entries*len(batches) {
		t.Fatalf("%d records in %d bytes, want %d in %d", b.Len(), len(b.kbuf), entries, entries*len(batches))
	}
	if allocs > 16 {
		t.Fatalf("%.0f allocations to append %d entries of %d bytes", allocs, entries, len(batches))
	}
}
