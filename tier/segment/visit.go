package segment

import (
	"strconv"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/varve-io/varve/tier/segment/internal/wire"
)

// RecordView is one record of a block as VisitBlock walks it. Its slices
// alias the block's decompressed bytes: they are valid only during the
// callback, and must be copied to be kept.
type RecordView struct {
	// Index is the record's position in the block; Offset its offset (the
	// base offset VisitBlock was given, plus Index and the offset gaps of
	// a sparse block so far).
	Index     int
	Offset    int64
	Timestamp int64
	// Key and Value are nil when null (distinct from empty).
	Key, Value []byte
	// NumHeaders is the number of headers; EachHeader walks them.
	NumHeaders int
	headers    []byte // the encoded headers (already checked)
	kafka      bool   // headers are in Kafka's encoding (block version 3)
}

// EachHeader calls fn with every header's key and value (nil when null),
// in order. The slices alias the block like the record's.
func (v *RecordView) EachHeader(fn func(key, value []byte)) {
	if v.kafka {
		eachKafkaHeader(v.headers, v.NumHeaders, fn)
		return
	}
	r := wire.Reader{B: v.headers}
	for range v.NumHeaders {
		kl := r.ULength("header key")
		k := r.Bytes(kl)
		var val []byte
		if l, null := r.Length("header value"); !null {
			val = r.Bytes(l)
		}
		fn(k, val)
	}
}

// HeaderBytes is the sum of the header keys' and values' lengths.
func (v *RecordView) HeaderBytes() (keys, values int) {
	v.EachHeader(func(k, val []byte) { keys += len(k); values += len(val) })
	return keys, values
}

// rawPool recycles decompression buffers of blocks up to poolMaxRaw bytes:
// VisitBlock's callers copy what they keep.
var rawPool sync.Pool

const poolMaxRaw = 16 << 20

// VisitBlock verifies one block (exactly its byte range, like DecodeBlock)
// whose index entry starts at offset base, and calls fn for each of its
// records in order, without building Records:
// the records are read straight from the decompressed bytes, which are
// recycled when VisitBlock returns. It returns the block's record count.
//
// The header, CRC and zstd frame are checked before fn is first called;
// malformed records are found as the walk reaches them, so fn may have
// seen earlier records of a block that then fails. Every format failure
// wraps ErrCorrupt; an error from fn stops the walk and is returned as is.
func VisitBlock(b []byte, base int64, fn func(r *RecordView) error) (int, error) {
	h, err := parseBlockHeader(b)
	if err != nil {
		return 0, err
	}
	payload := b[BlockHeaderSize:]
	if h.version == BatchesBlockVersion {
		i := 0
		var v RecordView
		var scratch []byte
		if p, ok := rawPool.Get().(*[]byte); ok {
			scratch = (*p)[:0]
		}
		defer func() {
			if cap(scratch) > 0 && cap(scratch) <= poolMaxRaw {
				rawPool.Put(&scratch)
			}
		}()
		_, reason, err := walkBatches(payload, int(h.records), h.base, &scratch, func(off int64, kr *kafkaRecord) error {
			v = RecordView{Index: i, Offset: base + off, Timestamp: kr.Timestamp, Key: kr.Key, Value: kr.Value,
				NumHeaders: kr.NumHeaders, headers: kr.Headers, kafka: true}
			i++
			return fn(&v)
		})
		if err != nil {
			return 0, err
		}
		if reason != "" {
			return 0, corrupt("block batches: %s", reason)
		}
		return int(h.records), nil
	}
	raw := payload
	if h.codec == codecZstd {
		var fh zstd.Header
		if err := fh.Decode(payload); err != nil {
			return 0, corrupt("zstd frame header: %v", err)
		}
		if !fh.HasFCS {
			return 0, corrupt("zstd frame does not declare its content size")
		}
		if fh.FrameContentSize != uint64(h.rawLen) {
			return 0, corrupt("zstd frame holds %d bytes, block header says %d", fh.FrameContentSize, h.rawLen)
		}
		need := int(h.rawLen) + wire.ZstdSlack
		var buf []byte
		if p, ok := rawPool.Get().(*[]byte); ok && cap(*p) >= need {
			buf = (*p)[:0:need] // the cap limit keeps the decoder's bound
		} else {
			buf = make([]byte, 0, need)
		}
		raw, err = wire.Decoder().DecodeAll(payload, buf)
		if err != nil {
			return 0, corrupt("zstd: %v", err)
		}
		if len(raw) != int(h.rawLen) {
			return 0, corrupt("zstd payload decodes to %d bytes, block header says %d", len(raw), h.rawLen)
		}
		if need <= poolMaxRaw {
			defer func() {
				full := raw[:0:cap(raw)]
				rawPool.Put(&full)
			}()
		}
	}
	var gaps []byte
	if h.version == SparseBlockVersion {
		var reason string
		if gaps, raw, reason = splitGaps(raw, int(h.records)); reason != "" {
			return 0, corrupt("block offset gaps: %s", reason)
		}
	}
	reason, err := visitRecords(raw, gaps, int(h.records), h.base, base, fn)
	if err != nil {
		return 0, err
	}
	if reason != "" {
		return 0, corrupt("block records: %s", reason)
	}
	return int(h.records), nil
}

// visitRecords walks exactly n records of buf (all of it) like
// decodeRecords, calling fn for each; gaps (nil for a dense block) holds
// the n offset gaps splitGaps checked.
func visitRecords(buf, gaps []byte, n int, baseTS, baseOff int64, fn func(*RecordView) error) (string, error) {
	if n <= 0 {
		return "block has no records", nil
	}
	if n > len(buf)/minRecordSize {
		return "record count exceeds what the block's bytes can hold", nil
	}
	r := wire.Reader{B: buf}
	g := wire.Reader{B: gaps}
	off := baseOff - 1
	var v RecordView
	for i := range n {
		off++
		if gaps != nil {
			off += int64(g.Uvarint())
		}
		v = RecordView{Index: i, Offset: off}
		d := r.Varint()
		if i == 0 && d != 0 && r.Err == "" {
			return "first record's timestamp differs from the block's base timestamp", nil
		}
		v.Timestamp = baseTS + d
		if l, null := r.Length("key"); !null {
			v.Key = r.Bytes(l)
		}
		if l, null := r.Length("value"); !null {
			v.Value = r.Bytes(l)
		}
		nh := r.Count("header", minHeaderSize)
		if r.Err != "" {
			return r.Err + " in record " + strconv.Itoa(i), nil
		}
		if nh > 0 {
			start := r.P
			for range nh {
				kl := r.ULength("header key")
				r.Bytes(kl)
				if l, null := r.Length("header value"); !null {
					r.Bytes(l)
				}
			}
			if r.Err != "" {
				return r.Err + " in record " + strconv.Itoa(i), nil
			}
			v.NumHeaders = nh
			v.headers = r.B[start:r.P:r.P]
		}
		if err := fn(&v); err != nil {
			return "", err
		}
	}
	if r.Remaining() != 0 {
		return strconv.Itoa(r.Remaining()) + " bytes of trailing garbage after the last record", nil
	}
	return "", nil
}
