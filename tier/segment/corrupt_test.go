package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func smallObject(t testing.TB) ([]byte, []BlockInfo) {
	return mustBuild(t, []blockSpec{
		{"a", 0, []Record{{Key: []byte("k"), Value: []byte("v1"), Timestamp: 10, Headers: []Header{{Key: "h", Value: nil}}}, {Value: []byte("v2"), Timestamp: 9}}},
		{"b", 7, []Record{{Key: []byte{}, Timestamp: -5}}},
		{"a", 1, jsonSpecs(5, 1, 1000)[0].recs}, // zstd
	})
}

func expectCorrupt(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: error does not wrap ErrCorrupt: %v", what, err)
	}
}

// Every single-byte change anywhere in an object is detected: the header is
// checked, every block is under a CRC, the footer is under the trailer's CRC
// and the trailer's fields are checked against the footer.
func TestDecodeDetectsEveryFlippedByte(t *testing.T) {
	obj, infos := smallObject(t)
	if infos[2].Length >= infos[2].RawBytes {
		t.Fatalf("block 2 is not compressed")
	}
	for i := range obj {
		for _, mask := range []byte{0x01, 0x80, 0xFF} {
			c := bytes.Clone(obj)
			c[i] ^= mask
			_, _, err := Decode(c)
			expectCorrupt(t, "byte "+itoaT(i), err)
		}
	}
	// A larger object: a sample of positions.
	big, _ := mustBuild(t, jsonSpecs(9, 32, 512<<10))
	for i := 0; i < len(big); i += 1 + len(big)/2000 {
		c := bytes.Clone(big)
		c[i] ^= 0x10
		_, _, err := Decode(c)
		expectCorrupt(t, "byte "+itoaT(i), err)
	}
}

func TestDecodeBlockDetectsEveryFlippedByte(t *testing.T) {
	obj, infos := smallObject(t)
	for bi, info := range infos {
		blk := obj[info.Offset : info.Offset+info.Length]
		for i := range blk {
			c := bytes.Clone(blk)
			c[i] ^= 0x04
			_, err := DecodeBlock(c)
			expectCorrupt(t, "block "+itoaT(bi)+" byte "+itoaT(i), err)
		}
	}
}

func TestTruncation(t *testing.T) {
	obj, infos := smallObject(t)
	for n := range len(obj) {
		_, _, err := Decode(obj[:n])
		expectCorrupt(t, "object truncated to "+itoaT(n), err)
		_, _, err = Decode(obj[len(obj)-n:]) // the head cut off
		expectCorrupt(t, "object without its first "+itoaT(len(obj)-n)+" bytes", err)
	}
	for _, extra := range [][]byte{{0}, []byte("VARVE\x00"), obj[len(obj)-TrailerSize:]} {
		_, _, err := Decode(append(bytes.Clone(obj), extra...))
		expectCorrupt(t, "trailing garbage", err)
	}
	for bi, info := range infos {
		blk := obj[info.Offset : info.Offset+info.Length]
		for n := range len(blk) {
			_, err := DecodeBlock(blk[:n])
			expectCorrupt(t, "block "+itoaT(bi)+" truncated to "+itoaT(n), err)
		}
		_, err := DecodeBlock(append(bytes.Clone(blk), 0))
		expectCorrupt(t, "block with trailing garbage", err)
		// The wrong range: the block plus the start of the next one.
		_, err = DecodeBlock(obj[info.Offset : info.Offset+info.Length+1])
		expectCorrupt(t, "block range one byte too long", err)
	}
	tail := obj[infos[len(infos)-1].Offset+infos[len(infos)-1].Length:]
	for n := range len(tail) {
		_, err := DecodeFooter(tail[len(tail)-n:])
		expectCorrupt(t, "tail of "+itoaT(n)+" bytes", err)
	}
	for n := range TrailerSize {
		_, err := FooterSize(obj[len(obj)-n:])
		expectCorrupt(t, "trailer of "+itoaT(n)+" bytes", err)
	}
}

func itoaT(i int) string { return strconv.Itoa(i) }

// craftBlock assembles a block from any header fields and payload, with a
// valid CRC, so that tests reach the checks behind the CRC.
func craftBlock(codec byte, records, rawLen uint32, base int64, payload []byte) []byte {
	h := blockHeader{version: BlockVersion, codec: codec, records: records, rawLen: rawLen, payloadLen: uint32(len(payload)), base: base}
	b := make([]byte, BlockHeaderSize, BlockHeaderSize+len(payload))
	h.put(b)
	b = append(b, payload...)
	binary.LittleEndian.PutUint32(b[24:], blockCRC(b, b[BlockHeaderSize:]))
	return b
}

// craftSparse is craftBlock for a version 2 (sparse) block.
func craftSparse(codec byte, records, rawLen uint32, base int64, payload []byte) []byte {
	b := craftBlock(codec, records, rawLen, base, payload)
	b[2] = SparseBlockVersion
	binary.LittleEndian.PutUint32(b[24:], blockCRC(b, b[BlockHeaderSize:]))
	return b
}

// craftObject assembles an object from blocks and any footer entries (nil:
// computed from the blocks), with valid CRCs.
func craftObject(blocks [][]byte, infos []BlockInfo, version uint16) []byte {
	obj := append([]byte(magic), 0, 0)
	binary.LittleEndian.PutUint16(obj[6:], version)
	for _, b := range blocks {
		obj = append(obj, b...)
	}
	footer := appendFooter(nil, infos)
	obj = append(obj, footer...)
	obj = appendTrailer(obj, footer)
	binary.LittleEndian.PutUint16(obj[len(obj)-8:], version)
	return obj
}

func rec(ts int64, key, value string) []byte {
	b := NewBlockBuilder("t", 0)
	b.Append(Record{Key: []byte(key), Value: []byte(value), Timestamp: ts})
	return b.buf
}

func zstdOf(b []byte) []byte { return encoder().EncodeAll(b, nil) }

// streamed compresses b with the streaming encoder, whose frames do not
// declare their content size.
func streamed(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func TestDecodeBlockRejects(t *testing.T) {
	good := rec(5, "k", "v") // 00 02 6b 02 76 00
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	overflow := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}
	zeros := make([]byte, 8<<20)
	bomb := zstdOf(zeros)
	for _, tc := range []struct {
		name  string
		block []byte
		want  string
	}{
		{"empty", nil, "shorter than its"},
		{"bad magic", func() []byte { b := craftBlock(0, 1, 6, 5, good); b[0] = 'X'; return b }(), "bad block magic"},
		{"unknown version", func() []byte { b := craftBlock(0, 1, 6, 5, good); b[2] = 4; return b }(), "unknown block version 4"},
		{"version 0", func() []byte { b := craftBlock(0, 1, 6, 5, good); b[2] = 0; return b }(), "unknown block version 0"},
		{"sparse: no gap", craftSparse(0, 2, 14, 5, cat([]byte{0, 0}, good, good)), "without any offset gap"},
		{"sparse: too many records for the bytes", craftSparse(0, 2, 9, 5, []byte{1, 0, 0, 1, 1, 0, 0, 1, 1}), "2 records in 9 bytes"},
		{"sparse: truncated gaps", craftSparse(0, 2, 10, 5, []byte{1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}), "gap 1"},
		{"sparse: non-canonical gap", craftSparse(0, 1, 8, 5, cat([]byte{0x81, 0x00}, good)), "non-canonical"},
		{"sparse: gaps overflow", craftSparse(0, 2, 22, 5, cat([]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, []byte{1}, good, good)), "2^63-1 offsets"},
		{"sparse: gap count lower than records", craftSparse(0, 2, 13, 5, cat([]byte{1}, good, good)), "block records"},
		{"unknown codec", craftBlock(7, 1, 6, 5, good), "unknown block codec 7"},
		{"crc mismatch", func() []byte { b := craftBlock(0, 1, 6, 5, good); b[24]++; return b }(), "CRC32C"},
		{"payload length disagrees", func() []byte {
			b := craftBlock(0, 1, 6, 5, good)
			binary.LittleEndian.PutUint32(b[12:], 5)
			return b
		}(), "payload bytes"},
		{"zero records", craftBlock(0, 0, 6, 5, good), "0 records"},
		{"too many records for the bytes", craftBlock(0, 2, 6, 5, good), "2 records in 6 bytes"},
		{"record count higher than the records", craftBlock(0, 2, 12, 5, cat(good, []byte{0, 0, 0, 0, 0, 0})), "trailing garbage"},
		{"record count lower than the records", craftBlock(0, 1, 12, 5, cat(good, good)), "trailing garbage"},
		{"raw length disagrees (none)", craftBlock(0, 1, 7, 5, good), "header says 7"},
		{"over 256 MiB", craftBlock(1, 1, MaxBlockRawBytes+1, 5, zstdOf(good)), "the limit is"},
		{"payload larger than raw", craftBlock(1, 1, 6, 5, append(zstdOf(good), 0, 0, 0, 0, 0, 0, 0)), "larger than its"},
		{"more raw than zstd can hold", craftBlock(1, 1, 1<<20, 5, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31}), "more than 31 zstd bytes"},
		{"not zstd", craftBlock(1, 1, 6, 5, []byte("hello")), "zstd"},
		{"zstd frame size disagrees", craftBlock(1, 100, 601, 5, zstdOf(bytes.Repeat(good, 100))), "zstd frame holds 600 bytes, block header says 601"},
		{"decompression bomb", craftBlock(1, 1, 1<<20, 5, bomb), "zstd"},
		{"zstd frame smaller than header says", craftBlock(1, 41, 246, 5, zstdOf(bytes.Repeat(good, 40))), "zstd frame holds 240 bytes"},
		{"zstd frame larger than header says", craftBlock(1, 40, 200, 5, zstdOf(bytes.Repeat(good, 40))), "zstd frame holds 240 bytes"},
		{"zstd frame without content size", craftBlock(1, 40, 240, 5, streamed(bytes.Repeat(good, 40))), "does not declare its content size"},
		{"truncated zstd", craftBlock(1, 1, 6, 5, zstdOf(good)[:4]), "zstd"},
		{"varint overflow", craftBlock(0, 1, 13, 5, cat(overflow, []byte{1, 1, 0})), "overflows 64 bits"},
		{"varint too long", craftBlock(0, 1, 14, 5, cat([]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}, []byte{1, 1, 0})), "overflows 64 bits"},
		{"non-canonical varint", craftBlock(0, 1, 7, 5, []byte{0x80, 0x00, 0x02, 'k', 0x02, 'v', 0}), "non-canonical"},
		{"truncated varint", craftBlock(0, 1, 4, 5, []byte{0, 1, 1, 0x80}), "truncated varint"},
		{"first delta not zero", craftBlock(0, 1, 6, 5, cat([]byte{2}, good[1:])), "base timestamp"},
		{"key longer than the block", craftBlock(0, 1, 6, 5, []byte{0, 0x10, 'k', 2, 'v', 0}), "key length exceeds"},
		{"negative key length", craftBlock(0, 1, 6, 5, []byte{0, 0x03, 'k', 2, 'v', 0}), "key length is negative"},
		{"value longer than the block", craftBlock(0, 1, 6, 5, []byte{0, 2, 'k', 0x0e, 'v', 0}), "value length exceeds"},
		{"header count exceeds bytes", craftBlock(0, 1, 6, 5, []byte{0, 2, 'k', 2, 'v', 5}), "header count"},
		{"header key longer than the block", craftBlock(0, 1, 8, 5, []byte{0, 1, 1, 1, 9, 'h', 1, 0}), "header key length"},
		{"header value longer than the block", craftBlock(0, 1, 8, 5, []byte{0, 1, 1, 1, 1, 'h', 8, 0}), "header value length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := DecodeBlock(tc.block)
			expectCorrupt(t, tc.name, err)
			if recs != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeBlock = %v, %v; want an error containing %q", recs, err, tc.want)
			}
		})
	}
	// The crafted blocks are valid when their fields agree.
	if recs, err := DecodeBlock(craftBlock(0, 1, 6, 5, good)); err != nil || recs[0].Timestamp != 5 {
		t.Fatalf("valid crafted block: %v, %v", recs, err)
	}
	if recs, err := DecodeBlock(craftSparse(0, 2, 14, 5, cat([]byte{0, 3}, good, good))); err != nil || recs[0].Gap != 0 || recs[1].Gap != 3 {
		t.Fatalf("valid crafted sparse block: %v, %v", recs, err)
	}
	if _, err := DecodeBlock(craftBlock(1, 1, 6, 5, zstdOf(good))); err == nil || !strings.Contains(err.Error(), "larger than") {
		// zstd of 6 bytes is larger than 6 bytes; the writer stores it raw.
		t.Fatalf("zstd payload larger than raw accepted: %v", err)
	}
}

// A forged block claiming a small size for a frame that expands to 8 MiB
// is rejected without decompressing the frame in full.
func TestDecompressionBombIsBounded(t *testing.T) {
	frame := zstdOf(make([]byte, 64<<20))
	blk := craftBlock(1, 1, 1<<20, 0, frame) // claims 1 MiB (the ratio bound lets it through)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := DecodeBlock(blk)
	runtime.ReadMemStats(&after)
	expectCorrupt(t, "bomb", err)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Fatalf("decoding the bomb allocated %d bytes", alloc)
	}
	// A frame without a content size (streamed) is bounded by the header too.
	s := streamed(make([]byte, 4<<20))
	runtime.ReadMemStats(&before)
	_, err = DecodeBlock(craftBlock(1, 1, 1<<16, 0, s))
	runtime.ReadMemStats(&after)
	expectCorrupt(t, "streamed bomb", err)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Fatalf("decoding the streamed bomb allocated %d bytes", alloc)
	}
}

func TestDecodeRejects(t *testing.T) {
	b1 := craftBlock(0, 1, 6, 5, rec(5, "k", "v"))
	b2 := craftBlock(0, 1, 6, 7, rec(7, "q", "w"))
	info := func(topic string, off, length int64, ts int64) BlockInfo {
		return BlockInfo{Topic: topic, Partition: 0, Offset: off, Length: length, Records: 1, MinTimestamp: ts, MaxTimestamp: ts, RawBytes: 6}
	}
	l := int64(len(b1))
	good := []BlockInfo{info("t", HeaderSize, l, 5), info("u", HeaderSize+l, l, 7)}
	if _, _, err := Decode(craftObject([][]byte{b1, b2}, good, 1)); err != nil {
		t.Fatalf("valid crafted object: %v", err)
	}
	mod := func(f func(bi []BlockInfo)) []BlockInfo {
		c := append([]BlockInfo(nil), good...)
		f(c)
		return c
	}
	for _, tc := range []struct {
		name   string
		obj    []byte
		want   string
		footer bool // DecodeFooter on the tail rejects it too
	}{
		{"unknown version", craftObject([][]byte{b1, b2}, good, 2), "unknown format version 2", true},
		{"bad header magic", func() []byte { o := craftObject([][]byte{b1, b2}, good, 1); o[0] = 'v'; return o }(), "bad header magic", false},
		{"bad trailer magic", func() []byte { o := craftObject([][]byte{b1, b2}, good, 1); o[len(o)-1] = 1; return o }(), "bad trailer magic", true},
		{"header version alone", func() []byte { o := craftObject([][]byte{b1, b2}, good, 1); o[6] = 9; return o }(), "unknown format version 9", false},
		{"gap between blocks", craftObject([][]byte{b1, {0}, b2}, mod(func(bi []BlockInfo) { bi[1].Offset++ }), 1), "blocks tile", true},
		{"gap before footer", craftObject([][]byte{b1, b2, {0}}, good, 1), "the footer starts at", false},
		{"overlapping blocks", craftObject([][]byte{b1, b2}, mod(func(bi []BlockInfo) { bi[0].Length-- }), 1), "blocks tile", true},
		{"first block not after header", craftObject([][]byte{{0}, b1, b2}, mod(func(bi []BlockInfo) { bi[0].Offset++; bi[1].Offset++ }), 1), "want 8", true},
		{"record count disagrees", craftObject([][]byte{b1, b2}, mod(func(bi []BlockInfo) { bi[1].Records = 2; bi[1].RawBytes = 8 }), 1), "records", false},
		{"raw bytes disagree", craftObject([][]byte{b1, b2}, mod(func(bi []BlockInfo) { bi[1].RawBytes = 7 }), 1), "uncompressed bytes", false},
		{"timestamps disagree", craftObject([][]byte{b1, b2}, mod(func(bi []BlockInfo) { bi[0].MaxTimestamp = 6 }), 1), "timestamps span", false},
		{"block corrupt", craftObject([][]byte{b1, craftBlock(0, 1, 6, 7, []byte{0, 2, 'q', 2, 'w', 1})}, good, 1), "header count", false},
		{"zero records in footer", craftObject([][]byte{b1, b2}, mod(func(bi []BlockInfo) { bi[0].Records = 0 }), 1), "0 records", true},
		{"length too short", craftObject([][]byte{b1, b2}, mod(func(bi []BlockInfo) { bi[0].Length = BlockHeaderSize }), 1), "length 28", true},
		{"no blocks", craftObject(nil, nil, 1), "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			infos, recs, err := Decode(tc.obj)
			expectCorrupt(t, tc.name, err)
			if infos != nil || recs != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode = %v, %v, %v; want an error containing %q", infos, recs, err, tc.want)
			}
			if tc.footer {
				fl := int64(binary.LittleEndian.Uint32(tc.obj[len(tc.obj)-TrailerSize:]))
				tail := tc.obj[max(0, int64(len(tc.obj))-fl-TrailerSize):]
				_, err := DecodeFooter(tail)
				expectCorrupt(t, tc.name+" (footer)", err)
			}
		})
	}
}

// footerObject builds a tail (footer and trailer) from raw footer bytes.
func footerTail(footer []byte) []byte { return appendTrailer(bytes.Clone(footer), footer) }

func TestDecodeFooterRejects(t *testing.T) {
	u := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.AppendUvarint(b, v)
		}
		return b
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	topicT := cat(u(1, 1), []byte("t"))
	entry := func(ti, part, off, length, records uint64, minTS int64, tsRange, raw uint64) []byte {
		return cat(u(ti, part, off, length, records), binary.AppendVarint(nil, minTS), u(tsRange, raw))
	}
	const ts = 1772323200000
	e0 := entry(0, 0, 8, 40, 1, ts, 0, 20)
	valid := cat(topicT, u(1), e0)
	if _, err := DecodeFooter(footerTail(valid)); err != nil {
		t.Fatalf("valid footer: %v", err)
	}
	for _, tc := range []struct {
		name string
		tail []byte
		want string
	}{
		{"too short", []byte("VARVE\x00"), "shorter than"},
		{"footer length too small", footerTail([]byte{1, 2, 3}), "want 12 to"},
		{"footer length too large", func() []byte {
			b := footerTail(valid)
			binary.LittleEndian.PutUint32(b[len(b)-TrailerSize:], MaxFooterSize+1)
			return b
		}(), "want 12 to"},
		{"footer length disagrees", cat([]byte{0}, footerTail(valid)), "got"},
		{"crc mismatch", func() []byte { b := footerTail(valid); b[0] ^= 1; return b }(), "footer CRC32C"},
		{"no topics", footerTail(cat(u(0), u(1), e0)), "no topics"},
		{"topic count exceeds bytes", footerTail(cat(u(9), []byte("t"), u(1), e0)), "topic count"},
		{"empty topic", footerTail(cat(u(1, 0), u(1), e0)), "topic 0 is 0 bytes"},
		{"duplicate topic", footerTail(cat(u(2, 1), []byte("t"), u(1), []byte("t"), u(1), e0)), "appears twice"},
		{"unused topic", footerTail(cat(u(2, 1), []byte("t"), u(1), []byte("u"), u(1), e0)), "2 topics listed, 1 used"},
		{"topic out of order", footerTail(cat(u(2, 1), []byte("t"), u(1), []byte("u"), u(2), entry(1, 0, 8, 40, 1, 5, 0, 20), entry(0, 0, 48, 40, 1, 5, 0, 20))), "order of first use"},
		{"topic index out of range", footerTail(cat(topicT, u(1), entry(1, 0, 8, 40, 1, 5, 0, 20))), "topic index 1"},
		{"no blocks", footerTail(cat(topicT, u(0), make([]byte, 8))), "no blocks"},
		{"block count exceeds bytes", footerTail(cat(topicT, u(2), e0)), "block count"},
		{"partition out of range", footerTail(cat(topicT, u(1), entry(0, math.MaxInt32+1, 8, 40, 1, 5, 0, 20))), "partition 2147483648"},
		{"timestamp range overflows", footerTail(cat(topicT, u(1), entry(0, 0, 8, 40, 1, math.MaxInt64-1, 2, 20))), "overflows"},
		{"too many records", footerTail(cat(topicT, u(1), entry(0, 0, 8, 40, 20*kafkaMaxRecordsPerByte+1, 5, 0, 20))), "93621 records in 20"},
		{"records overflow", footerTail(cat(topicT, u(1), entry(0, 0, 8, 40, 1<<62, 5, 0, 20))), "records in"},
		{"raw too large", footerTail(cat(topicT, u(1), entry(0, 0, 8, 40, 1, 5, 0, MaxBlockRawBytes+1))), "records in"},
		{"compressed larger than raw", footerTail(cat(topicT, u(1), entry(0, 0, 8, 49, 1, 5, 0, 20))), "length 49"},
		{"varint overflow", footerTail(cat(topicT, u(1), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, e0)), "overflows 64 bits"},
		{"truncated entry", footerTail(cat(topicT, u(1), entry(0, 0, 8, 40, 1, 5, 0, 20)[:7], make([]byte, 1))), ""},
		{"trailing garbage", footerTail(cat(valid, []byte{0})), "trailing garbage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			infos, err := DecodeFooter(tc.tail)
			expectCorrupt(t, tc.name, err)
			if infos != nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeFooter = %v, %v; want an error containing %q", infos, err, tc.want)
			}
		})
	}
}
