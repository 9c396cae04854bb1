package segment

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"
)

// batchesBlock builds recs (with gaps) as one version 3 block.
func batchesBlock(t *testing.T, recs []Record, codec string) []byte {
	t.Helper()
	b := NewBatchBlockBuilder("t", 0)
	if codec == "none" {
		b.kraw = true
	}
	for _, r := range recs {
		b.Append(r)
	}
	obj, infos, err := Build([]*BlockBuilder{b})
	if err != nil {
		t.Fatal(err)
	}
	return obj[infos[0].Offset : infos[0].Offset+infos[0].Length]
}

// Batches copied from version 3 blocks (with gaps between and inside
// batches) into a new block at shifted offsets decode to the same
// records, with the gaps the shift makes; UncompressedSize is the size
// the records decompress to.
func TestAppendStoredBatches(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	specs := jsonSpecs(5, 1, 3<<20)
	recs := specs[0].recs
	for i := range recs {
		if rng.Intn(4) == 0 {
			recs[i].Gap = int64(rng.Intn(3))
		}
	}
	half := len(recs) / 2
	out := NewBatchBlockBuilder("t", 0)
	out.DeferCompression()
	out.Append(Record{Key: []byte("first"), Value: []byte("record"), Timestamp: recs[0].Timestamp - 5})
	next := int64(1)
	var want []Record
	want = append(want, Record{Key: []byte("first"), Value: []byte("record"), Timestamp: recs[0].Timestamp - 5})
	for bi, part := range [][]Record{recs[:half], recs[half:]} {
		codec := []string{"zstd", "none"}[bi]
		blk := batchesBlock(t, part, codec)
		batches, ok, err := StoredBatches(blk)
		if err != nil || !ok || len(batches) < 1 {
			t.Fatalf("StoredBatches: %d batches, %v %v", len(batches), ok, err)
		}
		var scratch []byte
		n, sum := 0, 0
		for i := range batches {
			sb := &batches[i]
			size, err := sb.UncompressedSize(&scratch)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := decompressBatch(sb.Bytes[BatchHeaderSize:], sb.Compression, MaxBlockRawBytes, nil)
			if err != nil || len(raw) != size {
				t.Fatalf("batch %d (%v): UncompressedSize %d, decompresses to %d (%v)", i, sb.Compression, size, len(raw), err)
			}
			if i == 0 && sb.Compression != []Compression{CompressionZstd, CompressionNone}[bi] {
				t.Fatalf("batch %d: codec %v", i, sb.Compression)
			}
			// Shift each block by 10 offsets.
			if err := out.AppendStoredBatch(sb, next+10+sb.Offset); err != nil {
				t.Fatal(err)
			}
			n += sb.Records
			sum += size
		}
		if n != len(part) {
			t.Fatalf("%d records in batches, want %d", n, len(part))
		}
		got, _ := DecodeBlock(blk)
		for i, r := range got {
			if i == 0 {
				r.Gap += next + 10 - (next)
			}
			want = append(want, r)
		}
		next += 10 + int64(batches[len(batches)-1].Offset) + int64(batches[len(batches)-1].LastOffsetDelta) + 1
	}
	// Records after copied batches, and refused offsets.
	want = append(want, Record{Key: []byte("last"), Timestamp: 1, Gap: 2})
	if err := out.AppendStoredBatch(&StoredBatch{}, next); err == nil {
		t.Fatal("an empty batch was appended")
	}
	out.Append(want[len(want)-1])
	obj, infos, err := Build([]*BlockBuilder{out})
	if err != nil {
		t.Fatal(err)
	}
	blk := obj[infos[0].Offset : infos[0].Offset+infos[0].Length]
	got, err := DecodeBlock(blk)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRecords(want, got); d != "" {
		t.Fatal(d)
	}
	if _, _, err := Decode(obj); err != nil {
		t.Fatalf("Decode checks the footer: %v", err)
	}
	if infos[0].MinTimestamp != 1 || blk[2] != BatchesBlockVersion {
		t.Fatalf("info %+v version %d", infos[0], blk[2])
	}
	// An offset before the last appended is refused, nothing appended.
	batches, _, _ := StoredBatches(blk)
	n := out.Len()
	if err := out.AppendStoredBatch(&batches[0], 0); err == nil || out.Len() != n {
		t.Fatalf("offset 0 after %d records: %v", n, err)
	}
}

// StoredBatches refuses what DecodeBlock refuses from the headers, and
// leaves version 1 blocks to DecodeBlock.
func TestStoredBatchesCorrupt(t *testing.T) {
	blk := batchesBlock(t, jsonSpecs(1, 1, 64<<10)[0].recs, "zstd")
	for _, at := range []int{2, 10, 20, BlockHeaderSize + 3, BlockHeaderSize + 30, len(blk) - 1} {
		bad := append([]byte(nil), blk...)
		bad[at] ^= 0x40
		if _, _, err := StoredBatches(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d flipped: %v", at, err)
		}
	}
	if _, _, err := StoredBatches(blk[:len(blk)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	obj, infos := mustBuild(t, []blockSpec{{"t", 0, []Record{{Value: []byte("v1")}}}})
	if b, ok, err := StoredBatches(obj[infos[0].Offset : infos[0].Offset+infos[0].Length]); ok || err != nil || b != nil {
		t.Fatalf("version 1 block: %v %v %v", b, ok, err)
	}
}

// FuzzStoredBatches: StoredBatches never panics on any block; what it
// accepts copies into a new block (AppendStoredBatch at the same
// offsets) that StoredBatches returns byte for byte, and that DecodeBlock
// decodes exactly when it decodes the original.
func FuzzStoredBatches(f *testing.F) {
	for _, recs := range [][]Record{
		{{Key: []byte("k"), Value: []byte("v"), Timestamp: 5}},
		{{Value: []byte("a"), Timestamp: 1, Gap: 3}, {Value: nil, Timestamp: 9, Headers: []Header{{Key: "h", Value: []byte("x")}}}, {Key: []byte{}, Timestamp: -2, Gap: 1}},
		jsonSpecs(2, 1, 8<<10)[0].recs,
	} {
		for _, codec := range []string{"zstd", "none"} {
			b := NewBatchBlockBuilder("t", 0)
			b.kraw = codec == "none"
			for _, r := range recs {
				b.Append(r)
			}
			obj, infos, err := Build([]*BlockBuilder{b})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(obj[infos[0].Offset : infos[0].Offset+infos[0].Length])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, blk := range [][]byte{data, repaired(data)} {
			batches, ok, err := StoredBatches(blk)
			if err != nil || !ok {
				continue
			}
			out := NewBatchBlockBuilder("t", 0)
			for i := range batches {
				if _, err := batches[i].UncompressedSize(nil); err != nil && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("UncompressedSize: %v", err)
				}
				if err := out.AppendStoredBatch(&batches[i], batches[i].Offset); err != nil {
					t.Fatalf("AppendStoredBatch of an accepted batch: %v", err)
				}
			}
			obj, infos, err := Build([]*BlockBuilder{out})
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			copied := obj[infos[0].Offset : infos[0].Offset+infos[0].Length]
			again, ok, err := StoredBatches(copied)
			if err != nil || !ok || len(again) != len(batches) {
				t.Fatalf("the copy: %d batches, %v %v", len(again), ok, err)
			}
			for i := range again {
				if !bytes.Equal(again[i].Bytes, batches[i].Bytes) {
					t.Fatalf("batch %d changed in the copy", i)
				}
			}
			want, werr := DecodeBlock(blk)
			got, gerr := DecodeBlock(copied)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("DecodeBlock: original %v, copy %v", werr, gerr)
			}
			if werr == nil {
				if d := diffRecords(want, got); d != "" {
					t.Fatal(d)
				}
			}
		}
	})
}

// repaired is data with its block CRC fixed (nil when too short).
func repaired(data []byte) []byte {
	if len(data) < BlockHeaderSize {
		return nil
	}
	fixed := bytes.Clone(data)
	repairBlock(fixed)
	return fixed
}
