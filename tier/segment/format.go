package segment

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"strconv"

	"github.com/varve-io/varve/tier/segment/internal/wire"
)

// Format constants. The layout is documented byte by byte in
// docs/segment-format.md; change both together.
const (
	// FormatVersion is the object format version written in the header and
	// the trailer (header, footer and trailer layout).
	FormatVersion = 1
	// BlockVersion is the block format version written in every block header
	// (block header, codecs and record encoding) of a dense block, whose
	// records have consecutive offsets. Blocks carry their own version
	// because readers fetch them without the object header.
	BlockVersion = 1
	// SparseBlockVersion is the version of a block whose records carry
	// offset gaps (Record.Gap): compaction of a compacted topic removes
	// records and keeps the offsets of the rest. Same header as version 1;
	// the payload starts with one uvarint gap per record.
	SparseBlockVersion = 2

	// HeaderSize is the size of the object header: magic and version.
	HeaderSize = 8
	// BlockHeaderSize is the size of the fixed header that starts every block.
	BlockHeaderSize = 28
	// TrailerSize is the size of the fixed trailer at the end of every object:
	// footer length, footer CRC32C, version and magic.
	TrailerSize = 16

	// MaxBlockRawBytes bounds a block's uncompressed size. Build refuses
	// larger blocks and decoders reject them before allocating anything.
	MaxBlockRawBytes = 256 << 20
	// MaxFooterSize bounds the footer, so that a reader never fetches more
	// than this from a corrupt trailer (about 19 bytes per block: hundreds of
	// thousands of blocks).
	MaxFooterSize = 16 << 20
	// MaxTopicLen bounds a topic name's length in bytes.
	MaxTopicLen = 255
)

// Codecs of a block's payload.
const (
	codecNone = 0
	codecZstd = 1
)

const (
	// minRecordSize is the smallest encoded record: timestamp delta, key
	// length, value length and header count, one byte each.
	minRecordSize = 4
	// minSparseRecordSize adds the one-byte offset gap of a sparse block.
	minSparseRecordSize = minRecordSize + 1
	// minHeaderSize is the smallest encoded record header: key length and
	// value length, one byte each.
	minHeaderSize = 2
	// minFooterEntry is the smallest footer entry of a block: eight varints
	// of one byte each.
	minFooterEntry = 8
	// maxZstdRatio bounds how much a zstd frame can expand: a 4-byte RLE
	// block (3-byte block header, 1 byte) decodes to at most 128 KiB.
	maxZstdRatio = 128 << 10 / 4
)

// magic opens and closes every object.
const magic = "VARVE\x00"

// blockMagic opens every block, so a ranged GET at a wrong offset fails
// with a precise error instead of a CRC mismatch.
const blockMagic = "VB"

// blockHeader is the decoded fixed header of a block.
type blockHeader struct {
	version    byte
	codec      byte
	records    uint32
	rawLen     uint32
	payloadLen uint32
	base       int64
	crc        uint32
	// minTS and maxTS of a version 3 block, from its batch headers
	// (set by decodeBlock).
	minTS, maxTS int64
}

// put writes h into b[:BlockHeaderSize], computing nothing.
func (h *blockHeader) put(b []byte) {
	_ = b[BlockHeaderSize-1]
	copy(b[0:2], blockMagic)
	b[2] = h.version
	b[3] = h.codec
	binary.LittleEndian.PutUint32(b[4:], h.records)
	binary.LittleEndian.PutUint32(b[8:], h.rawLen)
	binary.LittleEndian.PutUint32(b[12:], h.payloadLen)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.base))
	binary.LittleEndian.PutUint32(b[24:], h.crc)
}

// blockCRC is the CRC32C of a block's header fields (everything before the
// CRC) followed by its payload.
func blockCRC(hdr, payload []byte) uint32 {
	c := crc32.Update(0, wire.Castagnoli, hdr[:BlockHeaderSize-4])
	return crc32.Update(c, wire.Castagnoli, payload)
}

// appendUvarint and appendVarint write canonical (shortest) varints, the
// same as Protocol Buffers and Kafka: 7 bits a byte, low bits first; signed
// values are zigzag-encoded.
func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendVarint(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }

// appendRecord appends r's encoding with its timestamp as a delta from base.
func appendRecord(b []byte, r *Record, base int64) []byte {
	b = appendVarint(b, r.Timestamp-base) // wraps; decoding wraps back
	b = appendBytes(b, r.Key)
	b = appendBytes(b, r.Value)
	b = appendUvarint(b, uint64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		b = appendUvarint(b, uint64(len(h.Key)))
		b = append(b, h.Key...)
		b = appendBytes(b, h.Value)
	}
	return b
}

// appendBytes appends a nullable byte string: varint length (-1 for nil)
// and the bytes.
func appendBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, 1) // zigzag(-1)
	}
	b = appendVarint(b, int64(len(v)))
	return append(b, v...)
}

// recordSizeNoTimestamp is appendRecord's output size without the timestamp delta.
func recordSizeNoTimestamp(r *Record) int {
	n := bytesSize(r.Key) + bytesSize(r.Value) + wire.UvarintLen(uint64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		n += wire.UvarintLen(uint64(len(h.Key))) + len(h.Key) + bytesSize(h.Value)
	}
	return n
}

func bytesSize(v []byte) int {
	if v == nil {
		return 1
	}
	return wire.VarintLen(int64(len(v))) + len(v)
}

// maxInternedKeys bounds the per-block table that shares header key
// strings between records (header keys repeat: "content-type", "trace-id").
const maxInternedKeys = 256

// decodeRecords decodes exactly n records from buf (all of it), whose
// timestamps are deltas from base. Keys, values and header values alias buf.
// The first record's delta must be 0: writers use its timestamp as the base.
func decodeRecords(buf []byte, n int, base int64) ([]Record, string) {
	if n <= 0 {
		return nil, "block has no records"
	}
	if n > len(buf)/minRecordSize {
		return nil, "record count exceeds what the block's bytes can hold"
	}
	recs := make([]Record, n)
	var slab []Header // headers of many records, allocated in chunks
	var intern map[string]string
	r := wire.Reader{B: buf}
	for i := range recs {
		rec := &recs[i]
		d := r.Varint()
		if i == 0 && d != 0 && r.Err == "" {
			return nil, "first record's timestamp differs from the block's base timestamp"
		}
		rec.Timestamp = base + d
		if l, null := r.Length("key"); !null {
			rec.Key = r.Bytes(l)
		}
		if l, null := r.Length("value"); !null {
			rec.Value = r.Bytes(l)
		}
		nh := r.Count("header", minHeaderSize)
		if r.Err != "" {
			return nil, r.Err + " in record " + strconv.Itoa(i)
		}
		if nh == 0 {
			continue
		}
		if cap(slab)-len(slab) < nh {
			slab = make([]Header, 0, max(nh, min(64, r.Remaining()/minHeaderSize)))
		}
		start := len(slab)
		for range nh {
			kl := r.ULength("header key")
			kb := r.Bytes(kl)
			var h Header
			if s, ok := intern[string(kb)]; ok {
				h.Key = s
			} else {
				h.Key = string(kb)
				if intern == nil {
					intern = make(map[string]string)
				}
				if len(intern) < maxInternedKeys {
					intern[h.Key] = h.Key
				}
			}
			if l, null := r.Length("header value"); !null {
				h.Value = r.Bytes(l)
			}
			slab = append(slab, h)
		}
		if r.Err != "" {
			return nil, r.Err + " in record " + strconv.Itoa(i)
		}
		rec.Headers = slab[start:len(slab):len(slab)]
	}
	if r.Remaining() != 0 {
		return nil, strconv.Itoa(r.Remaining()) + " bytes of trailing garbage after the last record"
	}
	return recs, ""
}

// minMaxDelta returns max-min as an unsigned value (it always fits).
func minMaxDelta(minTS, maxTS int64) uint64 { return uint64(maxTS) - uint64(minTS) }

// addDelta returns min+d and whether it fits in an int64.
func addDelta(minTS int64, d uint64) (int64, bool) {
	if d > uint64(math.MaxInt64)-uint64(minTS) {
		return 0, false
	}
	return int64(uint64(minTS) + d), true
}

func crc32Castagnoli(b []byte) uint32 { return crc32.Checksum(b, wire.Castagnoli) }
