package kafkabatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/bits"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/varve-io/varve/tier/segment/internal/wire"
)

// Kafka RecordBatch v2 ("magic 2"), as Kafka's wire protocol and log
// format define it (KIP-98). Every integer of the batch header is
// big-endian; the records use zigzag varints. Layout of the 61-byte header:
//
//	0  baseOffset           int64
//	8  batchLength          int32  bytes after this field (header 49 + records)
//	12 partitionLeaderEpoch int32
//	16 magic                int8   = 2
//	17 crc                  uint32 CRC-32C of bytes 21..end
//	21 attributes           int16
//	23 lastOffsetDelta      int32
//	27 baseTimestamp        int64
//	35 maxTimestamp         int64
//	43 producerId           int64
//	51 producerEpoch        int16
//	53 baseSequence         int32
//	57 recordCount          int32
//	61 records (compressed as a whole when the codec is not none)
const (
	// BatchHeaderSize is the size of a RecordBatch v2 header: everything
	// before the records.
	BatchHeaderSize = 61
	// LengthBase is what batchLength does not count: baseOffset and
	// batchLength itself.
	LengthBase = 12
	// Magic is the magic byte of a RecordBatch v2.
	Magic = 2
	// MinRecordSize is the smallest encoded Kafka record: length,
	// attributes, timestampDelta, offsetDelta, key length, value length,
	// header count, one byte each.
	MinRecordSize = 7
	// MaxBytes is the largest batch, and decompressed batch, this package
	// accepts: the default of every BatchLimits bound. It equals
	// segment.MaxBlockRawBytes (a segment block holds the batches).
	MaxBytes = 256 << 20
)

// Kafka batch attribute bits: the codec, the timestamp type, and the
// transactional and control flags; AttrKnownForRead are the bits a stored
// batch may have.
const (
	AttrCodecMask     = 0x07
	AttrLogAppendTime = 0x08
	AttrTransactional = 0x10
	AttrControl       = 0x20
	AttrKnownForRead  = AttrCodecMask | AttrLogAppendTime
)

// Compression is a Kafka batch's compression codec (attributes bits 0-2).
type Compression int8

// Kafka's codecs. Readers accept all five; writers in this package write
// CompressionNone and CompressionZstd only.
const (
	CompressionNone   Compression = 0
	CompressionGzip   Compression = 1
	CompressionSnappy Compression = 2
	CompressionLZ4    Compression = 3
	CompressionZstd   Compression = 4
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionGzip:
		return "gzip"
	case CompressionSnappy:
		return "snappy"
	case CompressionLZ4:
		return "lz4"
	case CompressionZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec %d", int8(c))
}

// ErrBadBatch is wrapped by every ValidateBatches error.
var ErrBadBatch = errors.New("invalid record batch")

// ErrBatchRecordTooLarge is wrapped (with ErrBadBatch) by the Strict
// ValidateBatches error of a record above BatchLimits.MaxRecordBytes.
var ErrBatchRecordTooLarge = errors.New("record too large")

// BatchLimits bounds what ValidateBatches accepts. Zero fields take the
// defaults noted.
type BatchLimits struct {
	// MaxBatchBytes bounds each batch's size as sent (header and records,
	// compressed): Kafka's max.message.bytes. 0 means MaxBytes.
	MaxBatchBytes int
	// MaxRecordBytes bounds each record's encoded size (its length
	// varint's value). Checked only in Strict mode or for uncompressed
	// batches in Strict mode; 0 means no bound beyond the batch's.
	MaxRecordBytes int
	// MaxUncompressedBytes bounds each batch's decompressed records in
	// Strict mode (the decompression-bomb guard). 0 means MaxBytes.
	MaxUncompressedBytes int
	// Strict decompresses every batch and checks each record: framing,
	// lengths, exactly recordCount records, offsetDelta = index,
	// attributes 0, header keys not null, MaxRecordBytes, and that
	// maxTimestamp is the largest record timestamp. Without it only the
	// batch headers and CRCs are checked (see ValidateBatches).
	Strict bool
	// Produced adds, in Strict mode, what Varve asks of a produced record
	// beyond Kafka's format: baseTimestamp and every record timestamp >= 0
	// (-1, Kafka's "no timestamp", is refused) and no empty header key.
	Produced bool
}

// BatchInfo describes one validated batch.
type BatchInfo struct {
	// Offset and Length are the batch's byte range in the validated input.
	Offset, Length int
	// Records is the batch's recordCount.
	Records              int
	Compression          Compression
	BaseTimestamp        int64
	MaxTimestamp         int64
	PartitionLeaderEpoch int32
	// ProducerID is -1 for a producer without idempotence.
	ProducerID    int64
	ProducerEpoch int16
	BaseSequence  int32
	// UncompressedBytes is the size of the decompressed records (Strict
	// mode, or an uncompressed batch); 0 when not known.
	UncompressedBytes int
}

// LastSequence is the sequence number of the batch's last record
// (wrapping past 2^31-1 to 0, as Kafka's sequences do), or -1 without a
// base sequence.
func (b *BatchInfo) LastSequence() int32 {
	if b.BaseSequence < 0 {
		return -1
	}
	return int32((int64(b.BaseSequence) + int64(b.Records) - 1) % (math.MaxInt32 + 1))
}

// BatchesInfo is what ValidateBatches found.
type BatchesInfo struct {
	Batches []BatchInfo
	// Records is the sum of the batches' record counts, Bytes the input's
	// size.
	Records int
	Bytes   int
	// MinTimestamp is the smallest batch baseTimestamp, MaxTimestamp the
	// largest maxTimestamp (header fields; see ValidateBatches).
	MinTimestamp, MaxTimestamp int64
}

func badBatch(i int, field, format string, args ...any) error {
	return fmt.Errorf("%w: batch %d: %s: %s", ErrBadBatch, i, field, fmt.Sprintf(format, args...))
}

// Header is a parsed RecordBatch v2 header.
type Header struct {
	BaseOffset      int64
	Length          int // whole batch, 12 + batchLength
	LeaderEpoch     int32
	CRC             uint32
	Attributes      int16
	LastOffsetDelta int32
	BaseTimestamp   int64
	MaxTimestamp    int64
	ProducerID      int64
	ProducerEpoch   int16
	BaseSequence    int32
	RecordCount     int32
}

// Codec is the batch's compression codec.
func (h *Header) Codec() Compression { return Compression(h.Attributes & AttrCodecMask) }

// ParseHeader reads and checks the header of the batch at the start of
// b (the rest of the input): framing, magic, CRC, attributes (allowed is
// the set of bits that may be set), counts and timestamps. It returns the
// failing field and reason, or "".
func ParseHeader(b []byte, maxBatch int, allowed int16) (h Header, field, reason string) {
	if len(b) < BatchHeaderSize {
		return h, "batchLength", fmt.Sprintf("%d bytes left, a batch header is %d", len(b), BatchHeaderSize)
	}
	h.BaseOffset = int64(binary.BigEndian.Uint64(b[0:]))
	bl := int32(binary.BigEndian.Uint32(b[8:]))
	switch {
	case bl < BatchHeaderSize-LengthBase:
		return h, "batchLength", fmt.Sprintf("%d, less than the %d header bytes it counts", bl, BatchHeaderSize-LengthBase)
	case int64(bl) > int64(len(b)-LengthBase):
		return h, "batchLength", fmt.Sprintf("%d runs past the end of the input (%d bytes left)", bl, len(b)-LengthBase)
	case int64(bl)+LengthBase > int64(maxBatch):
		return h, "batchLength", fmt.Sprintf("batch of %d bytes exceeds the limit of %d", int64(bl)+LengthBase, maxBatch)
	}
	h.Length = int(bl) + LengthBase
	h.LeaderEpoch = int32(binary.BigEndian.Uint32(b[12:]))
	if m := int8(b[16]); m != Magic {
		return h, "magic", fmt.Sprintf("%d, want 2 (RecordBatch v2; older message sets are not accepted)", m)
	}
	h.CRC = binary.BigEndian.Uint32(b[17:])
	if got := crc32.Checksum(b[21:h.Length], wire.Castagnoli); got != h.CRC {
		return h, "crc", fmt.Sprintf("CRC-32C of attributes..end is %08x, the batch says %08x", got, h.CRC)
	}
	h.Attributes = int16(binary.BigEndian.Uint16(b[21:]))
	h.LastOffsetDelta = int32(binary.BigEndian.Uint32(b[23:]))
	h.BaseTimestamp = int64(binary.BigEndian.Uint64(b[27:]))
	h.MaxTimestamp = int64(binary.BigEndian.Uint64(b[35:]))
	h.ProducerID = int64(binary.BigEndian.Uint64(b[43:]))
	h.ProducerEpoch = int16(binary.BigEndian.Uint16(b[51:]))
	h.BaseSequence = int32(binary.BigEndian.Uint32(b[53:]))
	h.RecordCount = int32(binary.BigEndian.Uint32(b[57:]))
	if c := h.Codec(); c > CompressionZstd {
		return h, "attributes", fmt.Sprintf("unknown compression codec %d", c)
	}
	if extra := h.Attributes &^ allowed; extra != 0 {
		switch {
		case extra&AttrControl != 0:
			return h, "attributes", "control batch (transaction markers are not accepted)"
		case extra&AttrTransactional != 0:
			return h, "attributes", "transactional batch (transactions are not supported)"
		case extra&AttrLogAppendTime != 0:
			return h, "attributes", "timestamp type LogAppendTime (set by a broker, never by a producer)"
		}
		return h, "attributes", fmt.Sprintf("unknown bits %#04x set", uint16(extra))
	}
	records := h.Length - BatchHeaderSize
	switch {
	case h.RecordCount <= 0:
		return h, "recordCount", fmt.Sprintf("%d, want at least 1", h.RecordCount)
	case h.Codec() == CompressionNone && int64(h.RecordCount) > int64(records/MinRecordSize):
		return h, "recordCount", fmt.Sprintf("%d records cannot fit in %d uncompressed bytes", h.RecordCount, records)
	case h.LastOffsetDelta < h.RecordCount-1:
		return h, "lastOffsetDelta", fmt.Sprintf("%d, less than recordCount-1 = %d", h.LastOffsetDelta, h.RecordCount-1)
	case h.MaxTimestamp < h.BaseTimestamp && h.Attributes&AttrLogAppendTime == 0:
		return h, "maxTimestamp", fmt.Sprintf("%d is before baseTimestamp %d", h.MaxTimestamp, h.BaseTimestamp)
	case h.ProducerID < -1:
		return h, "producerId", fmt.Sprintf("%d, want -1 or >= 0", h.ProducerID)
	case h.ProducerID >= 0 && h.ProducerEpoch < 0:
		return h, "producerEpoch", fmt.Sprintf("%d with producerId %d, want >= 0", h.ProducerEpoch, h.ProducerID)
	case h.BaseSequence < -1:
		return h, "baseSequence", fmt.Sprintf("%d, want -1 or >= 0", h.BaseSequence)
	case h.ProducerID >= 0 && h.BaseSequence < 0:
		return h, "baseSequence", fmt.Sprintf("%d with producerId %d, want >= 0", h.BaseSequence, h.ProducerID)
	}
	return h, "", ""
}

// ValidateBatches checks a producer-sent sequence of Kafka RecordBatch v2
// batches (the records of one partition of a Produce request) and
// summarises it, so that a node can store the bytes as they are.
//
// Checked from the headers alone, without decompressing: each batch's
// framing (batchLength at least the header, not past the input, within
// MaxBatchBytes; nothing left after the last batch), magic 2, the CRC-32C
// over attributes..end (so the records are exactly what the producer's
// library encoded), attributes (a known codec; no transactional, control
// or LogAppendTime bit, no unknown bit), recordCount >= 1,
// lastOffsetDelta = recordCount-1 (Kafka's rule for produced batches: dense
// offsets), maxTimestamp >= baseTimestamp, producerId/epoch/baseSequence
// (-1 or >= 0, epoch and sequence >= 0 with a producer id), and for an
// uncompressed batch that recordCount fits its bytes. baseOffset is not
// checked: the block builder overwrites it.
//
// Not checked without Strict: the records themselves — that they parse,
// that there are exactly recordCount of them with offsetDelta 0..n-1, their
// sizes against MaxRecordBytes, their timestamps against maxTimestamp, and
// for a compressed batch that it decompresses at all. A batch that passes
// the cheap checks but not these is refused later, by DecodeBlock, as a
// corrupt block: use Strict for producers you do not trust.
//
// Every error wraps ErrBadBatch and names the batch index and the field.
func ValidateBatches(b []byte, limits BatchLimits) (BatchesInfo, error) {
	maxBatch := limits.MaxBatchBytes
	if maxBatch <= 0 || maxBatch > MaxBytes {
		maxBatch = MaxBytes
	}
	var info BatchesInfo
	if len(b) == 0 {
		return info, fmt.Errorf("%w: no batches", ErrBadBatch)
	}
	info.Bytes = len(b)
	for p, i := 0, 0; p < len(b); i++ {
		h, field, reason := ParseHeader(b[p:], maxBatch, AttrCodecMask)
		if reason == "" && h.LastOffsetDelta != h.RecordCount-1 {
			field, reason = "lastOffsetDelta", fmt.Sprintf("%d with %d records, want recordCount-1 = %d", h.LastOffsetDelta, h.RecordCount, h.RecordCount-1)
		}
		if reason != "" {
			return BatchesInfo{}, badBatch(i, field, "%s", reason)
		}
		bi := BatchInfo{
			Offset: p, Length: h.Length, Records: int(h.RecordCount), Compression: h.Codec(),
			BaseTimestamp: h.BaseTimestamp, MaxTimestamp: h.MaxTimestamp, PartitionLeaderEpoch: h.LeaderEpoch,
			ProducerID: h.ProducerID, ProducerEpoch: h.ProducerEpoch, BaseSequence: h.BaseSequence,
		}
		if h.Codec() == CompressionNone {
			bi.UncompressedBytes = h.Length - BatchHeaderSize
		}
		if limits.Strict {
			n, err := strictCheck(b[p:p+h.Length], &h, limits)
			if err != nil {
				return BatchesInfo{}, fmt.Errorf("%w: batch %d: records: %w", ErrBadBatch, i, err)
			}
			bi.UncompressedBytes = n
		}
		if i == 0 {
			info.MinTimestamp, info.MaxTimestamp = h.BaseTimestamp, h.MaxTimestamp
		} else {
			info.MinTimestamp = min(info.MinTimestamp, h.BaseTimestamp)
			info.MaxTimestamp = max(info.MaxTimestamp, h.MaxTimestamp)
		}
		info.Records += int(h.RecordCount)
		info.Batches = append(info.Batches, bi)
		p += h.Length
	}
	return info, nil
}

// strictCheck decompresses one batch and walks its records. A zstd
// batch is decompressed into a pooled buffer (the records are checked,
// then dropped) and the records are walked once, without allocating:
// the Produced checks are made during the walk.
func strictCheck(batch []byte, h *Header, limits BatchLimits) (int, error) {
	budget := limits.MaxUncompressedBytes
	if budget <= 0 || budget > MaxBytes {
		budget = MaxBytes
	}
	if limits.Produced && h.BaseTimestamp < 0 {
		return 0, fmt.Errorf("baseTimestamp %d is negative", h.BaseTimestamp)
	}
	var raw []byte
	var err error
	if h.Codec() == CompressionZstd {
		bp, _ := strictScratch.Get().(*[]byte)
		if bp == nil {
			bp = new([]byte)
		}
		defer releaseScratch(bp)
		raw, err = unzstdPooled(batch[BatchHeaderSize:], budget, bp)
	} else {
		raw, err = Decompress(batch[BatchHeaderSize:], h.Codec(), budget, nil)
	}
	if err != nil {
		return 0, err
	}
	maxRec := limits.MaxRecordBytes
	if maxRec <= 0 {
		maxRec = math.MaxInt
	}
	return len(raw), walkRecords(raw, h, maxRec, limits.Produced, nil)
}

// Record is one record of a batch as WalkRecords reads it; its
// slices alias the decompressed records.
type Record struct {
	OffsetDelta int32
	Timestamp   int64
	Key, Value  []byte
	NumHeaders  int
	Headers     []byte // encoded headers, checked
}

// WalkRecords checks that raw holds exactly h.RecordCount records and
// calls fn for each: lengths and varints canonical and in range, record
// attributes 0, offsetDelta strictly increasing from >= 0 and ending at
// lastOffsetDelta, header keys not null, each record at most maxRec bytes,
// and (CreateTime) that the largest record timestamp is maxTimestamp.
func WalkRecords(raw []byte, h *Header, maxRec int, fn func(i int, r *Record)) error {
	return walkRecords(raw, h, maxRec, false, fn)
}

// walkRecords is WalkRecords; produced adds the checks of
// BatchLimits.Produced (record timestamps >= 0, no empty header key), and
// fn may be nil (check only).
func walkRecords(raw []byte, h *Header, maxRec int, produced bool, fn func(i int, r *Record)) error {
	n := int(h.RecordCount)
	if n > len(raw)/MinRecordSize {
		return fmt.Errorf("%d records cannot fit in %d uncompressed bytes", n, len(raw))
	}
	logAppend := h.Attributes&AttrLogAppendTime != 0
	r := wire.Reader{B: raw}
	prevDelta := int64(-1)
	var maxTS int64
	var kr Record
	for i := range n {
		l := r.Varint()
		if r.Err != "" {
			return fmt.Errorf("record %d: length: %s", i, r.Err)
		}
		if l < MinRecordSize-1 || l > int64(r.Remaining()) {
			return fmt.Errorf("record %d: length %d, want %d to the %d bytes left", i, l, MinRecordSize-1, r.Remaining())
		}
		if l+int64(wire.VarintLen(l)) > int64(maxRec) {
			return fmt.Errorf("%w: record %d: %d bytes exceed the record limit of %d", ErrBatchRecordTooLarge, i, l+int64(wire.VarintLen(l)), maxRec)
		}
		end := r.P + int(l)
		rr := wire.Reader{B: raw[:end], P: r.P}
		if a := rr.B[rr.P]; a != 0 {
			return fmt.Errorf("record %d: attributes %d, want 0", i, a)
		}
		rr.P++
		tsd := rr.Varint()
		od := rr.Varint()
		if rr.Err == "" && (od <= prevDelta || od > int64(h.LastOffsetDelta)) {
			return fmt.Errorf("record %d: offsetDelta %d, want above %d and at most lastOffsetDelta %d", i, od, prevDelta, h.LastOffsetDelta)
		}
		ts := h.BaseTimestamp + tsd // wraps like Kafka's
		if logAppend {
			ts = h.MaxTimestamp
		}
		if produced && ts < 0 && rr.Err == "" {
			return fmt.Errorf("record %d: timestamp %d is negative", i, ts)
		}
		var key, value []byte
		if l, null := rr.Length("key"); !null {
			key = rr.Bytes(l)
		}
		if l, null := rr.Length("value"); !null {
			value = rr.Bytes(l)
		}
		nh := rr.Varint()
		if rr.Err == "" && (nh < 0 || nh > int64(rr.Remaining()/2)) {
			return fmt.Errorf("record %d: header count %d, want 0 to what the %d bytes left can hold", i, nh, rr.Remaining())
		}
		start := rr.P
		for j := 0; j < int(nh) && rr.Err == ""; j++ {
			kl, null := rr.Length("header key")
			if rr.Err == "" {
				switch {
				case null:
					return fmt.Errorf("record %d: header %d: null key", i, j)
				case kl == 0 && produced:
					return fmt.Errorf("record %d: header %d has an empty key", i, j)
				}
			}
			rr.P += kl // Length checked kl against the bytes left
			if vl, null := rr.Length("header value"); !null {
				rr.P += vl
			}
		}
		if rr.Err != "" {
			return fmt.Errorf("record %d: %s", i, rr.Err)
		}
		if rr.P != end {
			return fmt.Errorf("record %d: length says %d bytes, its fields take %d", i, l, rr.P-r.P)
		}
		if i == 0 || ts > maxTS {
			maxTS = ts
		}
		prevDelta = od
		r.P = end
		if fn != nil {
			kr = Record{OffsetDelta: int32(od), Timestamp: ts, Key: key, Value: value, NumHeaders: int(nh), Headers: raw[start:end:end]}
			fn(i, &kr)
		}
	}
	if r.Remaining() != 0 {
		return fmt.Errorf("%d bytes after the last of %d records", r.Remaining(), n)
	}
	if prevDelta != int64(h.LastOffsetDelta) {
		return fmt.Errorf("last offsetDelta %d, the batch's lastOffsetDelta is %d", prevDelta, h.LastOffsetDelta)
	}
	if !logAppend && maxTS != h.MaxTimestamp {
		return fmt.Errorf("largest record timestamp %d, the batch's maxTimestamp is %d", maxTS, h.MaxTimestamp)
	}
	return nil
}

// EachHeader walks a record's checked headers.
func EachHeader(b []byte, n int, fn func(k, v []byte)) {
	r := wire.Reader{B: b}
	for range n {
		kl, _ := r.Length("header key")
		k := r.Bytes(kl)
		var v []byte
		if vl, null := r.Length("header value"); !null {
			v = r.Bytes(vl)
		}
		fn(k, v)
	}
}

// Decompression. Output is bounded by budget for every codec, before or
// while decoding, never after.

var (
	gzipPool sync.Pool
	lz4Pool  = sync.Pool{New: func() any { return lz4.NewReader(nil) }}
)

// xerialMagic starts snappy data framed as the Java client writes it.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// Decompress returns the batch's records uncompressed: the payload
// itself for CompressionNone, else a buffer of at most budget bytes — for
// zstd, scratch when it is large enough (nil: a new buffer).
func Decompress(p []byte, c Compression, budget int, scratch []byte) ([]byte, error) {
	switch c {
	case CompressionNone:
		return p, nil
	case CompressionZstd:
		return unzstd(p, budget, scratch)
	case CompressionGzip:
		zr, _ := gzipPool.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(bytes.NewReader(p))
		} else {
			err = zr.Reset(bytes.NewReader(p))
		}
		if err != nil {
			return nil, fmt.Errorf("gzip: %v", err)
		}
		defer gzipPool.Put(zr)
		return readLimited(zr, len(p)*4, budget, "gzip")
	case CompressionLZ4:
		lr := lz4Pool.Get().(*lz4.Reader)
		defer lz4Pool.Put(lr)
		lr.Reset(bytes.NewReader(p))
		return readLimited(lr, len(p)*4, budget, "lz4")
	case CompressionSnappy:
		return unsnappy(p, budget)
	}
	return nil, fmt.Errorf("unknown compression codec %d", c)
}

// strictScratch pools the buffers Strict validation decompresses zstd
// batches into (the records are checked, then dropped).
var strictScratch sync.Pool

// maxPooledScratch bounds the buffers strictScratch keeps: larger ones
// (batches of more than 8 MiB of records) are left to the GC.
const maxPooledScratch = 8 << 20

func releaseScratch(bp *[]byte) {
	if cap(*bp) <= maxPooledScratch {
		*bp = (*bp)[:0]
		strictScratch.Put(bp)
	}
}

// unzstdPooled is unzstd into *buf, which it replaces by a larger buffer
// (rounded up to a power of two, so that the pool's buffers soon fit every
// batch) when the frame declares more than it holds.
func unzstdPooled(p []byte, budget int, buf *[]byte) ([]byte, error) {
	var fh zstd.Header
	if err := fh.Decode(p); err == nil && fh.HasFCS && fh.FrameContentSize <= uint64(budget) {
		if need := int(fh.FrameContentSize) + wire.ZstdSlack; cap(*buf) < need {
			*buf = make([]byte, 0, max(64<<10, 1<<bits.Len(uint(need-1))))
		}
	}
	return unzstd(p, budget, *buf)
}

func readLimited(r io.Reader, guess, budget int, what string) ([]byte, error) {
	buf := make([]byte, 0, min(max(guess, 512), budget)+1)
	for {
		if len(buf) == cap(buf) {
			if len(buf) > budget {
				return nil, fmt.Errorf("%s: decompresses to more than the limit of %d bytes", what, budget)
			}
			nb := make([]byte, len(buf), min(2*cap(buf), budget+1))
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > budget {
			return nil, fmt.Errorf("%s: decompresses to more than the limit of %d bytes", what, budget)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", what, err)
		}
	}
}

// growDecoder decodes zstd frames that do not declare their size (Kafka
// clients stream their frames): DecodeAll grows the output as needed, up
// to MaxBytes (WithDecoderMaxMemory); unzstd then checks the
// caller's budget.
var growDecoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxBytes),
		zstd.WithDecoderMaxWindow(MaxBytes),
	)
	if err != nil {
		panic("kafkabatch: zstd decoder: " + err.Error()) // only on invalid options
	}
	return d
})

func unzstd(p []byte, budget int, scratch []byte) ([]byte, error) {
	var fh zstd.Header
	if err := fh.Decode(p); err != nil {
		return nil, fmt.Errorf("zstd frame header: %v", err)
	}
	if fh.HasFCS {
		// The declared size bounds the output before anything is
		// allocated, and the capped decoder enforces it.
		if fh.FrameContentSize > uint64(budget) {
			return nil, fmt.Errorf("zstd frame holds %d bytes, more than the limit of %d", fh.FrameContentSize, budget)
		}
		need := int(fh.FrameContentSize) + wire.ZstdSlack
		dst := scratch[:0:min(cap(scratch), need)] // the cap limit keeps the decoder's bound
		if cap(scratch) < need {
			dst = make([]byte, 0, need)
		}
		out, err := wire.Decoder().DecodeAll(p, dst)
		if err == nil {
			return out, nil
		}
		if !errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return nil, fmt.Errorf("zstd: %v", err)
		}
		// More than the first frame declares: several frames back to
		// back. Decode them all, bounded as below.
	}
	dst := scratch[:0]
	if cap(dst) < len(p)*4 {
		dst = make([]byte, 0, min(len(p)*8, budget)+wire.ZstdSlack)
	}
	out, err := growDecoder().DecodeAll(p, dst)
	if err != nil {
		return nil, fmt.Errorf("zstd: %v", err)
	}
	if len(out) > budget {
		return nil, fmt.Errorf("zstd: decompresses to more than the limit of %d bytes", budget)
	}
	return out, nil
}

func unsnappy(p []byte, budget int) ([]byte, error) {
	if !bytes.HasPrefix(p, xerialMagic) {
		return unsnappyBlock(nil, p, budget)
	}
	if len(p) < 16 {
		return nil, errors.New("snappy: truncated xerial header")
	}
	p = p[16:] // magic, version, compatible version
	var out []byte
	for len(p) > 0 {
		if len(p) < 4 {
			return nil, errors.New("snappy: truncated xerial chunk length")
		}
		n := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)) {
			return nil, fmt.Errorf("snappy: xerial chunk of %d bytes, %d left", n, len(p))
		}
		var err error
		if out, err = unsnappyBlock(out, p[:n], budget); err != nil {
			return nil, err
		}
		p = p[n:]
	}
	return out, nil
}

// unsnappyBlock appends one raw snappy block to out.
func unsnappyBlock(out, p []byte, budget int) ([]byte, error) {
	n, err := s2.DecodedLen(p)
	if err != nil {
		return nil, fmt.Errorf("snappy: %v", err)
	}
	if n > budget-len(out) {
		return nil, fmt.Errorf("snappy: decompresses to more than the limit of %d bytes", budget)
	}
	d, err := s2.Decode(make([]byte, n), p)
	if err != nil {
		return nil, fmt.Errorf("snappy: %v", err)
	}
	if out == nil {
		return d, nil
	}
	return append(out, d...), nil
}
