package kafkabatch

import (
	"encoding/binary"
	"hash/crc32"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// What the codec needs of package segment's format helpers, copied so that
// this package depends on nothing of Varve's.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// decoder decodes zstd frames that declare their size: output is bounded by
// MaxBytes for any frame, and by the destination's capacity
// (WithDecodeAllCapLimit), which unzstd sets to the declared size.
var decoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxBytes),
		zstd.WithDecoderMaxWindow(MaxBytes),
		zstd.WithDecodeAllCapLimit(true),
	)
	if err != nil {
		panic("kafkabatch: zstd decoder: " + err.Error()) // only on invalid options
	}
	return d
})

// zstdSlack is the spare capacity zstd's fast (unsafe-copy) path needs.
const zstdSlack = 32

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int { return uvarintLen(uint64(v<<1) ^ uint64(v>>63)) }

// reader decodes varints and byte strings from b with bounds checks. The
// first failure sticks in err (a reason, wrapped by callers)
// and every later read returns zero values.
type reader struct {
	b   []byte
	p   int
	err string
}

func (r *reader) fail(reason string) {
	if r.err == "" {
		r.err = reason
	}
	r.p = len(r.b)
}

func (r *reader) remaining() int { return len(r.b) - r.p }

// uvarint reads a canonical uvarint: at most 10 bytes, no overflow, no
// redundant trailing zero groups (so every value has exactly one encoding).
func (r *reader) uvarint() uint64 {
	if r.p < len(r.b) {
		if c := r.b[r.p]; c < 0x80 {
			r.p++
			return uint64(c)
		}
	}
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if r.p >= len(r.b) {
			r.fail("truncated varint")
			return 0
		}
		c := r.b[r.p]
		r.p++
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				r.fail("varint overflows 64 bits")
				return 0
			}
			if c == 0 {
				r.fail("non-canonical varint")
				return 0
			}
			return x | uint64(c)<<s
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	r.fail("varint overflows 64 bits")
	return 0
}

// varint reads a canonical zigzag varint.
func (r *reader) varint() int64 {
	u := r.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

// length reads a signed length: -1 is null, anything else must fit in the
// remaining bytes.
func (r *reader) length(what string) (n int, null bool) {
	v := r.varint()
	if r.err != "" {
		return 0, false
	}
	if v == -1 {
		return 0, true
	}
	if v < 0 {
		r.fail(what + " length is negative")
		return 0, false
	}
	if v > int64(r.remaining()) {
		r.fail(what + " length exceeds the remaining bytes")
		return 0, false
	}
	return int(v), false
}

// bytes returns the next n bytes, aliasing b, with capacity n so appending
// to them never overwrites what follows.
func (r *reader) bytes(n int) []byte {
	if r.err != "" {
		return nil
	}
	s := r.b[r.p : r.p+n : r.p+n]
	r.p += n
	return s
}
