package kafkabatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/varve-io/varve/tier/segment/internal/wire"
)

// These tests encode batches with their own encoder (below), written from
// Kafka's record format rather than shared with package segment, so that
// they check this package against the format and not against itself.

type testHeader struct {
	key   string
	value []byte // nil: a null value
}

type testRecord struct {
	key, value []byte // nil: null
	ts         int64
	headers    []testHeader
}

func appendTestVarint(b []byte, v int64) []byte { return binary.AppendVarint(b, v) }

func appendTestBytes(b, v []byte) []byte {
	if v == nil {
		return appendTestVarint(b, -1)
	}
	return append(appendTestVarint(b, int64(len(v))), v...)
}

// encodeTestRecords returns recs as Kafka records with timestampDelta
// relative to base and offsetDelta 0, 1, ...
func encodeTestRecords(recs []testRecord, base int64) []byte {
	var out []byte
	for i, r := range recs {
		var body []byte
		body = append(body, 0) // attributes
		body = appendTestVarint(body, r.ts-base)
		body = appendTestVarint(body, int64(i))
		body = appendTestBytes(body, r.key)
		body = appendTestBytes(body, r.value)
		body = appendTestVarint(body, int64(len(r.headers)))
		for _, h := range r.headers {
			body = appendTestBytes(body, []byte(h.key))
			body = appendTestBytes(body, h.value)
		}
		out = appendTestVarint(out, int64(len(body)))
		out = append(out, body...)
	}
	return out
}

// compressTest compresses raw records with codec c the way Kafka clients
// do (snappy: xerial framing as the Java client writes it).
func compressTest(t testing.TB, c Compression, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch c {
	case CompressionNone:
		return raw
	case CompressionGzip:
		w := gzip.NewWriter(&buf)
		w.Write(raw)
		w.Close()
	case CompressionSnappy:
		buf.Write(xerialMagic)
		buf.Write([]byte{0, 0, 0, 1, 0, 0, 0, 1})
		blk := s2.EncodeSnappy(nil, raw)
		buf.Write(binary.BigEndian.AppendUint32(nil, uint32(len(blk))))
		buf.Write(blk)
	case CompressionLZ4:
		w := lz4.NewWriter(&buf)
		w.Write(raw)
		w.Close()
	case CompressionZstd:
		w, _ := zstd.NewWriter(&buf) // streamed: no frame content size
		w.Write(raw)
		w.Close()
	default:
		t.Fatalf("codec %v", c)
	}
	return buf.Bytes()
}

// testBatch returns one batch of recs compressed with c, producer fields -1.
func testBatch(t testing.TB, recs []testRecord, c Compression) []byte {
	t.Helper()
	base, maxTS := recs[0].ts, recs[0].ts
	for _, r := range recs {
		maxTS = max(maxTS, r.ts)
	}
	payload := compressTest(t, c, encodeTestRecords(recs, base))
	b := make([]byte, BatchHeaderSize, BatchHeaderSize+len(payload))
	b = append(b, payload...)
	PutHeader(b, Header{
		BaseOffset: 0, LeaderEpoch: -1, Attributes: int16(c), LastOffsetDelta: int32(len(recs) - 1),
		BaseTimestamp: base, MaxTimestamp: maxTS, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1,
		RecordCount: int32(len(recs)),
	})
	return b
}

func sampleRecords(n int) []testRecord {
	recs := make([]testRecord, n)
	for i := range recs {
		recs[i] = testRecord{
			key:   []byte(fmt.Sprintf("user-%d", i%7)),
			value: []byte(strings.Repeat(fmt.Sprintf(`{"i":%d,"event":"click"}`, i), 1+i%3)),
			ts:    1767225600000 + int64(i*3%11),
		}
		if i%2 == 0 {
			recs[i].headers = []testHeader{{"trace", []byte("abc")}, {"null-value", nil}}
		}
		if i%5 == 0 {
			recs[i].key = nil
		}
	}
	return recs
}

var strictProduced = BatchLimits{Strict: true, Produced: true}

// TestValidateRoundTrip: batches of every codec, back to back, validate
// in Strict mode, and WalkRecords gives back exactly the records encoded.
func TestValidateRoundTrip(t *testing.T) {
	codecs := []Compression{CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd}
	var all []byte
	var want [][]testRecord
	for i, c := range codecs {
		recs := sampleRecords(10 + i)
		b := testBatch(t, recs, c)
		info, err := ValidateBatches(b, strictProduced)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		raw := encodeTestRecords(recs, recs[0].ts)
		if info.Records != len(recs) || len(info.Batches) != 1 || info.Batches[0].Compression != c ||
			info.Batches[0].UncompressedBytes != len(raw) || info.Bytes != len(b) {
			t.Fatalf("%v: info %+v, want %d records, %d uncompressed bytes", c, info, len(recs), len(raw))
		}
		all = append(all, b...)
		want = append(want, recs)
	}
	info, err := ValidateBatches(all, strictProduced)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Batches) != len(codecs) {
		t.Fatalf("%d batches, want %d", len(info.Batches), len(codecs))
	}
	for i, bi := range info.Batches {
		h, field, reason := ParseHeader(all[bi.Offset:], MaxBytes, AttrCodecMask)
		if reason != "" {
			t.Fatalf("batch %d: %s: %s", i, field, reason)
		}
		raw, err := Decompress(all[bi.Offset+BatchHeaderSize:bi.Offset+bi.Length], h.Codec(), MaxBytes, nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		err = WalkRecords(raw, &h, MaxBytes, func(j int, r *Record) {
			w := want[i][j]
			if r.OffsetDelta != int32(j) || r.Timestamp != w.ts || !bytes.Equal(r.Key, w.key) || (r.Key == nil) != (w.key == nil) ||
				!bytes.Equal(r.Value, w.value) || r.NumHeaders != len(w.headers) {
				t.Errorf("batch %d record %d: got %+v, want %+v", i, j, r, w)
			}
			k := 0
			EachHeader(r.Headers, r.NumHeaders, func(key, v []byte) {
				if string(key) != w.headers[k].key || !bytes.Equal(v, w.headers[k].value) || (v == nil) != (w.headers[k].value == nil) {
					t.Errorf("batch %d record %d header %d: %q=%q", i, j, k, key, v)
				}
				k++
			})
			n++
		})
		if err != nil || n != len(want[i]) {
			t.Fatalf("batch %d: walked %d records: %v", i, n, err)
		}
	}
}

// TestAppendCompressed: an uncompressed batch re-encoded with zstd keeps
// its records and header fields, with a valid CRC; an incompressible one
// stays as it is.
func TestAppendCompressed(t *testing.T) {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithSingleSegment(true))
	plain := testBatch(t, sampleRecords(50), CompressionNone)
	z := AppendCompressed([]byte("prefix"), plain, enc)
	if string(z[:6]) != "prefix" || len(z)-6 >= len(plain) {
		t.Fatalf("compressed %d bytes from %d", len(z)-6, len(plain))
	}
	info, err := ValidateBatches(z[6:], strictProduced)
	if err != nil || info.Batches[0].Compression != CompressionZstd || info.Batches[0].UncompressedBytes != len(plain)-BatchHeaderSize {
		t.Fatalf("%+v %v", info, err)
	}
	if !bytes.Equal(z[6+23:6+BatchHeaderSize], plain[23:BatchHeaderSize]) {
		t.Fatal("header fields after attributes changed")
	}
	rng := rand.New(rand.NewSource(1))
	v := make([]byte, 4096)
	rng.Read(v)
	random := testBatch(t, []testRecord{{value: v, ts: 1}}, CompressionNone)
	if got := AppendCompressed(nil, random, enc); !bytes.Equal(got, random) {
		t.Fatal("an incompressible batch was not kept as it is")
	}
}

// rewrite edits a valid batch with fn and, unless keepCRC, recomputes its
// CRC (so that only the edited field is wrong).
func rewrite(b []byte, keepCRC bool, fn func(b []byte) []byte) []byte {
	b = fn(bytes.Clone(b))
	if !keepCRC && len(b) >= BatchHeaderSize {
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], wire.Castagnoli))
	}
	return b
}

// rebatch builds a batch from raw (uncompressed) record bytes with the
// header of good.
func rebatch(good, raw []byte) []byte {
	b := append(bytes.Clone(good[:BatchHeaderSize]), raw...)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-LengthBase))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], wire.Castagnoli))
	return b
}

// TestValidateErrors: each rule refuses a batch that breaks only it, with
// an error wrapping ErrBadBatch that names the field.
func TestValidateErrors(t *testing.T) {
	recs := []testRecord{{key: []byte("k"), value: []byte("v1"), ts: 1000}, {value: []byte("v2"), ts: 1005, headers: []testHeader{{"h", []byte("x")}}}}
	good := testBatch(t, recs, CompressionNone)
	if _, err := ValidateBatches(good, strictProduced); err != nil {
		t.Fatal(err)
	}
	put16 := func(off int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint16(b[off:], v); return b }
	}
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }
	}
	put64 := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint64(b[off:], v); return b }
	}
	// rawRecords edits the records of good (uncompressed) and re-frames it.
	rawRecords := func(rs []testRecord, edit func([]byte) []byte) []byte {
		return rebatch(good, edit(encodeTestRecords(rs, rs[0].ts)))
	}
	same := func(b []byte) []byte { return b }
	bigTS := int64(-1)
	cases := []struct {
		name   string
		in     []byte
		limits BatchLimits
		want   string
		tooBig bool
	}{
		{"empty", nil, strictProduced, "no batches", false},
		{"short", good[:BatchHeaderSize-1], strictProduced, "batchLength: 60 bytes left", false},
		{"length below header", rewrite(good, true, put32(8, 10)), strictProduced, "batchLength: 10, less than", false},
		{"length past end", good[:len(good)-1], strictProduced, "runs past the end", false},
		{"trailing bytes", append(bytes.Clone(good), 0, 0), strictProduced, "batch 1: batchLength", false},
		{"batch limit", good, BatchLimits{MaxBatchBytes: len(good) - 1, Strict: true}, "exceeds the limit", false},
		{"magic", rewrite(good, true, func(b []byte) []byte { b[16] = 1; return b }), strictProduced, "magic: 1", false},
		{"crc", rewrite(good, true, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), strictProduced, "crc: CRC-32C", false},
		{"codec", rewrite(good, false, put16(21, 5)), strictProduced, "unknown compression codec 5", false},
		{"transactional", rewrite(good, false, put16(21, AttrTransactional)), strictProduced, "transactional batch", false},
		{"control", rewrite(good, false, put16(21, AttrControl)), strictProduced, "control batch", false},
		{"log append time", rewrite(good, false, put16(21, AttrLogAppendTime)), strictProduced, "LogAppendTime", false},
		{"unknown attribute", rewrite(good, false, put16(21, 0x40)), strictProduced, "unknown bits", false},
		{"record count 0", rewrite(good, false, put32(57, 0)), strictProduced, "recordCount: 0", false},
		{"record count too large", rewrite(good, false, put32(57, 1000)), strictProduced, "recordCount: 1000 records cannot fit", false},
		{"last offset delta", rewrite(good, false, put32(23, 5)), strictProduced, "lastOffsetDelta: 5 with 2 records", false},
		{"max timestamp before base", rewrite(good, false, put64(35, 999)), strictProduced, "maxTimestamp: 999 is before", false},
		{"max timestamp not the largest", rewrite(good, false, put64(35, 1010)), strictProduced, "largest record timestamp 1005", false},
		{"producer id", rewrite(good, false, put64(43, uint64(bigTS-1))), strictProduced, "producerId: -2", false},
		{"producer epoch", rewrite(rewrite(good, false, put64(43, 7)), false, put16(51, 0xffff)), strictProduced, "producerEpoch: -1 with producerId 7", false},
		{"base sequence", rewrite(good, false, put32(53, 0xfffffffe)), strictProduced, "baseSequence: -2", false},
		{"sequence without", rewrite(rewrite(good, false, put64(43, 7)), false, put16(51, 0)), strictProduced, "baseSequence: -1 with producerId 7", false},
		{"negative base timestamp", testBatch(t, []testRecord{{value: []byte("v"), ts: -5}}, CompressionNone), strictProduced, "baseTimestamp -5 is negative", false},
		{"negative record timestamp", rewrite(testBatch(t, []testRecord{{value: []byte("v"), ts: 0}, {value: []byte("w"), ts: 0}}, CompressionNone), false, func(b []byte) []byte {
			// second record's timestampDelta 0 -> -1 (zigzag 1), maxTimestamp stays 0
			r := encodeTestRecords([]testRecord{{value: []byte("v"), ts: 0}, {value: []byte("w"), ts: -1}}, 0)
			return append(b[:BatchHeaderSize], r...)
		}), strictProduced, "record 1: timestamp -1 is negative", false},
		{"empty header key", rawRecords([]testRecord{recs[0], {value: []byte("v2"), ts: 1005, headers: []testHeader{{"", []byte("x")}}}}, same), strictProduced, "header 0 has an empty key", false},
		{"null header key", rawRecords(recs, func(r []byte) []byte {
			i := bytes.LastIndex(r, []byte{2, 'h'}) // key length 1 (zigzag 2), "h"
			r[int(r[0])/2+1] -= 2                   // record 1's length, one byte less
			return append(append(r[:i:i], 1), r[i+2:]...)
		}), strictProduced, "header 0: null key", false},
		{"record attributes", rawRecords(recs, func(r []byte) []byte { r[1] = 1; return r }), strictProduced, "record 0: attributes 1", false},
		{"record length", rawRecords(recs, func(r []byte) []byte { r[0] += 2; return r }), strictProduced, "record 0: length says", false},
		{"record truncated", rawRecords(recs, func(r []byte) []byte { return r[:len(r)-1] }), strictProduced, "record 1: length", false},
		{"offset delta", rawRecords(recs, func(r []byte) []byte {
			i := int(r[0])/2 + 1 // second record: length, attributes, timestampDelta (1 byte), offsetDelta
			r[i+3] = 4           // offsetDelta 2 (zigzag 4)
			return r
		}), strictProduced, "record 1: offsetDelta 2", false},
		{"bytes after records", rawRecords(recs, func(r []byte) []byte { return append(r, 0, 0, 0, 0, 0, 0, 0) }), strictProduced, "7 bytes after the last of 2 records", false},
		{"record too large", good, BatchLimits{Strict: true, Produced: true, MaxRecordBytes: 8}, "record too large: record 0", true},
		{"decompression bomb", testBatch(t, []testRecord{{value: bytes.Repeat([]byte("a"), 1<<16), ts: 1}}, CompressionZstd), BatchLimits{Strict: true, MaxUncompressedBytes: 1 << 12}, "more than the limit of 4096", false},
		{"gzip bomb", testBatch(t, []testRecord{{value: bytes.Repeat([]byte("a"), 1<<16), ts: 1}}, CompressionGzip), BatchLimits{Strict: true, MaxUncompressedBytes: 1 << 12}, "gzip: decompresses to more than the limit of 4096", false},
		{"lz4 bomb", testBatch(t, []testRecord{{value: bytes.Repeat([]byte("a"), 1<<16), ts: 1}}, CompressionLZ4), BatchLimits{Strict: true, MaxUncompressedBytes: 1 << 12}, "lz4: decompresses to more than the limit", false},
		{"snappy bomb", testBatch(t, []testRecord{{value: bytes.Repeat([]byte("a"), 1<<16), ts: 1}}, CompressionSnappy), BatchLimits{Strict: true, MaxUncompressedBytes: 1 << 12}, "snappy: decompresses to more than the limit", false},
		{"bad zstd", rebatch(testBatch(t, recs, CompressionZstd), []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0}), strictProduced, "zstd", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info, err := ValidateBatches(c.in, c.limits)
			if err == nil {
				t.Fatalf("accepted: %+v", info)
			}
			if !errors.Is(err, ErrBadBatch) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want ErrBadBatch and %q", err, c.want)
			}
			if errors.Is(err, ErrBatchRecordTooLarge) != c.tooBig {
				t.Fatalf("error %q: ErrBatchRecordTooLarge %v, want %v", err, !c.tooBig, c.tooBig)
			}
			if len(info.Batches) != 0 || info.Records != 0 {
				t.Fatalf("refused with info %+v", info)
			}
		})
	}
	// Without Strict only the headers are checked: a bad record passes.
	if _, err := ValidateBatches(rawRecords(recs, func(r []byte) []byte { r[1] = 1; return r }), BatchLimits{}); err != nil {
		t.Fatalf("cheap mode checked the records: %v", err)
	}
}

// benchBatches returns about size bytes of records (json-like events or
// random 1 KiB values) as zstd batches of up to 128 KiB of records, the
// size an SDK producer sends for 8 partitions at 1 MiB per request.
func benchBatches(t testing.TB, kind string, size int) []byte {
	rng := rand.New(rand.NewSource(3))
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithSingleSegment(true), zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	ts := int64(1767225600000)
	for total := 0; total < size; {
		var recs []testRecord
		raw := 0
		for raw < 128<<10 && total+raw < size {
			var v []byte
			if kind == "random" {
				v = make([]byte, 1024)
				rng.Read(v)
			} else {
				v = fmt.Appendf(nil, `{"event_id":"%016x","user_id":%d,"type":"%s","url":"/products/%d","session":{"device":"%s","page":%d},"price":%d.%02d}`,
					rng.Uint64(), 10000+rng.Intn(90000), []string{"click", "page_view", "purchase"}[rng.Intn(3)], rng.Intn(1e6),
					[]string{"mobile", "desktop"}[rng.Intn(2)], rng.Intn(40), rng.Intn(500), rng.Intn(100))
			}
			ts += int64(rng.Intn(3))
			recs = append(recs, testRecord{key: fmt.Appendf(nil, "%d", rng.Intn(10000)), value: v, ts: ts})
			raw += len(v) + 16
		}
		total += raw
		out = AppendCompressed(out, testBatch(t, recs, CompressionNone), enc)
	}
	return out
}

// BenchmarkValidate is the node's check of a produced partition entry
// (Strict, Produced: decompress and walk every record) and the cheap
// header-only check. MB/s are of the bytes as sent.
func BenchmarkValidate(b *testing.B) {
	for _, kind := range []string{"json", "random"} {
		in := benchBatches(b, kind, 1<<20)
		for _, strict := range []bool{true, false} {
			name := kind + "/cheap"
			if strict {
				name = kind + "/strict"
			}
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(in)))
				b.ReportAllocs()
				cpu0 := cpuTime()
				for b.Loop() {
					if _, err := ValidateBatches(in, BatchLimits{Strict: strict, Produced: strict, MaxUncompressedBytes: 64 << 20}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// cpuTime is the process's user and system CPU time so far: benchmarks
// report it per operation (cpu-ns/op), which a machine shared with other
// work disturbs less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
