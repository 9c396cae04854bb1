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

// TestRecordBytesGrow: a tick's block of records grown by the last
// block's RecordBytes (as an ingest node does per partition) appends
// without reallocating, and RecordBytes counts records appended one by
// one, not batches appended as sent.
func TestRecordBytesGrow(t *testing.T) {
	recs := make([]Record, 20)
	for i := range recs {
		recs[i] = Record{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), 250), Timestamp: int64(i)}
	}
	fill := func(b *BlockBuilder) {
		for _, r := range recs {
			b.Append(r)
		}
	}
	last := NewBatchBlockBuilder("t", 0)
	fill(last)
	n := last.RecordBytes()
	if n < 20*250 || n > 20*300 {
		t.Fatalf("RecordBytes %d for 20 records of 251 bytes", n)
	}
	fresh := testenv.AllocsPerRun(10, func() { fill(NewBatchBlockBuilder("t", 0)) })
	grown := testenv.AllocsPerRun(10, func() {
		b := NewBatchBlockBuilder("t", 0)
		b.Grow(n + n/8)
		fill(b)
	})
	t.Logf("allocations per block of 20 records: %.0f grown, %.0f from nothing", grown, fresh)
	if grown > 2 || grown >= fresh {
		t.Fatalf("%.0f allocations with Grow(%d), %.0f without", grown, n+n/8, fresh)
	}

	batches, err := AppendProducerBatches(nil, recs[:1])
	if err != nil {
		t.Fatal(err)
	}
	info, err := ValidateBatches(batches, BatchLimits{Strict: true, Produced: true})
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatchBlockBuilder("t", 0)
	if err := b.AppendBatches(batches, &info); err != nil {
		t.Fatal(err)
	}
	if b.RecordBytes() != 0 {
		t.Fatalf("RecordBytes %d after a batch appended as sent", b.RecordBytes())
	}
	if err := b.AppendBatchesRecords(batches, &info); err != nil {
		t.Fatal(err)
	}
	if b.RecordBytes() == 0 {
		t.Fatal("RecordBytes 0 after a batch's records appended one by one")
	}
}
