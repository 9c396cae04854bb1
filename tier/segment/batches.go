package segment

import (
	"github.com/klauspost/compress/zstd"

	"github.com/varve-io/varve/tier/segment/internal/wire"
	"github.com/varve-io/varve/tier/segment/kafkabatch"
)

// The Kafka RecordBatch v2 codec lives in package kafkabatch; these are
// its names as package segment has always exported them, and as its own
// files use them.

const (
	// BatchHeaderSize is the size of a RecordBatch v2 header: everything
	// before the records.
	BatchHeaderSize = kafkabatch.BatchHeaderSize
	// BatchesBlockVersion is the version of a block whose payload is a
	// sequence of Kafka RecordBatch v2 batches (docs/segment-format.md).
	BatchesBlockVersion = 3
)

// Compression is a Kafka batch's compression codec (attributes bits 0-2).
type Compression = kafkabatch.Compression

// Kafka's codecs. Readers accept all five; writers in this package write
// CompressionNone and CompressionZstd only.
const (
	CompressionNone   = kafkabatch.CompressionNone
	CompressionGzip   = kafkabatch.CompressionGzip
	CompressionSnappy = kafkabatch.CompressionSnappy
	CompressionLZ4    = kafkabatch.CompressionLZ4
	CompressionZstd   = kafkabatch.CompressionZstd
)

// ErrBadBatch is wrapped by every ValidateBatches error.
var ErrBadBatch = kafkabatch.ErrBadBatch

// ErrBatchRecordTooLarge is wrapped (with ErrBadBatch) by the Strict
// ValidateBatches error of a record above BatchLimits.MaxRecordBytes.
var ErrBatchRecordTooLarge = kafkabatch.ErrBatchRecordTooLarge

// BatchLimits bounds what ValidateBatches accepts (kafkabatch.BatchLimits;
// its MaxBytes is MaxBlockRawBytes).
type BatchLimits = kafkabatch.BatchLimits

// BatchInfo describes one validated batch.
type BatchInfo = kafkabatch.BatchInfo

// BatchesInfo is what ValidateBatches found.
type BatchesInfo = kafkabatch.BatchesInfo

// ValidateBatches checks a producer-sent sequence of Kafka RecordBatch v2
// batches (the records of one partition of a Produce request) and
// summarises it, so that a node can store the bytes as they are: see
// kafkabatch.ValidateBatches. Every error wraps ErrBadBatch and names the
// batch index and the field.
func ValidateBatches(b []byte, limits BatchLimits) (BatchesInfo, error) {
	return kafkabatch.ValidateBatches(b, limits)
}

// kafkabatch bounds batches by MaxBytes, segment blocks by
// MaxBlockRawBytes, and the shared zstd decoder by wire.MaxDecoded: they
// must stay equal (a compile error otherwise).
const (
	_ = uint(MaxBlockRawBytes - kafkabatch.MaxBytes)
	_ = uint(kafkabatch.MaxBytes - MaxBlockRawBytes)
	_ = uint(MaxBlockRawBytes - wire.MaxDecoded)
	_ = uint(wire.MaxDecoded - MaxBlockRawBytes)
)

type (
	batchHeader = kafkabatch.Header
	kafkaRecord = kafkabatch.Record
)

const (
	batchLengthBase    = kafkabatch.LengthBase
	batchMagic         = kafkabatch.Magic
	minKafkaRecordSize = kafkabatch.MinRecordSize
	attrCodecMask      = kafkabatch.AttrCodecMask
	attrLogAppendTime  = kafkabatch.AttrLogAppendTime
	attrKnownForRead   = kafkabatch.AttrKnownForRead
)

func parseBatchHeader(b []byte, maxBatch int, allowed int16) (h batchHeader, field, reason string) {
	return kafkabatch.ParseHeader(b, maxBatch, allowed)
}

func decompressBatch(p []byte, c Compression, budget int, scratch []byte) ([]byte, error) {
	return kafkabatch.Decompress(p, c, budget, scratch)
}

func walkKafkaRecords(raw []byte, h *batchHeader, maxRec int, fn func(i int, r *kafkaRecord)) error {
	return kafkabatch.WalkRecords(raw, h, maxRec, fn)
}

func eachKafkaHeader(b []byte, n int, fn func(k, v []byte)) { kafkabatch.EachHeader(b, n, fn) }

func putBatchHeader(batch []byte, h batchHeader) { kafkabatch.PutHeader(batch, h) }

func appendCompressedBatch(dst, batch []byte, enc *zstd.Encoder) []byte {
	return kafkabatch.AppendCompressed(dst, batch, enc)
}

// kafkaRecordOf is kr as a Record (aliasing kr's bytes; header keys copied).
func kafkaRecordOf(kr *kafkaRecord) Record {
	r := Record{Key: kr.Key, Value: kr.Value, Timestamp: kr.Timestamp}
	if kr.NumHeaders > 0 {
		r.Headers = make([]Header, 0, kr.NumHeaders)
		eachKafkaHeader(kr.Headers, kr.NumHeaders, func(k, v []byte) {
			r.Headers = append(r.Headers, Header{Key: string(k), Value: v})
		})
	}
	return r
}
