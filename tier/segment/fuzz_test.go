package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/varve-io/varve/tier/segment/internal/wire"
)

// fuzzSeeds are small valid objects (the fuzzer minimizes every new
// interesting input, which costs the square of its length) of every shape: raw and zstd blocks, several
// topics, repeated partitions, headers, null and empty fields, extreme
// timestamps.
func fuzzSeeds(t testing.TB) [][]byte {
	small, _ := smallObject(t)
	many, _ := mustBuild(t, manyPartitions(2, 2, 2))
	odd, _ := mustBuild(t, []blockSpec{
		{"x", 0, []Record{{Timestamp: -1 << 63}, {Key: []byte{}, Value: []byte{}, Timestamp: 1<<63 - 1, Headers: []Header{{Key: "", Value: nil}, {Key: "k", Value: []byte{}}}}}},
		{"x", 0, []Record{{Key: []byte{0, 0xff}, Value: bytes.Repeat([]byte("ab"), 300)}}},
	})
	sparse, _ := mustBuild(t, []blockSpec{
		{"c", 1, []Record{{Key: []byte("a"), Gap: 2}, {Key: []byte("b"), Value: nil, Timestamp: 9}, {Key: []byte("a"), Value: []byte("v"), Gap: 300}}},
		{"c", 2, []Record{{Key: []byte("z")}}},
	})
	bb := NewBatchBlockBuilder("k", 0)
	bb.Append(Record{Key: []byte("a"), Value: []byte("v"), Timestamp: 3, Headers: []Header{{Key: "h", Value: nil}}})
	bb.Append(Record{Value: bytes.Repeat([]byte("xy"), 200), Timestamp: 1, Gap: 2})
	batches, _, err := Build([]*BlockBuilder{bb, builders([]blockSpec{{"c", 1, []Record{{Key: []byte("z")}}}})[0]})
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{small, many, odd, sparse, batches}
}

// FuzzDecode checks that Decode never panics, that every error wraps
// ErrCorrupt, and that whatever decodes agrees with the tail-only and
// block-only readers and re-encodes to the same records and the same
// uncompressed bytes. Each input is also tried with its CRCs and lengths
// repaired, so that mutations reach the checks behind the CRCs.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkObject(t, data)
		if fixed := repairObject(data); fixed != nil {
			checkObject(t, fixed)
		}
	})
}

// FuzzDecodeBlock checks DecodeBlock the same way, on one block's bytes.
func FuzzDecodeBlock(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		infos, _, err := Decode(s)
		if err != nil {
			f.Fatal(err)
		}
		for _, bi := range infos {
			f.Add(s[bi.Offset : bi.Offset+bi.Length])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkBlock(t, data)
		if len(data) >= BlockHeaderSize {
			fixed := bytes.Clone(data)
			repairBlock(fixed)
			checkBlock(t, fixed)
		}
	})
}

func checkObject(t *testing.T, data []byte) {
	infos, recs, err := Decode(data)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) || infos != nil || recs != nil {
			t.Fatalf("Decode failed without ErrCorrupt or with results: %v", err)
		}
		return
	}
	fl, err := FooterSize(data[len(data)-TrailerSize:])
	if err != nil {
		t.Fatalf("Decode accepted what FooterSize rejects: %v", err)
	}
	footer, err := DecodeFooter(data[int64(len(data))-fl-TrailerSize:])
	if err != nil || !slices.Equal(footer, infos) {
		t.Fatalf("DecodeFooter disagrees with Decode: %v", err)
	}
	bs := make([]*BlockBuilder, len(infos))
	for i, bi := range infos {
		blk := data[bi.Offset : bi.Offset+bi.Length]
		alone, err := DecodeBlock(blk)
		if err != nil {
			t.Fatalf("DecodeBlock rejects block %d that Decode accepted: %v", i, err)
		}
		if d := diffRecords(recs[i], alone); d != "" {
			t.Fatalf("DecodeBlock disagrees with Decode on block %d: %s", i, d)
		}
		bs[i] = NewBlockBuilder(bi.Topic, bi.Partition)
		if blk[2] == BatchesBlockVersion {
			// Batches are not canonical (any split, any codec): check
			// that the records survive a rebuild instead of the bytes.
			bs[i] = NewBatchBlockBuilder(bi.Topic, bi.Partition)
		}
		for _, r := range recs[i] {
			bs[i].Append(r)
		}
		if blk[2] == BatchesBlockVersion {
			continue
		}
		if raw := rawPayload(t, blk); !bytes.Equal(raw, builderRaw(bs[i])) {
			t.Fatalf("block %d: re-encoded records differ from the decoded bytes", i)
		}
	}
	obj, infos2, err := Build(bs)
	if err != nil {
		t.Fatalf("Build of decoded records: %v", err)
	}
	infos3, recs3, err := Decode(obj)
	if err != nil {
		t.Fatalf("Decode of the rebuilt object: %v", err)
	}
	for i := range infos {
		if data[infos[i].Offset+2] == BatchesBlockVersion {
			// The rebuilt batches may split and compress differently.
			if infos2[i] != infos3[i] || infos2[i].Records != infos[i].Records {
				t.Fatalf("block %d: info %+v rebuilt as %+v, decoded as %+v", i, infos[i], infos2[i], infos3[i])
			}
		} else if infoWithoutRange(infos[i]) != infoWithoutRange(infos2[i]) || infos2[i] != infos3[i] {
			t.Fatalf("block %d: info %+v rebuilt as %+v, decoded as %+v", i, infos[i], infos2[i], infos3[i])
		}
		if d := diffRecords(recs[i], recs3[i]); d != "" {
			t.Fatalf("block %d after rebuild: %s", i, d)
		}
	}
}

func checkBlock(t *testing.T, data []byte) {
	recs, err := DecodeBlock(data)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) || recs != nil {
			t.Fatalf("DecodeBlock failed without ErrCorrupt or with results: %v", err)
		}
		return
	}
	b := NewBlockBuilder("t", 0)
	if data[2] == BatchesBlockVersion {
		b = NewBatchBlockBuilder("t", 0)
	}
	for _, r := range recs {
		b.Append(r)
	}
	if data[2] == BatchesBlockVersion {
		// not canonical: compared by records below
	} else if raw := rawPayload(t, data); !bytes.Equal(raw, builderRaw(b)) {
		t.Fatalf("re-encoded records differ from the decoded bytes")
	}
	again, err := DecodeBlock(encodeBlock(b, encoder()))
	if err != nil {
		t.Fatalf("DecodeBlock of the re-encoded block: %v", err)
	}
	if d := diffRecords(recs, again); d != "" {
		t.Fatalf("re-encoded block: %s", d)
	}
	fromBuilder, err := b.Decode()
	if err != nil {
		t.Fatalf("BlockBuilder.Decode: %v", err)
	}
	if d := diffRecords(recs, fromBuilder); d != "" {
		t.Fatalf("BlockBuilder.Decode: %s", d)
	}
}

// rawPayload returns a valid block's uncompressed payload.
func rawPayload(t *testing.T, blk []byte) []byte {
	p := blk[BlockHeaderSize:]
	if blk[3] == codecNone {
		return p
	}
	raw, err := wire.Decoder().DecodeAll(p, make([]byte, 0, binary.LittleEndian.Uint32(blk[8:])))
	if err != nil {
		t.Fatalf("decompress a valid block: %v", err)
	}
	return raw
}

// repairBlock sets a block's payload length and CRC to match its bytes
func repairBlock(b []byte) {
	if b[2] == BatchesBlockVersion {
		// and, in a batches block, every batch CRC that frames
		copy(b[BlockHeaderSize:], fixBatchCRCs(b[BlockHeaderSize:]))
	}
	binary.LittleEndian.PutUint32(b[12:], uint32(len(b)-BlockHeaderSize))
	binary.LittleEndian.PutUint32(b[24:], blockCRC(b, b[BlockHeaderSize:]))
}

// repairObject returns a copy of data with the footer CRC and, where the
// footer parses, every block's length and CRC made to match, or nil.
func repairObject(data []byte) []byte {
	if len(data) < HeaderSize+TrailerSize {
		return nil
	}
	o := bytes.Clone(data)
	tr := o[len(o)-TrailerSize:]
	fl := int(binary.LittleEndian.Uint32(tr))
	if fl > len(o)-HeaderSize-TrailerSize {
		return nil
	}
	footer := o[len(o)-TrailerSize-fl : len(o)-TrailerSize]
	binary.LittleEndian.PutUint32(tr[4:], crc32Castagnoli(footer))
	infos, reason := parseFooter(footer)
	if reason != "" {
		return o
	}
	for _, bi := range infos {
		if bi.Offset+bi.Length <= int64(len(o)) {
			repairBlock(o[bi.Offset : bi.Offset+bi.Length])
		}
	}
	return o
}
