package wire

import (
	"encoding/binary"
	"hash/crc32"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// MaxDecoded bounds what Decoder produces from any frame. It equals
// segment's MaxBlockRawBytes and kafkabatch's MaxBytes (package segment
// checks that at compile time).
const MaxDecoded = 256 << 20

// Castagnoli is the CRC-32C table.
var Castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Decoder is the process-wide zstd decoder for frames that declare their
// size. DecodeAll is safe for concurrent use (GOMAXPROCS at a time). Output
// is bounded twice: by MaxDecoded for any frame, and by the destination's
// capacity (WithDecodeAllCapLimit), which callers set to the declared size
// plus ZstdSlack.
var Decoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxDecoded),
		zstd.WithDecoderMaxWindow(MaxDecoded),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		panic("wire: zstd decoder: " + err.Error()) // only on invalid options
	}
	return d
})

// ZstdSlack is the spare capacity zstd's fast (unsafe-copy) path needs.
const ZstdSlack = 32

// UvarintLen is the length of v's canonical uvarint encoding.
func UvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// VarintLen is the length of v's canonical zigzag varint encoding.
func VarintLen(v int64) int { return UvarintLen(uint64(v<<1) ^ uint64(v>>63)) }

// Reader decodes varints and byte strings from B with bounds checks. The
// first failure sticks in Err (a reason, wrapped by callers) and every
// later read returns zero values.
type Reader struct {
	B   []byte
	P   int
	Err string
}

// Fail records reason (unless a failure is already recorded) and moves to
// the end.
func (r *Reader) Fail(reason string) {
	if r.Err == "" {
		r.Err = reason
	}
	r.P = len(r.B)
}

// Remaining is the number of unread bytes.
func (r *Reader) Remaining() int { return len(r.B) - r.P }

// Uvarint reads a canonical uvarint: at most 10 bytes, no overflow, no
// redundant trailing zero groups (so every value has exactly one encoding).
func (r *Reader) Uvarint() uint64 {
	if r.P < len(r.B) {
		if c := r.B[r.P]; c < 0x80 {
			r.P++
			return uint64(c)
		}
	}
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if r.P >= len(r.B) {
			r.Fail("truncated varint")
			return 0
		}
		c := r.B[r.P]
		r.P++
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				r.Fail("varint overflows 64 bits")
				return 0
			}
			if c == 0 {
				r.Fail("non-canonical varint")
				return 0
			}
			return x | uint64(c)<<s
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	r.Fail("varint overflows 64 bits")
	return 0
}

// Varint reads a canonical zigzag varint.
func (r *Reader) Varint() int64 {
	u := r.Uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

// Length reads a signed length: -1 is null, anything else must fit in the
// remaining bytes.
func (r *Reader) Length(what string) (n int, null bool) {
	v := r.Varint()
	if r.Err != "" {
		return 0, false
	}
	if v == -1 {
		return 0, true
	}
	if v < 0 {
		r.Fail(what + " length is negative")
		return 0, false
	}
	if v > int64(r.Remaining()) {
		r.Fail(what + " length exceeds the remaining bytes")
		return 0, false
	}
	return int(v), false
}

// ULength reads an unsigned length that must fit in the remaining bytes.
func (r *Reader) ULength(what string) int {
	v := r.Uvarint()
	if r.Err != "" {
		return 0
	}
	if v > uint64(r.Remaining()) {
		r.Fail(what + " length exceeds the remaining bytes")
		return 0
	}
	return int(v)
}

// Count reads a count of items that each take at least min bytes, so that
// the count is bounded by the bytes left before anything is allocated.
func (r *Reader) Count(what string, min int) int {
	v := r.Uvarint()
	if r.Err != "" {
		return 0
	}
	if v > uint64(r.Remaining()/min) {
		r.Fail(what + " count exceeds what the remaining bytes can hold")
		return 0
	}
	return int(v)
}

// Bytes returns the next n bytes, aliasing B, with capacity n so appending
// to them never overwrites what follows.
func (r *Reader) Bytes(n int) []byte {
	if r.Err != "" {
		return nil
	}
	s := r.B[r.P : r.P+n : r.P+n]
	r.P += n
	return s
}
