package segment

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/varve-io/varve/tier/segment/internal/wire"
)

// kgoBatch builds a RecordBatch v2 the way a franz-go producer does: kmsg
// records, compressed by kgo's own compressor, framed and CRC'd by
// kmsg.RecordBatch.AppendTo. It is the independent implementation the
// codec is checked against.
func kgoBatch(t testing.TB, recs []Record, codec kgo.CompressionCodec, pid int64, seq int32) []byte {
	t.Helper()
	var raw []byte
	first := recs[0].Timestamp
	maxTS := first
	for i, r := range recs {
		maxTS = max(maxTS, r.Timestamp)
		kr := kmsg.Record{TimestampDelta64: r.Timestamp - first, OffsetDelta: int32(i), Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		kr.Length = int32(len(kr.AppendTo(nil)) - 1) // AppendTo writes Length first (1 byte while it is 0)
		raw = kr.AppendTo(raw)
	}
	attrs := int16(0)
	comp, err := kgo.DefaultCompressor(codec)
	if err != nil {
		t.Fatal(err)
	}
	if comp != nil {
		out, used := comp.Compress(new(bytes.Buffer), raw)
		raw = bytes.Clone(out)
		attrs = int16(used)
	}
	epoch := int16(-1)
	if pid >= 0 {
		epoch = 3
	}
	rb := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, Attributes: attrs, LastOffsetDelta: int32(len(recs) - 1),
		FirstTimestamp: first, MaxTimestamp: maxTS, ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq,
		NumRecords: int32(len(recs)), Records: raw,
	}
	rb.Length = int32(BatchHeaderSize - batchLengthBase + len(raw))
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], wire.Castagnoli))
	return b
}

// kgoRecords reads batches with kmsg and kgo's decompressor: the reverse
// cross-check. It returns every record with its absolute offset.
func kgoRecords(t testing.TB, b []byte) ([]Record, []int64) {
	t.Helper()
	var recs []Record
	var offs []int64
	dec := kgo.DefaultDecompressor()
	for len(b) > 0 {
		var rb kmsg.RecordBatch
		if err := rb.ReadFrom(b); err != nil {
			t.Fatalf("kmsg reads the batch: %v", err)
		}
		if got := uint32(rb.CRC); got != crc32.Checksum(b[21:12+int(rb.Length)], wire.Castagnoli) {
			t.Fatalf("batch CRC %08x does not match its bytes", got)
		}
		raw, err := dec.Decompress(rb.Records, kgo.CompressionCodecType(rb.Attributes&7))
		if err != nil {
			t.Fatalf("kgo decompresses: %v", err)
		}
		for range rb.NumRecords {
			var kr kmsg.Record
			if err := kr.ReadFrom(raw); err != nil {
				t.Fatalf("kmsg reads a record: %v", err)
			}
			n := int(kr.Length) + wire.VarintLen(int64(kr.Length))
			raw = raw[n:]
			r := Record{Key: kr.Key, Value: kr.Value, Timestamp: rb.FirstTimestamp + kr.TimestampDelta64}
			for _, h := range kr.Headers {
				r.Headers = append(r.Headers, Header{Key: h.Key, Value: h.Value})
			}
			recs = append(recs, r)
			offs = append(offs, rb.FirstOffset+int64(kr.OffsetDelta))
		}
		if len(raw) != 0 {
			t.Fatalf("%d bytes after the records", len(raw))
		}
		b = b[12+int(rb.Length):]
	}
	return recs, offs
}

func kafkaTestRecords(n int, seed byte) []Record {
	recs := make([]Record, n)
	for i := range recs {
		v := bytes.Repeat([]byte{seed, byte(i)}, 40+i%7)
		recs[i] = Record{Key: []byte{'k', byte(i)}, Value: v, Timestamp: 1767225600000 + int64(i*3) - int64(i%4)}
		if i%3 == 0 {
			recs[i].Headers = []Header{{Key: "trace", Value: []byte("t")}, {Key: "n", Value: nil}}
		}
		if i%5 == 1 {
			recs[i].Key = nil
		}
		if i%7 == 2 {
			recs[i].Value = []byte{}
		}
	}
	return recs
}

var kgoCodecs = []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()}

// TestKafkaCrossCheck: batches a franz-go producer would send, in every
// codec, validate (cheap and strict), are appended as they are, decode
// through Decode/DecodeBlock/VisitBlock, and come back from BlockBatches
// with absolute offsets that kmsg and kgo's decompressor read.
func TestKafkaCrossCheck(t *testing.T) {
	for _, codec := range kgoCodecs {
		b0 := kgoBatch(t, kafkaTestRecords(30, 1), codec, 7, 100)
		b1 := kgoBatch(t, kafkaTestRecords(12, 2), codec, 7, 130)
		in := append(bytes.Clone(b0), b1...)
		for _, strict := range []bool{false, true} {
			info, err := ValidateBatches(in, BatchLimits{Strict: strict})
			if err != nil {
				t.Fatalf("ValidateBatches(strict=%v): %v", strict, err)
			}
			if info.Records != 42 || len(info.Batches) != 2 || info.Batches[1].BaseSequence != 130 || info.Batches[0].LastSequence() != 129 || info.Batches[0].ProducerID != 7 || info.Batches[0].ProducerEpoch != 3 {
				t.Fatalf("info %+v", info)
			}
			if strict && info.Batches[0].UncompressedBytes == 0 {
				t.Fatal("strict mode did not report the uncompressed size")
			}
		}
		info, _ := ValidateBatches(in, BatchLimits{})
		bb := NewBatchBlockBuilder("t", 1)
		extra := Record{Key: []byte("own"), Value: []byte("record"), Timestamp: 5}
		bb.Append(extra) // a batch from Records before the producer's
		if err := bb.AppendBatches(in, &info); err != nil {
			t.Fatal(err)
		}
		want := append([]Record{extra}, kafkaTestRecords(30, 1)...)
		want = append(want, kafkaTestRecords(12, 2)...)
		obj, infos, err := Build([]*BlockBuilder{bb})
		if err != nil {
			t.Fatal(err)
		}
		_, recs, err := Decode(obj)
		if err != nil {
			t.Fatalf("%v: Decode: %v", codec, err)
		}
		if d := diffRecords(want, recs[0]); d != "" {
			t.Fatalf("%v: %s", codec, d)
		}
		blk := obj[infos[0].Offset : infos[0].Offset+infos[0].Length]
		n := 0
		if _, err := VisitBlock(blk, 1000, func(v *RecordView) error {
			if v.Offset != 1000+int64(n) || !bytes.Equal(v.Value, want[n].Value) || v.NumHeaders != len(want[n].Headers) {
				t.Fatalf("record %d: %+v", n, v)
			}
			n++
			return nil
		}); err != nil || n != len(want) {
			t.Fatalf("VisitBlock: %d records, %v", n, err)
		}
		fromBuilder, err := bb.Decode()
		if err != nil || diffRecords(want, fromBuilder) != "" {
			t.Fatalf("BlockBuilder.Decode: %v %s", err, diffRecords(want, fromBuilder))
		}
		out, err := BlockBatches(nil, blk, 1000)
		if err != nil {
			t.Fatal(err)
		}
		back, offs := kgoRecords(t, out)
		if d := diffRecords(want, back); d != "" {
			t.Fatalf("kgo reads BlockBatches: %s", d)
		}
		for i, o := range offs {
			if o != 1000+int64(i) {
				t.Fatalf("record %d at offset %d, want %d", i, o, 1000+i)
			}
		}
		// The producer's batches are stored byte for byte, baseOffset aside.
		stored := out[len(out)-len(in):]
		if !bytes.Equal(stored[8:len(b0)], b0[8:]) || !bytes.Equal(stored[len(b0)+8:], b1[8:]) {
			t.Fatal("the stored batches differ from the producer's beyond baseOffset")
		}
	}
}

// TestBatchBuilderRoundTrip: Records (with gaps, null and empty fields,
// unsorted timestamps, several batches) through a batch builder decode as
// they went in, and kgo reads the batches.
func TestBatchBuilderRoundTrip(t *testing.T) {
	recs := kafkaTestRecords(3000, 9)
	big := bytes.Repeat([]byte("x"), 300<<10)
	for i := 0; i < 8; i++ {
		recs = append(recs, Record{Value: big, Timestamp: int64(i)})
	}
	recs[5].Gap = 3
	recs[3001].Gap = 1 << 40 // past int32: starts a new batch
	bb := NewBatchBlockBuilder("t", 0)
	for _, r := range recs {
		bb.Append(r)
	}
	obj, infos, err := Build([]*BlockBuilder{bb})
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := Decode(obj)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRecords(recs, got[0]); d != "" {
		t.Fatal(d)
	}
	out, err := BlockBatches(nil, obj[infos[0].Offset:infos[0].Offset+infos[0].Length], 10)
	if err != nil {
		t.Fatal(err)
	}
	_, offs := kgoRecords(t, out)
	want := Offsets(10, recs)
	for i := range want {
		if offs[i] != want[i] {
			t.Fatalf("record %d at %d, want %d", i, offs[i], want[i])
		}
	}
	if infos[0].MaxTimestamp != 1767225600000+2999*3-3 || infos[0].Records != int64(len(recs)) {
		t.Fatalf("info %+v", infos[0])
	}
}

// TestBlockBatchesOfOldBlocks: version 1 and 2 blocks are served as
// batches too (re-encoded), with their offsets.
func TestBlockBatchesOfOldBlocks(t *testing.T) {
	for _, specs := range [][]blockSpec{exampleSpecs(), sparseExampleSpecs()} {
		obj, infos := mustBuild(t, specs)
		out, err := BlockBatches(nil, obj[infos[0].Offset:infos[0].Offset+infos[0].Length], 50)
		if err != nil {
			t.Fatal(err)
		}
		recs, offs := kgoRecords(t, out)
		if d := diffRecords(stripGaps(specs[0].recs), recs); d != "" {
			t.Fatal(d)
		}
		want := Offsets(50, specs[0].recs)
		for i := range want {
			if offs[i] != want[i] {
				t.Fatalf("record %d at %d, want %d", i, offs[i], want[i])
			}
		}
	}
}

func stripGaps(recs []Record) []Record {
	out := append([]Record(nil), recs...)
	for i := range out {
		out[i].Gap = 0
	}
	return out
}

// mutate returns a copy of b changed by fn, with the batch CRC recomputed
// when fix is set.
func mutate(b []byte, fix bool, fn func(b []byte) []byte) []byte {
	c := fn(bytes.Clone(b))
	if fix && len(c) >= BatchHeaderSize {
		binary.BigEndian.PutUint32(c[17:], crc32.Checksum(c[21:], wire.Castagnoli))
	}
	return c
}

// rawBatch builds an uncompressed batch from hand-made record bytes.
func rawBatch(recordCount, lastOffsetDelta int32, records []byte) []byte {
	b := make([]byte, BatchHeaderSize, BatchHeaderSize+len(records))
	b = append(b, records...)
	putBatchHeader(b, batchHeader{LeaderEpoch: -1, LastOffsetDelta: lastOffsetDelta, BaseTimestamp: 10, MaxTimestamp: 10,
		ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, RecordCount: recordCount})
	return b
}

// TestValidateBatchesRefuses: every bad batch is refused with an error
// naming the batch and the field.
func TestValidateBatchesRefuses(t *testing.T) {
	good := kgoBatch(t, kafkaTestRecords(3, 1), kgo.NoCompression(), 1, 0)
	goodZ := kgoBatch(t, kafkaTestRecords(3, 1), kgo.ZstdCompression(), 1, 0)
	two := append(bytes.Clone(good), good...)
	set16 := func(off int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint16(b[off:], v); return b }
	}
	set32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }
	}
	set64 := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint64(b[off:], v); return b }
	}
	// one record: length 6, attributes 0, tsDelta 0, offsetDelta 0, key null, value null, 0 headers
	rec := []byte{12, 0, 0, 0, 1, 1, 0}
	cases := []struct {
		name   string
		in     []byte
		strict bool
		want   string
	}{
		{"empty", nil, false, "no batches"},
		{"short header", good[:40], false, "batch 0: batchLength: 40 bytes left"},
		{"bad magic", mutate(good, true, func(b []byte) []byte { b[16] = 1; return b }), false, "batch 0: magic: 1, want 2"},
		{"bad crc", mutate(good, false, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), false, "batch 0: crc: CRC-32C"},
		{"length past the end", mutate(two, false, set32(len(good)+8, 1<<20)), false, "batch 1: batchLength: 1048576 runs past the end"},
		{"negative length", mutate(good, false, set32(8, 0xffffffff)), false, "batch 0: batchLength: -1, less than the 49"},
		{"trailing bytes", append(bytes.Clone(good), 0, 0, 0), false, "batch 1: batchLength: 3 bytes left"},
		{"over MaxBatchBytes", good, false, "exceeds the limit of 100"},
		{"unknown codec", mutate(good, true, set16(21, 5)), false, "batch 0: attributes: unknown compression codec 5"},
		{"transactional", mutate(good, true, set16(21, 0x10)), false, "transactional batch"},
		{"control", mutate(good, true, set16(21, 0x20)), false, "control batch"},
		{"log append time", mutate(good, true, set16(21, 0x08)), false, "LogAppendTime"},
		{"unknown attribute bit", mutate(good, true, set16(21, 0x100)), false, "unknown bits 0x0100"},
		{"zero records", mutate(good, true, set32(57, 0)), false, "recordCount: 0, want at least 1"},
		{"negative count", mutate(good, true, set32(57, 0xfffffffe)), false, "recordCount: -2"},
		{"count past the bytes", mutate(good, true, set32(57, 1000)), false, "recordCount: 1000 records cannot fit"},
		{"count vs lastOffsetDelta", mutate(good, true, set32(23, 5)), false, "batch 0: lastOffsetDelta: 5 with 3 records"},
		{"maxTimestamp before base", mutate(good, true, set64(35, 1)), false, "maxTimestamp: 1 is before baseTimestamp"},
		{"bad producer id", mutate(good, true, set64(43, 0xfffffffffffffff0)), false, "producerId: -16"},
		{"negative epoch", mutate(good, true, set16(51, 0xffff)), false, "producerEpoch: -1 with producerId 1"},
		{"negative sequence", mutate(good, true, set32(53, 0xffffffff)), false, "baseSequence: -1 with producerId 1"},
		{"strict: count mismatch", rawBatch(1, 0, append(bytes.Clone(rec), rec...)), true, "batch 0: records: 7 bytes after the last of 1 records"},
		{"strict: fewer records", rawBatch(2, 1, append(bytes.Clone(rec), 0, 0, 0, 0, 0, 0, 0)), true, "record 1: length 0, want 6"},
		{"strict: overlong varint", rawBatch(1, 0, []byte{0x8c, 0x00, 0, 0, 0, 1, 1, 0}), true, "record 0: length: non-canonical varint"},
		{"strict: record length past the end", rawBatch(1, 0, []byte{40, 0, 0, 0, 1, 1, 0}), true, "record 0: length 20, want 6 to the 6 bytes left"},
		{"strict: negative key length", rawBatch(1, 0, []byte{12, 0, 0, 0, 3, 1, 0}), true, "key length is negative"},
		{"strict: offsetDelta", rawBatch(1, 0, []byte{12, 0, 0, 2, 1, 1, 0}), true, "offsetDelta 1, want above -1 and at most lastOffsetDelta 0"},
		{"strict: attributes", rawBatch(1, 0, []byte{12, 4, 0, 0, 1, 1, 0}), true, "record 0: attributes 4, want 0"},
		{"strict: null header key", rawBatch(1, 0, []byte{16, 0, 0, 0, 1, 1, 2, 1, 1}), true, "header 0: null key"},
		{"strict: maxTimestamp", rawBatch(1, 0, []byte{12, 0, 4, 0, 1, 1, 0}), true, "largest record timestamp 12, the batch's maxTimestamp is 10"},
		{"strict: record over the limit", good, true, "exceed the record limit of 10"},
		{"strict: zstd garbage", mutate(goodZ, true, func(b []byte) []byte { b[BatchHeaderSize+6] ^= 0xff; return b }), true, "batch 0: records: zstd"},
		{"strict: gzip not gzip", mutate(good, true, set16(21, 1)), true, "batch 0: records: gzip"},
		{"strict: lz4 not lz4", mutate(good, true, set16(21, 3)), true, "batch 0: records: lz4"},
		{"strict: snappy not snappy", mutate(good, true, set16(21, 2)), true, "batch 0: records: snappy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lim := BatchLimits{Strict: c.strict}
			if c.name == "over MaxBatchBytes" {
				lim.MaxBatchBytes = 100
			}
			if c.name == "strict: record over the limit" {
				lim.MaxRecordBytes = 10
			}
			info, err := ValidateBatches(c.in, lim)
			if err == nil || !errors.Is(err, ErrBadBatch) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ErrBadBatch containing %q", err, c.want)
			}
			if info.Batches != nil || info.Records != 0 {
				t.Fatalf("info %+v returned with an error", info)
			}
		})
	}
	// Each refused batch is accepted by the cheap mode when only the
	// records are bad (documented), and refused by DecodeBlock once stored.
	bad := rawBatch(1, 0, append(bytes.Clone(rec), rec...))
	info, err := ValidateBatches(bad, BatchLimits{})
	if err != nil {
		t.Fatalf("cheap mode checks the records: %v", err)
	}
	bb := NewBatchBlockBuilder("t", 0)
	if err := bb.AppendBatches(bad, &info); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeBlock(encodeBlock(bb, encoder())); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "batch 0 at 0: records: 7 bytes after") {
		t.Fatalf("DecodeBlock of a stored bad batch: %v", err)
	}
}

// TestAppendBatchesRefusesWrongInfo: AppendBatches takes only the info
// ValidateBatches returned for the same bytes, and only on a batch builder.
func TestAppendBatchesRefusesWrongInfo(t *testing.T) {
	good := kgoBatch(t, kafkaTestRecords(3, 1), kgo.NoCompression(), -1, -1)
	info, err := ValidateBatches(good, BatchLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := NewBlockBuilder("t", 0).AppendBatches(good, &info); err == nil {
		t.Fatal("a version 1 builder took batches")
	}
	bb := NewBatchBlockBuilder("t", 0)
	if err := bb.AppendBatches(append(bytes.Clone(good), good...), &info); err == nil || bb.Len() != 0 {
		t.Fatal("info of other bytes accepted")
	}
}

// batchesExampleSpecs is the version 3 example of docs/segment-format.md:
// the records of the version 1 example, as one Kafka batch.
func TestBatchesWorkedExample(t *testing.T) {
	specs := exampleSpecs()
	bb := NewBatchBlockBuilder(specs[0].topic, specs[0].partition)
	for _, r := range specs[0].recs {
		bb.Append(r)
	}
	obj, _, err := Build([]*BlockBuilder{bb})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "example-batches.hex")
	dump := hexLines(obj)
	if *update {
		if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := hex.DecodeString(strings.Join(strings.Fields(string(want)), ""))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, obj) {
		t.Fatalf("the example object changed:\n%s\nwant:\n%s", dump, want)
	}
	_, recs, err := Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRecords(specs[0].recs, recs[0]); d != "" {
		t.Fatal(d)
	}
}

// TestOldTestdataStillDecodes: the committed version 1 and 2 objects decode
// to their records and rebuild to the same bytes with this reader.
func TestOldTestdataStillDecodes(t *testing.T) {
	for name, specs := range map[string][]blockSpec{"example.hex": exampleSpecs(), "example-sparse.hex": sparseExampleSpecs()} {
		want, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		obj, err := hex.DecodeString(strings.Join(strings.Fields(string(want)), ""))
		if err != nil {
			t.Fatal(err)
		}
		_, recs, err := Decode(obj)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d := diffRecords(specs[0].recs, recs[0]); d != "" {
			t.Fatalf("%s: %s", name, d)
		}
		again, _ := mustBuild(t, []blockSpec{{specs[0].topic, specs[0].partition, recs[0]}})
		if !bytes.Equal(again, obj) {
			t.Fatalf("%s: rebuilt bytes differ", name)
		}
	}
}

// craftBatches is a version 3 block around payload, with a valid CRC.
func craftBatches(codec byte, records uint32, base int64, payload []byte) []byte {
	b := craftBlock(codec, records, uint32(len(payload)), base, payload)
	b[2] = BatchesBlockVersion
	binary.LittleEndian.PutUint32(b[24:], blockCRC(b, b[BlockHeaderSize:]))
	return b
}

// TestDecodeBatchesBlockRejects: version 3 blocks that break a rule of
// docs/segment-format.md fail with ErrCorrupt and a precise reason, in
// DecodeBlock, VisitBlock and (header-level rules) BlockBatches.
func TestDecodeBatchesBlockRejects(t *testing.T) {
	rec := []byte{12, 0, 0, 0, 1, 1, 0}
	one := rawBatch(1, 0, rec) // baseTimestamp 10
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	second := mutate(one, false, func(b []byte) []byte { binary.BigEndian.PutUint64(b, 1); return b })
	cases := []struct {
		name string
		blk  []byte
		want string
	}{
		{"envelope compressed", craftBatches(1, 1, 10, one), "envelope must be codec 0"},
		{"batches above the count", craftBatches(0, 1, 10, cat(one, second)), "batch 1 at 68: recordCount: batches hold more than the block header's 1 records"},
		{"count below the batches", craftBatches(0, 3, 10, cat(one, second, second)), "baseOffset: 1, want at least 2"},
		{"count above the batches", craftBatches(0, 2, 10, one), "batches hold 1 records, the block header says 2"},
		{"base timestamp", craftBatches(0, 1, 11, one), "baseTimestamp: 10, the block header says 11"},
		{"overlapping offsets", craftBatches(0, 2, 10, cat(one, one)), "batch 1 at 68: baseOffset: 0, want at least 1"},
		{"negative base offset", craftBatches(0, 1, 10, mutate(one, false, func(b []byte) []byte { binary.BigEndian.PutUint64(b, 1<<63); return b })), "baseOffset: -9223372036854775808"},
		{"truncated batch", craftBatches(0, 1, 10, one[:len(one)-1]), "batchLength: 56 runs past the end"},
		{"bad batch crc", craftBatches(0, 1, 10, mutate(one, false, func(b []byte) []byte { b[len(b)-1] = 1; return b })), "crc: CRC-32C"},
		{"too many records for the bytes", craftBatches(0, 1<<30, 10, one), "records in 68 bytes of batches"},
		{"control batch", craftBatches(0, 1, 10, mutate(one, true, func(b []byte) []byte { b[22] = 0x20; return b })), "control batch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if recs, err := DecodeBlock(c.blk); err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) || recs != nil {
				t.Fatalf("DecodeBlock = %v, %v; want an error containing %q", recs, err, c.want)
			}
			if _, err := VisitBlock(c.blk, 0, func(*RecordView) error { return nil }); err == nil || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("VisitBlock = %v", err)
			}
		})
	}
	if _, err := DecodeBlock(craftBatches(0, 2, 10, cat(one, second))); err != nil {
		t.Fatalf("the valid two-batch block: %v", err)
	}
}

// FuzzValidateBatches checks that ValidateBatches never panics, that every
// error wraps ErrBadBatch, that what the strict mode accepts the cheap mode
// accepts too, and that accepted batches append, build and decode to
// exactly the records they hold, and come back from BlockBatches.
func FuzzValidateBatches(f *testing.F) {
	recs := kafkaTestRecords(4, 3)
	for _, c := range kgoCodecs {
		f.Add(kgoBatch(f, recs, c, 1, 5))
	}
	f.Add(append(kgoBatch(f, recs[:1], kgo.NoCompression(), -1, -1), kgoBatch(f, recs[1:], kgo.ZstdCompression(), -1, -1)...))
	f.Add(rawBatch(1, 0, []byte{12, 0, 0, 0, 1, 1, 0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fixed := range [][]byte{data, fixBatchCRCs(data)} {
			checkValidate(t, fixed)
		}
	})
}

// fixBatchCRCs returns a copy of b with every batch's CRC recomputed, so
// mutations reach the checks behind it.
func fixBatchCRCs(b []byte) []byte {
	c := bytes.Clone(b)
	for p := 0; len(c)-p >= BatchHeaderSize; {
		n := int(int32(binary.BigEndian.Uint32(c[p+8:]))) + batchLengthBase
		if n < BatchHeaderSize || n > len(c)-p {
			break
		}
		binary.BigEndian.PutUint32(c[p+17:], crc32.Checksum(c[p+21:p+n], wire.Castagnoli))
		p += n
	}
	return c
}

func checkValidate(t *testing.T, data []byte) {
	var lim BatchLimits
	cheap, err := ValidateBatches(data, lim)
	if err != nil && !errors.Is(err, ErrBadBatch) {
		t.Fatalf("error without ErrBadBatch: %v", err)
	}
	lim.Strict = true
	_, serr := ValidateBatches(data, lim)
	if serr != nil && !errors.Is(serr, ErrBadBatch) {
		t.Fatalf("strict error without ErrBadBatch: %v", serr)
	}
	if serr == nil && err != nil {
		t.Fatalf("strict accepts what the cheap mode refuses: %v", err)
	}
	lim.Produced = true
	_, perr := ValidateBatches(data, lim)
	if perr != nil && !errors.Is(perr, ErrBadBatch) {
		t.Fatalf("produced error without ErrBadBatch: %v", perr)
	}
	if perr == nil && serr != nil {
		t.Fatalf("the Produced checks accept what strict refuses: %v", serr)
	}
	if err != nil {
		return
	}
	bb := NewBatchBlockBuilder("t", 0)
	if err := bb.AppendBatches(data, &cheap); err != nil {
		t.Fatalf("AppendBatches of validated batches: %v", err)
	}
	blk := encodeBlock(bb, encoder())
	got, derr := DecodeBlock(blk)
	if serr != nil {
		// Batches only the strict mode refuses are refused once stored.
		if derr == nil {
			t.Fatalf("DecodeBlock accepts batches strict validation refuses: %v", serr)
		}
		return
	}
	if derr != nil {
		t.Fatalf("DecodeBlock of strictly validated batches: %v", derr)
	}
	if len(got) != cheap.Records {
		t.Fatalf("%d records decoded, %d validated", len(got), cheap.Records)
	}
	offs := Offsets(3, got)
	n, verr := VisitBlock(blk, 3, func(v *RecordView) error {
		r := &got[v.Index]
		if v.Offset != offs[v.Index] || v.Timestamp != r.Timestamp || diffBytes(r.Key, v.Key) != "" || diffBytes(r.Value, v.Value) != "" || v.NumHeaders != len(r.Headers) {
			t.Fatalf("VisitBlock record %d differs from DecodeBlock's", v.Index)
		}
		return nil
	})
	if verr != nil || n != len(got) {
		t.Fatalf("VisitBlock: %d records, %v", n, verr)
	}
	kb, err := BlockBatches(nil, blk, 7)
	if err != nil {
		t.Fatalf("BlockBatches: %v", err)
	}
	checkDecodeBatches(t, kb, 7, got)
	obj, _, err := Build([]*BlockBuilder{bb})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	checkObject(t, obj)
}

// TestStrictBoundsDecompression: a batch that decompresses past
// MaxUncompressedBytes is refused in Strict mode before or while it is
// decompressed, whatever the codec and whether or not the zstd frame
// declares its size.
func TestStrictBoundsDecompression(t *testing.T) {
	recs := []Record{{Value: make([]byte, 2<<20), Timestamp: 1}}
	bb := NewBatchBlockBuilder("t", 0)
	bb.Append(recs[0])
	ours, err := BlockBatches(nil, encodeBlock(bb, encoder()), 0) // zstd with a declared size
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{"zstd (declared size)": ours}
	for i, c := range kgoCodecs[1:] {
		inputs[Compression(i+1).String()] = kgoBatch(t, recs, c, -1, -1)
	}
	// A streamed zstd frame without a declared size (as streaming
	// compressors write them; franz-go declares it).
	plain := kgoBatch(t, recs, kgo.NoCompression(), -1, -1)
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(plain[BatchHeaderSize:])
	zw.Close()
	var fh zstd.Header
	if err := fh.Decode(zbuf.Bytes()); err != nil || fh.HasFCS {
		t.Fatalf("the streamed frame declares its size (%v)", err)
	}
	streamed := append(bytes.Clone(plain[:BatchHeaderSize]), zbuf.Bytes()...)
	putBatchHeader(streamed, batchHeader{LeaderEpoch: -1, Attributes: int16(CompressionZstd), BaseTimestamp: 1, MaxTimestamp: 1,
		ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, RecordCount: 1})
	inputs["zstd (streamed, no declared size)"] = streamed
	for name, in := range inputs {
		if _, err := ValidateBatches(in, BatchLimits{Strict: true, MaxUncompressedBytes: 3 << 20}); err != nil {
			t.Fatalf("%s within the limit: %v", name, err)
		}
		_, err := ValidateBatches(in, BatchLimits{Strict: true, MaxUncompressedBytes: 1 << 20})
		if err == nil || !strings.Contains(err.Error(), "batch 0: records:") || !strings.Contains(err.Error(), "1048576") {
			t.Fatalf("%s past the limit: %v", name, err)
		}
	}
}

// TestWriterTakesBatchBuilders: Writer and Build make the same object of
// batch builders.
func TestWriterTakesBatchBuilders(t *testing.T) {
	mk := func() *BlockBuilder {
		bb := NewBatchBlockBuilder("t", 2)
		for _, r := range kafkaTestRecords(50, 4) {
			bb.Append(r)
		}
		return bb
	}
	want, _, err := Build([]*BlockBuilder{mk(), mk()})
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(LevelFastest)
	for range 2 {
		if _, err := w.Add(mk()); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := w.Finish()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Writer differs from Build: %v", err)
	}
}

// TestXerialSnappy: snappy batches framed as the Java producer writes them
// (xerial header, big-endian length-prefixed chunks) decode to the same
// records as kgo's decompressor reads from them.
func TestXerialSnappy(t *testing.T) {
	recs := kafkaTestRecords(40, 6)
	plain := kgoBatch(t, recs, kgo.NoCompression(), -1, -1)
	raw := plain[BatchHeaderSize:]
	x := []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0} // the xerial magic
	x = binary.BigEndian.AppendUint32(x, 1)
	x = binary.BigEndian.AppendUint32(x, 1)
	for _, chunk := range [][]byte{raw[:len(raw)/3], raw[len(raw)/3:]} {
		c := s2.EncodeSnappy(nil, chunk)
		x = binary.BigEndian.AppendUint32(x, uint32(len(c)))
		x = append(x, c...)
	}
	if back, err := kgo.DefaultDecompressor().Decompress(x, kgo.CodecSnappy); err != nil || !bytes.Equal(back, raw) {
		t.Fatalf("kgo does not read the xerial framing back: %v", err)
	}
	batch := append(bytes.Clone(plain[:BatchHeaderSize]), x...)
	h, _, _ := parseBatchHeader(plain, MaxBlockRawBytes, attrCodecMask)
	h.Attributes = int16(CompressionSnappy)
	putBatchHeader(batch, h)
	info, err := ValidateBatches(batch, BatchLimits{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	bb := NewBatchBlockBuilder("t", 0)
	if err := bb.AppendBatches(batch, &info); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBlock(encodeBlock(bb, encoder()))
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRecords(recs, got); d != "" {
		t.Fatal(d)
	}
	// A truncated chunk is refused with the reason.
	bad := bytes.Clone(batch[:len(batch)-3])
	putBatchHeader(bad, h)
	if _, err := ValidateBatches(bad, BatchLimits{Strict: true}); err == nil || !strings.Contains(err.Error(), "snappy: xerial chunk of") {
		t.Fatalf("truncated xerial chunk: %v", err)
	}
}

// TestZstdSeveralFrames: a zstd batch of two frames back to back (each
// declaring its own size) decodes whole.
func TestZstdSeveralFrames(t *testing.T) {
	recs := kafkaTestRecords(20, 8)
	plain := kgoBatch(t, recs, kgo.NoCompression(), -1, -1)
	raw := plain[BatchHeaderSize:]
	z := encoder().EncodeAll(raw[:len(raw)/2], nil)
	z = encoder().EncodeAll(raw[len(raw)/2:], z)
	batch := append(bytes.Clone(plain[:BatchHeaderSize]), z...)
	h, _, _ := parseBatchHeader(plain, MaxBlockRawBytes, attrCodecMask)
	h.Attributes = int16(CompressionZstd)
	putBatchHeader(batch, h)
	info, err := ValidateBatches(batch, BatchLimits{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	bb := NewBatchBlockBuilder("t", 0)
	if err := bb.AppendBatches(batch, &info); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBlock(encodeBlock(bb, encoder()))
	if err != nil || diffRecords(recs, got) != "" {
		t.Fatalf("%v %s", err, diffRecords(recs, got))
	}
}

// checkDecodeBatches checks that DecodeBatches of batches with absolute
// offsets from base gives exactly want (a block's records), from the start
// and from an offset inside.
func checkDecodeBatches(t *testing.T, kb []byte, base int64, want []Record) {
	t.Helper()
	offs := Offsets(base, want)
	for _, from := range []int64{0, offs[len(offs)/2]} {
		got, gotOffs, err := DecodeBatches(kb, from)
		if err != nil {
			t.Fatalf("DecodeBatches from %d: %v", from, err)
		}
		i0 := 0
		for i0 < len(offs) && offs[i0] < from {
			i0++
		}
		if len(got) != len(want)-i0 {
			t.Fatalf("DecodeBatches from %d: %d records, want %d", from, len(got), len(want)-i0)
		}
		for i := range got {
			w := want[i0+i]
			if gotOffs[i] != offs[i0+i] || got[i].Timestamp != w.Timestamp || diffBytes(got[i].Key, w.Key) != "" || diffBytes(got[i].Value, w.Value) != "" || len(got[i].Headers) != len(w.Headers) {
				t.Fatalf("DecodeBatches from %d: record %d differs: %+v at %d, want %+v at %d", from, i, got[i], gotOffs[i], w, offs[i0+i])
			}
		}
	}
}

// FuzzDecodeBatches checks that DecodeBatches (what a consumer runs on a
// fetch's batches) never panics and that every error wraps ErrCorrupt;
// inputs are tried with their CRCs repaired too.
func FuzzDecodeBatches(f *testing.F) {
	recs := kafkaTestRecords(4, 3)
	for _, c := range kgoCodecs {
		f.Add(kgoBatch(f, recs, c, 1, 5), int64(0))
	}
	pb, err := AppendProducerBatches(nil, recs)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pb, int64(2))
	f.Fuzz(func(t *testing.T, data []byte, from int64) {
		for _, in := range [][]byte{data, fixBatchCRCs(data)} {
			got, offs, err := DecodeBatches(in, from)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("error without ErrCorrupt: %v", err)
				}
				continue
			}
			if len(got) != len(offs) {
				t.Fatalf("%d records, %d offsets", len(got), len(offs))
			}
			for i := range offs {
				if offs[i] < from || (i > 0 && offs[i] <= offs[i-1]) {
					t.Fatalf("offsets %v from %d", offs, from)
				}
			}
		}
	})
}

// TestProducerBatchesRoundTrip: AppendProducerBatches output passes the
// node's validation (Strict, Produced), and decodes to the records.
func TestProducerBatchesRoundTrip(t *testing.T) {
	recs := kafkaTestRecords(300, 3)
	for i := range recs {
		recs[i].Timestamp = max(recs[i].Timestamp, 0)
		for j := range recs[i].Headers {
			if recs[i].Headers[j].Key == "" {
				recs[i].Headers[j].Key = "k"
			}
		}
	}
	b, err := AppendProducerBatches(nil, recs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ValidateBatches(b, BatchLimits{Strict: true, Produced: true})
	if err != nil {
		t.Fatal(err)
	}
	if info.Records != len(recs) {
		t.Fatalf("%d records validated, %d sent", info.Records, len(recs))
	}
	checkDecodeBatches(t, b, 0, recs)
	if _, err := AppendProducerBatches(nil, []Record{{Gap: 1}}); err == nil {
		t.Fatal("a record with an offset gap was encoded")
	}
	// Uncompressed, with offset gaps (a compacted range) and a base.
	recs[0].Gap, recs[5].Gap, recs[299].Gap = 2, 7, 1000
	raw, err := AppendRecordBatches([]byte("prefix"), recs, 40, false)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw[:6]) != "prefix" {
		t.Fatal("dst overwritten")
	}
	if _, err := ValidateBatches(raw[6:], BatchLimits{}); err == nil {
		t.Fatal("batches with offset gaps pass the produce validation")
	}
	for p := 6; p < len(raw); p += int(binary.BigEndian.Uint32(raw[p+8:])) + 12 {
		if c := Compression(raw[p+22] & 7); c != CompressionNone {
			t.Fatalf("batch at %d compressed with %v", p, c)
		}
	}
	checkDecodeBatches(t, raw[6:], 40, recs)
	if _, err := AppendRecordBatches(nil, recs, math.MaxInt64-100, false); err == nil {
		t.Fatal("offsets past MaxInt64 were encoded")
	}
}

// TestBatchEncodedSizeNeverUndercounts: BatchEncodedSize bounds a record's
// Kafka encoding at its widest (any timestampDelta and offsetDelta),
// where EncodedSize alone does not.
func TestBatchEncodedSizeNeverUndercounts(t *testing.T) {
	recs := append(kafkaTestRecords(200, 4),
		Record{},
		Record{Key: []byte{}, Value: []byte{}, Headers: []Header{{Key: string(make([]byte, 70)), Value: nil}, {Key: "k", Value: make([]byte, 200)}}},
	)
	undercounted := false
	for i := range recs {
		r := &recs[i]
		got := len(appendKafkaRecord(nil, r, math.MinInt64, math.MaxInt32))
		if got > BatchEncodedSize(*r) {
			t.Fatalf("record %d: Kafka encoding of %d bytes, BatchEncodedSize %d", i, got, BatchEncodedSize(*r))
		}
		undercounted = undercounted || got > EncodedSize(*r)
	}
	if !undercounted {
		t.Log("EncodedSize covered every record here")
	}
}

// TestAppendBatchesRecords: small producer batches appended record by
// record land in one pending batch with the records appended around them
// (Kafka clients' baseOffset 0 everywhere is ignored), and the block
// decodes to every record in order.
func TestAppendBatchesRecords(t *testing.T) {
	recs := kafkaTestRecords(30, 2)
	for i := range recs {
		recs[i].Timestamp = max(recs[i].Timestamp, 0)
	}
	b1, err := AppendProducerBatches(nil, recs[:10])
	if err != nil {
		t.Fatal(err)
	}
	b2 := kgoBatch(t, recs[10:20], kgo.Lz4Compression(), -1, -1)
	bb := NewBatchBlockBuilder("t", 0)
	for _, b := range [][]byte{b1, b2} {
		info, err := ValidateBatches(b, BatchLimits{Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := bb.AppendBatchesRecords(b, &info); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range recs[20:] {
		bb.Append(r)
	}
	if err := bb.AppendBatchesRecords(b1, &BatchesInfo{}); err == nil {
		t.Fatal("AppendBatchesRecords with an info of other bytes")
	}
	got, err := DecodeBlock(encodeBlock(bb, encoder()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("%d records, want %d", len(got), len(recs))
	}
	for i := range recs {
		if diffBytes(got[i].Key, recs[i].Key) != "" || diffBytes(got[i].Value, recs[i].Value) != "" || got[i].Timestamp != recs[i].Timestamp || len(got[i].Headers) != len(recs[i].Headers) || got[i].Gap != 0 {
			t.Fatalf("record %d: %+v, want %+v", i, got[i], recs[i])
		}
	}
	if n := len(bb.kbuf); n != 0 {
		t.Fatalf("%d bytes of sealed batches: the records should share the pending batch", n)
	}
}

// TestDeferCompression: a builder that defers compression seals its
// batches uncompressed while records are appended, and Build compresses
// them; the block decodes to the same records as an eager builder's,
// with producer batches in between kept as they are.
func TestDeferCompression(t *testing.T) {
	var recs []Record
	for i := range 3000 {
		recs = append(recs, Record{Key: fmt.Appendf(nil, "k%d", i%7), Value: bytes.Repeat(fmt.Appendf(nil, "value %d ", i), 100), Timestamp: int64(1000 + i)})
	}
	prod, err := AppendProducerBatches(nil, recs[:5])
	if err != nil {
		t.Fatal(err)
	}
	info, err := ValidateBatches(prod, BatchLimits{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	eager, lazy := NewBatchBlockBuilder("t", 0), NewBatchBlockBuilder("t", 0)
	lazy.DeferCompression()
	for _, bb := range []*BlockBuilder{eager, lazy} {
		for i, r := range recs {
			bb.Append(r)
			if i == 1500 {
				if err := bb.AppendBatches(prod, &info); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if len(lazy.kdefer) < 2 || len(lazy.kbuf) <= 2*len(eager.kbuf) {
		t.Fatalf("lazy builder: %d deferred batches, %d bytes sealed (eager %d)", len(lazy.kdefer), len(lazy.kbuf), len(eager.kbuf))
	}
	be, bl := encodeBlock(eager, encoder()), encodeBlock(lazy, encoder())
	if len(bl) > len(be)+64 {
		t.Fatalf("deferred block of %d bytes, eager %d: not compressed", len(bl), len(be))
	}
	ge, err := DecodeBlock(be)
	if err != nil {
		t.Fatal(err)
	}
	gl, err := DecodeBlock(bl)
	if err != nil {
		t.Fatal(err)
	}
	if len(gl) != len(recs)+5 || len(ge) != len(gl) {
		t.Fatalf("%d and %d records, want %d", len(ge), len(gl), len(recs)+5)
	}
	for i := range gl {
		if diffBytes(gl[i].Value, ge[i].Value) != "" || gl[i].Timestamp != ge[i].Timestamp || diffBytes(gl[i].Key, ge[i].Key) != "" {
			t.Fatalf("record %d differs", i)
		}
	}
	if d, err := lazy.Decode(); err != nil || len(d) != len(gl) {
		t.Fatalf("Decode of the lazy builder: %d records, %v", len(d), err)
	}
}
