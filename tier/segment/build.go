package segment

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// encoderLevel is the zstd level Build uses. SpeedFastest encodes 15-40%
// faster per core than SpeedDefault on realistic JSON events for 2-3% less
// compression (BenchmarkBuild, BenchmarkCompressionRatio; figures in
// docs/segment-format.md). Readers do not depend on the level.
const encoderLevel = zstd.SpeedFastest

// encoder is the process-wide zstd encoder. EncodeAll is safe for concurrent
// use; the encoder keeps GOMAXPROCS internal states, which is what bounds
// its memory.
var encoder = sync.OnceValue(func() *zstd.Encoder { return newEncoder(encoderLevel) })

func newEncoder(level zstd.EncoderLevel) *zstd.Encoder {
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		// The block CRC32C covers the stored bytes; a second checksum of
		// the decompressed bytes would cost 4 bytes and a hash per block.
		zstd.WithEncoderCRC(false),
		// Single-segment frames always carry their content size, which
		// readers check against the block header before allocating.
		zstd.WithSingleSegment(true),
	)
	if err != nil {
		panic("segment: zstd encoder: " + err.Error()) // only on invalid options
	}
	return e
}

// Build compresses every block, in parallel over up to GOMAXPROCS goroutines
// (fewer when there is little to compress), and assembles one segment
// object: header, the blocks in the given order, footer, trailer. It returns
// the object and, for each builder in order, its BlockInfo (byte range within
// the returned object).
//
// Empty builders, negative partitions, empty or over-long topics, blocks over
// MaxBlockRawBytes and footers over MaxFooterSize are errors. Build only
// reads the builders.
func Build(blocks []*BlockBuilder) ([]byte, []BlockInfo, error) {
	return build(blocks, encoder())
}

func build(blocks []*BlockBuilder, enc *zstd.Encoder) ([]byte, []BlockInfo, error) {
	if len(blocks) == 0 {
		return nil, nil, errors.New("build segment: no blocks")
	}
	for i, b := range blocks {
		if err := checkBuilder(i, b); err != nil {
			return nil, nil, err
		}
	}

	encoded := compressAll(blocks, enc)

	infos := make([]BlockInfo, len(blocks))
	off := int64(HeaderSize)
	for i, b := range blocks {
		infos[i] = blockInfo(b, off, int64(len(encoded[i])))
		off += int64(len(encoded[i]))
	}
	return assemble(encoded, infos, off)
}

// checkBuilder refuses a block that Build must not write.
func checkBuilder(i int, b *BlockBuilder) error {
	switch {
	case b == nil:
		return fmt.Errorf("build segment: block %d is nil", i)
	case b.n == 0:
		return fmt.Errorf("build segment: block %d (%s/%d) is empty", i, b.topic, b.partition)
	case b.topic == "" || len(b.topic) > MaxTopicLen:
		return fmt.Errorf("build segment: block %d has a topic of %d bytes, want 1 to %d", i, len(b.topic), MaxTopicLen)
	case b.partition < 0:
		return fmt.Errorf("build segment: block %d (%s) has negative partition %d", i, b.topic, b.partition)
	case b.RawBytes() > MaxBlockRawBytes:
		return fmt.Errorf("build segment: block %d (%s/%d) holds %d bytes, the limit is %d", i, b.topic, b.partition, b.RawBytes(), MaxBlockRawBytes)
	case b.badGap < 0:
		return fmt.Errorf("build segment: block %d (%s/%d) has a record with offset gap %d, want >= 0", i, b.topic, b.partition, b.badGap)
	case b.n > math.MaxUint32:
		return fmt.Errorf("build segment: block %d (%s/%d) holds %d records, the limit is %d", i, b.topic, b.partition, b.n, uint32(math.MaxUint32))
	case b.span >= spanOverflow:
		return fmt.Errorf("build segment: block %d (%s/%d): its records and offset gaps span more than 2^63-1 offsets", i, b.topic, b.partition)
	}
	return nil
}

func blockInfo(b *BlockBuilder, off, length int64) BlockInfo {
	return BlockInfo{
		Topic:        b.topic,
		Partition:    b.partition,
		Offset:       off,
		Length:       length,
		Records:      int64(b.n),
		MinTimestamp: b.minTS,
		MaxTimestamp: b.maxTS,
		RawBytes:     rawBytes(b, length),
	}
}

// rawBytes is what the footer records as a block's uncompressed bytes: the
// builder's records, or for a batches block its stored payload (the
// envelope does not compress; the batches carry their own codecs).
func rawBytes(b *BlockBuilder, length int64) int64 {
	if b.batches {
		return length - BlockHeaderSize
	}
	return int64(b.RawBytes())
}

// assemble lays out header, the encoded blocks (whose total ends at end),
// footer and trailer.
func assemble(encoded [][]byte, infos []BlockInfo, end int64) ([]byte, []BlockInfo, error) {
	footer := appendFooter(nil, infos)
	if len(footer) > MaxFooterSize {
		return nil, nil, fmt.Errorf("build segment: footer of %d blocks is %d bytes, the limit is %d", len(infos), len(footer), MaxFooterSize)
	}
	if end+int64(len(footer))+TrailerSize > math.MaxInt {
		return nil, nil, fmt.Errorf("build segment: object of %d bytes is too large", end)
	}
	obj := make([]byte, 0, int(end)+len(footer)+TrailerSize)
	obj = appendHeader(obj)
	for _, e := range encoded {
		obj = append(obj, e...)
	}
	obj = append(obj, footer...)
	obj = appendTrailer(obj, footer)
	return obj, infos, nil
}

// parallelBuildBytes is the uncompressed bytes per extra goroutine: below
// it, starting and waking goroutines costs more than it saves.
const parallelBuildBytes = 256 << 10

// compressAll encodes every block, biggest first over up to GOMAXPROCS
// workers (so one large block does not start last), and returns them in
// order.
func compressAll(blocks []*BlockBuilder, enc *zstd.Encoder) [][]byte {
	out := make([][]byte, len(blocks))
	var raw int
	for _, b := range blocks {
		raw += b.RawBytes()
	}
	workers := min(runtime.GOMAXPROCS(0), len(blocks), 1+raw/parallelBuildBytes)
	if workers <= 1 {
		for i, b := range blocks {
			out[i] = encodeBlock(b, enc)
		}
		return out
	}
	order := make([]int, len(blocks))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return blocks[b].RawBytes() - blocks[a].RawBytes() })
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= len(order) {
					return
				}
				i := order[k]
				out[i] = encodeBlock(blocks[i], enc)
			}
		})
	}
	wg.Wait()
	return out
}

// encodeBlock returns one block: header and payload. The payload is zstd
// unless that is not smaller than the raw records (random or tiny data),
// then the raw records: readers skip decompression, and no block is ever
// larger than its records plus the header.
//
// A block with offset gaps is a version 2 block: its raw payload is one
// uvarint gap per record followed by the records.
func encodeBlock(b *BlockBuilder, enc *zstd.Encoder) []byte {
	if b.batches {
		return encodeBatchesBlock(b, enc)
	}
	raw, version := b.buf, byte(BlockVersion)
	if b.gaps != nil {
		raw = make([]byte, 0, len(b.gaps)+len(b.buf))
		raw = append(append(raw, b.gaps...), b.buf...)
		version = SparseBlockVersion
	}
	// Room for the worst case (incompressible data: zstd adds a few bytes,
	// then the raw records replace it), so dst never grows and copies.
	dst := make([]byte, BlockHeaderSize, BlockHeaderSize+len(raw)+len(raw)>>10+64)
	dst = enc.EncodeAll(raw, dst)
	codec := byte(codecZstd)
	if len(dst)-BlockHeaderSize >= len(raw) {
		codec = codecNone
		dst = append(dst[:BlockHeaderSize], raw...)
	}
	h := blockHeader{
		version:    version,
		codec:      codec,
		records:    uint32(b.n),
		rawLen:     uint32(len(raw)),
		payloadLen: uint32(len(dst) - BlockHeaderSize),
		base:       b.base,
	}
	h.put(dst)
	h.crc = blockCRC(dst, dst[BlockHeaderSize:])
	binary.LittleEndian.PutUint32(dst[BlockHeaderSize-4:], h.crc)
	return dst
}

func appendHeader(b []byte) []byte {
	b = append(b, magic...)
	return binary.LittleEndian.AppendUint16(b, FormatVersion)
}

func appendTrailer(b, footer []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(footer)))
	b = binary.LittleEndian.AppendUint32(b, crc32Castagnoli(footer))
	b = binary.LittleEndian.AppendUint16(b, FormatVersion)
	return append(b, magic...)
}

// appendFooter encodes the block list: a table of distinct topics in order
// of first use, then one entry per block.
func appendFooter(b []byte, infos []BlockInfo) []byte {
	var topics []string
	index := map[string]int{}
	for i := range infos {
		if _, ok := index[infos[i].Topic]; !ok {
			index[infos[i].Topic] = len(topics)
			topics = append(topics, infos[i].Topic)
		}
	}
	b = appendUvarint(b, uint64(len(topics)))
	for _, t := range topics {
		b = appendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	b = appendUvarint(b, uint64(len(infos)))
	for i := range infos {
		bi := &infos[i]
		b = appendUvarint(b, uint64(index[bi.Topic]))
		b = appendUvarint(b, uint64(bi.Partition))
		b = appendUvarint(b, uint64(bi.Offset))
		b = appendUvarint(b, uint64(bi.Length))
		b = appendUvarint(b, uint64(bi.Records))
		b = appendVarint(b, bi.MinTimestamp)
		b = appendUvarint(b, minMaxDelta(bi.MinTimestamp, bi.MaxTimestamp))
		b = appendUvarint(b, uint64(bi.RawBytes))
	}
	return b
}
