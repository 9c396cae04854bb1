package segment

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/klauspost/compress/zstd"
	"github.com/varve-io/varve/tier/segment/internal/wire"
)

// Blocks of version 3 ("batches blocks") hold Kafka RecordBatch v2 batches
// as they are, back to back, with baseOffset relative to the block's base
// offset (docs/segment-format.md). The block envelope does not compress:
// every batch carries its own codec.

// batchTargetBytes is the uncompressed size at which a batch builder seals
// the batch it is filling from Records and starts the next one: zstd gains
// little beyond it (4.67x at 1 MiB, 4.75x at 8 MiB) and a consumer's fetch
// of one batch stays small.
const batchTargetBytes = 1 << 20

// kafkaMaxRecordsPerByte bounds how many records one stored byte of a
// batches block can hold: a zstd frame expands at most maxZstdRatio times
// and a Kafka record is at least minKafkaRecordSize bytes.
const kafkaMaxRecordsPerByte = maxZstdRatio / minKafkaRecordSize

// NewBatchBlockBuilder returns an empty builder of a version 3 block: a
// sequence of Kafka RecordBatch v2 batches. AppendBatches adds producer
// batches as they are; Append encodes Records into batches of up to 1 MiB
// of records, compressed with zstd when that makes them smaller (sealed
// when full, the last one when the block is built).
func NewBatchBlockBuilder(topic string, partition int32) *BlockBuilder {
	return &BlockBuilder{topic: topic, partition: partition, batches: true}
}

// Batches reports whether the builder writes a version 3 block.
func (b *BlockBuilder) Batches() bool { return b.batches }

// AppendBatches appends batches that ValidateBatches accepted (info is its
// result for exactly these bytes), copying their bytes and rewriting only
// each batch's baseOffset to its position in the block (outside the batch
// CRC, so the CRC stays valid). Records appended before are sealed into a
// batch first. On error nothing is appended.
func (b *BlockBuilder) AppendBatches(batches []byte, info *BatchesInfo) error {
	if !b.batches {
		return fmt.Errorf("segment: AppendBatches on a version %d block builder (use NewBatchBlockBuilder)", BlockVersion)
	}
	if info == nil || info.Bytes != len(batches) || len(info.Batches) == 0 {
		return fmt.Errorf("segment: AppendBatches: the info does not describe these %d bytes", len(batches))
	}
	p := 0
	for i := range info.Batches {
		bi := &info.Batches[i]
		if bi.Offset != p || bi.Length < BatchHeaderSize || bi.Length > len(batches)-p ||
			int(binary.BigEndian.Uint32(batches[p+8:]))+batchLengthBase != bi.Length ||
			int32(binary.BigEndian.Uint32(batches[p+23:])) != int32(bi.Records-1) {
			return fmt.Errorf("segment: AppendBatches: batch %d does not match its info", i)
		}
		p += bi.Length
	}
	if p != len(batches) {
		return fmt.Errorf("segment: AppendBatches: the info covers %d of %d bytes", p, len(batches))
	}
	b.seal()
	start := len(b.kbuf)
	b.kbuf = growDoubling(b.kbuf, len(batches))
	b.kbuf = append(b.kbuf, batches...)
	for i := range info.Batches {
		bi := &info.Batches[i]
		binary.BigEndian.PutUint64(b.kbuf[start+bi.Offset:], uint64(b.knext))
		b.noteBatch(bi.BaseTimestamp, bi.MaxTimestamp, bi.Records)
		b.knext += int64(bi.Records)
	}
	return nil
}

// growDoubling returns b with room for n more bytes, at least doubling
// its capacity when it must grow: a block filled by appended batches
// then copies its bytes about once in all, where append's growth of
// large slices (1.25x) copies them about four times. An empty block gets
// room for just its first batches: at many partitions most blocks of a
// flush hold a batch or one more (a floor of 64 KiB made a flush at 1,000
// partitions allocate 64 MiB); a block that grows again gets at least
// 16 KiB, so a large one reaches megabytes in a few steps.
func growDoubling(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	size := max(2*cap(b), len(b)+n)
	if cap(b) > 0 {
		size = max(size, 16<<10)
	}
	// append-make: the copied bytes are not zeroed first.
	return append(b[:len(b):len(b)], make([]byte, size-len(b))...)[:len(b)]
}

// noteBatch accounts one batch's header timestamps and records.
func (b *BlockBuilder) noteBatch(baseTS, maxTS int64, records int) {
	if b.n == 0 {
		b.base, b.minTS, b.maxTS = baseTS, baseTS, maxTS
	} else {
		b.minTS = min(b.minTS, baseTS)
		b.maxTS = max(b.maxTS, maxTS)
	}
	b.n += records
}

// appendBatchRecord encodes r into the pending batch.
func (b *BlockBuilder) appendBatchRecord(r *Record) {
	if r.Gap < 0 {
		if b.badGap == 0 {
			b.badGap = r.Gap
		}
		return
	}
	if b.knext > math.MaxInt64-1-r.Gap {
		b.span = spanOverflow
		return
	}
	off := b.knext + r.Gap
	if b.kpendN > 0 && (len(b.kpend) >= batchTargetBytes || off-b.kpendBase > math.MaxInt32) {
		b.seal()
	}
	if b.kpendN == 0 {
		b.kpendBase, b.kpendFirstTS, b.kpendMaxTS = off, r.Timestamp, r.Timestamp
		if b.n == 0 {
			b.base, b.minTS, b.maxTS = r.Timestamp, r.Timestamp, r.Timestamp
		} else {
			b.minTS = min(b.minTS, r.Timestamp)
		}
	}
	b.kpendMaxTS = max(b.kpendMaxTS, r.Timestamp)
	b.maxTS = max(b.maxTS, r.Timestamp)
	b.kpendLast = int32(off - b.kpendBase)
	n := len(b.kpend)
	b.kpend = appendKafkaRecord(b.kpend, r, r.Timestamp-b.kpendFirstTS, b.kpendLast)
	b.krecBytes += len(b.kpend) - n
	b.kpendN++
	b.n++
	b.knext = off + 1
}

// seal compresses the pending records into a batch at the end of kbuf.
func (b *BlockBuilder) seal() {
	if b.kpendN == 0 {
		return
	}
	if b.klazy {
		b.kdefer = append(b.kdefer, len(b.kbuf))
	}
	b.kbuf = b.appendPending(b.kbuf, encoder(), !b.kraw && !b.klazy)
	b.kpend, b.kpendN = b.kpend[:0], 0
}

// appendPending appends the pending records as one batch (zstd when that
// is smaller and compress is set, else uncompressed).
func (b *BlockBuilder) appendPending(dst []byte, enc *zstd.Encoder, compress bool) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, BatchHeaderSize)...)
	codec := CompressionNone
	if compress {
		dst = enc.EncodeAll(b.kpend, dst)
		if len(dst)-start-BatchHeaderSize < len(b.kpend) {
			codec = CompressionZstd
		} else {
			dst = dst[:start+BatchHeaderSize]
		}
	}
	if codec == CompressionNone {
		dst = append(dst, b.kpend...)
	}
	putBatchHeader(dst[start:], batchHeader{
		BaseOffset: b.kpendBase, LeaderEpoch: -1, Attributes: int16(codec),
		LastOffsetDelta: b.kpendLast, BaseTimestamp: b.kpendFirstTS, MaxTimestamp: b.kpendMaxTS,
		ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, RecordCount: int32(b.kpendN),
	})
	return dst
}

// appendKafkaRecord appends r as a Kafka record (length, attributes 0,
// timestampDelta, offsetDelta, key, value, headers).
func appendKafkaRecord(b []byte, r *Record, tsDelta int64, offDelta int32) []byte {
	n := 1 + wire.VarintLen(tsDelta) + wire.VarintLen(int64(offDelta)) + bytesSize(r.Key) + bytesSize(r.Value) + wire.VarintLen(int64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		n += wire.VarintLen(int64(len(h.Key))) + len(h.Key) + bytesSize(h.Value)
	}
	b = appendVarint(b, int64(n))
	b = append(b, 0)
	b = appendVarint(b, tsDelta)
	b = appendVarint(b, int64(offDelta))
	b = appendBytes(b, r.Key)
	b = appendBytes(b, r.Value)
	b = appendVarint(b, int64(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		b = appendVarint(b, int64(len(h.Key)))
		b = append(b, h.Key...)
		b = appendBytes(b, h.Value)
	}
	return b
}

// batchesRawBytes is a batch builder's payload size so far (pending
// records counted uncompressed, with a batch header).
func (b *BlockBuilder) batchesRawBytes() int {
	n := len(b.kbuf)
	if b.kpendN > 0 {
		n += BatchHeaderSize + len(b.kpend)
	}
	return n
}

// encodeBatchesBlock returns a version 3 block: header and the batches,
// the pending records sealed as the last batch. It only reads b.
func encodeBatchesBlock(b *BlockBuilder, enc *zstd.Encoder) []byte {
	size := BlockHeaderSize + len(b.kbuf)
	if b.kpendN > 0 {
		size += BatchHeaderSize + len(b.kpend) + len(b.kpend)>>10 + 64
	}
	dst := make([]byte, BlockHeaderSize, size)
	dst = appendDeferred(dst, b.kbuf, b.kdefer, enc)
	if b.kpendN > 0 {
		dst = b.appendPending(dst, enc, true)
	}
	return finishBatchesBlock(dst, b.n, b.base)
}

// finishBatchesBlock fills the block header of dst (header space and
// payload).
func finishBatchesBlock(dst []byte, records int, base int64) []byte {
	n := uint32(len(dst) - BlockHeaderSize)
	h := blockHeader{version: BatchesBlockVersion, codec: codecNone, records: uint32(records), rawLen: n, payloadLen: n, base: base}
	h.put(dst)
	h.crc = blockCRC(dst, dst[BlockHeaderSize:])
	binary.LittleEndian.PutUint32(dst[BlockHeaderSize-4:], h.crc)
	return dst
}

// batchesSummary is what walking a batches block's headers found.
type batchesSummary struct {
	minTS, maxTS int64
}

// walkBatches checks a version 3 payload and calls fn for every record with
// its offset relative to the block's base (fn may be nil: headers and
// records are still checked). want is the block header's record count,
// base its base timestamp. Uncompressed records alias payload.
//
// With a scratch buffer, zstd batches are decompressed into it, one after
// the other (records are then valid only during fn), and *scratch is left
// holding the largest buffer used.
func walkBatches(payload []byte, want int, base int64, scratch *[]byte, fn func(off int64, kr *kafkaRecord) error) (batchesSummary, string, error) {
	var s batchesSummary
	next := int64(0)
	total := 0
	budget := MaxBlockRawBytes
	for p, i := 0, 0; p < len(payload); i++ {
		h, field, reason := parseBatchHeader(payload[p:], MaxBlockRawBytes, attrKnownForRead)
		if reason == "" {
			switch {
			case h.BaseOffset < next:
				field, reason = "baseOffset", fmt.Sprintf("%d, want at least %d (after the previous batch)", h.BaseOffset, next)
			case h.BaseOffset > math.MaxInt64-1-int64(h.LastOffsetDelta):
				field, reason = "baseOffset", fmt.Sprintf("%d + lastOffsetDelta %d overflows", h.BaseOffset, h.LastOffsetDelta)
			case i == 0 && h.BaseTimestamp != base:
				field, reason = "baseTimestamp", fmt.Sprintf("%d, the block header says %d", h.BaseTimestamp, base)
			case int64(total)+int64(h.RecordCount) > int64(want):
				field, reason = "recordCount", fmt.Sprintf("batches hold more than the block header's %d records", want)
			}
		}
		if reason != "" {
			return s, fmt.Sprintf("batch %d at %d: %s: %s", i, p, field, reason), nil
		}
		var buf []byte
		if scratch != nil {
			buf = *scratch
		}
		raw, err := decompressBatch(payload[p+BatchHeaderSize:p+h.Length], h.Codec(), budget, buf)
		if err != nil {
			return s, fmt.Sprintf("batch %d at %d: records: %v", i, p, err), nil
		}
		if scratch != nil && h.Codec() == CompressionZstd && cap(raw) > cap(*scratch) {
			*scratch = raw[:0]
		}
		if h.Codec() != CompressionNone {
			budget -= len(raw)
		}
		var ferr error
		err = walkKafkaRecords(raw, &h, math.MaxInt, func(_ int, kr *kafkaRecord) {
			if fn != nil && ferr == nil {
				ferr = fn(h.BaseOffset+int64(kr.OffsetDelta), kr)
			}
		})
		if ferr != nil {
			return s, "", ferr
		}
		if err != nil {
			return s, fmt.Sprintf("batch %d at %d: records: %v", i, p, err), nil
		}
		lo, hi := h.BaseTimestamp, h.MaxTimestamp
		if h.Attributes&attrLogAppendTime != 0 {
			lo = hi
		}
		if i == 0 {
			s.minTS, s.maxTS = lo, hi
		} else {
			s.minTS, s.maxTS = min(s.minTS, lo), max(s.maxTS, hi)
		}
		total += int(h.RecordCount)
		next = h.BaseOffset + int64(h.LastOffsetDelta) + 1
		p += h.Length
	}
	if total != want {
		return s, fmt.Sprintf("batches hold %d records, the block header says %d", total, want), nil
	}
	return s, "", nil
}

// decodeBatchesRecords decodes a version 3 payload into Records.
func decodeBatchesRecords(payload []byte, want int, base int64) ([]Record, batchesSummary, string) {
	recs := make([]Record, 0, min(want, len(payload)/minKafkaRecordSize+16))
	prev := int64(-1)
	var slab []Header
	s, reason, _ := walkBatches(payload, want, base, nil, func(off int64, kr *kafkaRecord) error {
		r := Record{Key: kr.Key, Value: kr.Value, Timestamp: kr.Timestamp, Gap: off - prev - 1}
		prev = off
		if kr.NumHeaders > 0 {
			if cap(slab)-len(slab) < kr.NumHeaders {
				slab = make([]Header, 0, max(kr.NumHeaders, 64))
			}
			start := len(slab)
			eachKafkaHeader(kr.Headers, kr.NumHeaders, func(k, v []byte) {
				slab = append(slab, Header{Key: string(k), Value: v})
			})
			r.Headers = slab[start:len(slab):len(slab)]
		}
		recs = append(recs, r)
		return nil
	})
	if reason != "" {
		return nil, s, reason
	}
	return recs, s, ""
}

// BlockBatches appends to dst the Kafka RecordBatch v2 batches of one
// block (exactly its byte range, as DecodeBlock takes it) whose index
// entry starts at offset base, with every batch's baseOffset made
// absolute (base + the stored relative offset): what a Kafka Fetch
// response carries. The batch CRCs stay valid (baseOffset is outside
// them).
//
// A version 3 block is checked (block header, block CRC, every batch
// header and CRC, relative offsets; records are not decompressed — Kafka
// clients check the batch CRCs themselves) and its bytes are copied as
// they are. A version 1 or 2 block is decoded and re-encoded as batches of
// up to 1 MiB of records, zstd-compressed where that is smaller. Every
// format failure wraps ErrCorrupt.
func BlockBatches(dst, block []byte, base int64) ([]byte, error) {
	h, err := parseBlockHeader(block)
	if err != nil {
		return nil, err
	}
	if h.version != BatchesBlockVersion {
		recs, err := DecodeBlock(block)
		if err != nil {
			return nil, err
		}
		bb := NewBatchBlockBuilder("", 0)
		for i := range recs {
			bb.Append(recs[i])
		}
		if bb.badGap != 0 || bb.span >= spanOverflow {
			return nil, corrupt("block offsets do not fit")
		}
		block = encodeBatchesBlock(bb, encoder())
	}
	payload := block[BlockHeaderSize:]
	start := len(dst)
	next := int64(0)
	for p, i := 0, 0; p < len(payload); i++ {
		bh, field, reason := parseBatchHeader(payload[p:], MaxBlockRawBytes, attrKnownForRead)
		if reason == "" && bh.BaseOffset < next {
			field, reason = "baseOffset", fmt.Sprintf("%d, want at least %d", bh.BaseOffset, next)
		}
		if reason == "" && (bh.BaseOffset > math.MaxInt64-1-int64(bh.LastOffsetDelta)-base || base < 0) {
			field, reason = "baseOffset", fmt.Sprintf("%d + base %d overflows", bh.BaseOffset, base)
		}
		if reason != "" {
			return dst[:start], corrupt("block batches: batch %d at %d: %s: %s", i, p, field, reason)
		}
		next = bh.BaseOffset + int64(bh.LastOffsetDelta) + 1
		p += bh.Length
	}
	dst = append(dst, payload...)
	for p := start; p < len(dst); {
		binary.BigEndian.PutUint64(dst[p:], uint64(base+int64(binary.BigEndian.Uint64(dst[p:]))))
		p += int(binary.BigEndian.Uint32(dst[p+8:])) + batchLengthBase
	}
	return dst, nil
}

// BatchEncodedSize is EncodedSize for a record appended to a batch builder
// (NewBatchBlockBuilder), for memory accounting: it never undercounts the
// record's Kafka encoding (length varint, attributes, timestampDelta,
// offsetDelta, zigzag header lengths). EncodedSize alone can undercount it
// by up to 12 bytes plus one per header.
func BatchEncodedSize(r Record) int {
	return EncodedSize(r) + binary.MaxVarintLen32 + 1 + binary.MaxVarintLen32 + 1 + len(r.Headers)
}

// AppendBatchesRecords appends the records of batches that ValidateBatches
// accepted in Strict mode (info is its result for exactly these bytes) to
// the batch being filled, as Append would, instead of storing the batches
// as they are: their baseOffsets are ignored and the records get the next
// offsets, so small batches of many requests are compressed together when
// the block is built. It decodes every record: use it for small batches.
// On error nothing is appended.
func (b *BlockBuilder) AppendBatchesRecords(batches []byte, info *BatchesInfo) error {
	if !b.batches {
		return fmt.Errorf("segment: AppendBatchesRecords on a version %d block builder (use NewBatchBlockBuilder)", BlockVersion)
	}
	if info == nil || info.Bytes != len(batches) || len(info.Batches) == 0 {
		return fmt.Errorf("segment: AppendBatchesRecords: the info does not describe these %d bytes", len(batches))
	}
	var recs []Record
	for i := range info.Batches {
		bi := &info.Batches[i]
		if bi.Offset < 0 || bi.Length < BatchHeaderSize || bi.Offset > len(batches)-bi.Length {
			return fmt.Errorf("segment: AppendBatchesRecords: batch %d does not match its info", i)
		}
		batch := batches[bi.Offset : bi.Offset+bi.Length]
		h, field, reason := parseBatchHeader(batch, MaxBlockRawBytes, attrCodecMask)
		if reason != "" {
			return fmt.Errorf("segment: AppendBatchesRecords: batch %d: %s: %s", i, field, reason)
		}
		raw, err := decompressBatch(batch[BatchHeaderSize:], h.Codec(), MaxBlockRawBytes, nil)
		if err != nil {
			return fmt.Errorf("segment: AppendBatchesRecords: batch %d: %v", i, err)
		}
		err = walkKafkaRecords(raw, &h, math.MaxInt, func(_ int, kr *kafkaRecord) {
			recs = append(recs, kafkaRecordOf(kr))
		})
		if err != nil {
			return fmt.Errorf("segment: AppendBatchesRecords: batch %d: %v", i, err)
		}
	}
	for i := range recs {
		b.Append(recs[i])
	}
	return nil
}

// DeferCompression makes the builder seal the batches it encodes from
// Records uncompressed and compress them when the block is built (Build
// runs outside the caller's locks, over several cores), instead of in
// Append. Call it before the first Append.
func (b *BlockBuilder) DeferCompression() { b.klazy = true }

// appendDeferred appends kbuf to dst, compressing with zstd (when smaller)
// the uncompressed batches that start at the offsets in deferred.
func appendDeferred(dst, kbuf []byte, deferred []int, enc *zstd.Encoder) []byte {
	p := 0
	for _, at := range deferred {
		dst = append(dst, kbuf[p:at]...)
		n := int(binary.BigEndian.Uint32(kbuf[at+8:])) + batchLengthBase
		dst = appendCompressedBatch(dst, kbuf[at:at+n], enc)
		p = at + n
	}
	return append(dst, kbuf[p:]...)
}
