package kafkabatch

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/klauspost/compress/zstd"
	"github.com/varve-io/varve/tier/segment/internal/wire"
)

// PutHeader writes h into batch[:BatchHeaderSize] with the batch's
// length and CRC computed from batch (header and records).
func PutHeader(batch []byte, h Header) {
	binary.BigEndian.PutUint64(batch[0:], uint64(h.BaseOffset))
	binary.BigEndian.PutUint32(batch[8:], uint32(len(batch)-LengthBase))
	binary.BigEndian.PutUint32(batch[12:], uint32(h.LeaderEpoch))
	batch[16] = Magic
	binary.BigEndian.PutUint16(batch[21:], uint16(h.Attributes))
	binary.BigEndian.PutUint32(batch[23:], uint32(h.LastOffsetDelta))
	binary.BigEndian.PutUint64(batch[27:], uint64(h.BaseTimestamp))
	binary.BigEndian.PutUint64(batch[35:], uint64(h.MaxTimestamp))
	binary.BigEndian.PutUint64(batch[43:], uint64(h.ProducerID))
	binary.BigEndian.PutUint16(batch[51:], uint16(h.ProducerEpoch))
	binary.BigEndian.PutUint32(batch[53:], uint32(h.BaseSequence))
	binary.BigEndian.PutUint32(batch[57:], uint32(h.RecordCount))
	binary.BigEndian.PutUint32(batch[17:], crc32.Checksum(batch[21:], wire.Castagnoli))
}

// AppendCompressed appends an uncompressed batch to dst, its records
// zstd-compressed when that is smaller (header rewritten, CRC recomputed),
// else as it is.
func AppendCompressed(dst, batch []byte, enc *zstd.Encoder) []byte {
	start := len(dst)
	dst = append(dst, batch[:BatchHeaderSize]...)
	dst = enc.EncodeAll(batch[BatchHeaderSize:], dst)
	if len(dst)-start >= len(batch) {
		return append(dst[:start], batch...)
	}
	out := dst[start:]
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-LengthBase))
	attrs := binary.BigEndian.Uint16(out[21:])&^AttrCodecMask | uint16(CompressionZstd)
	binary.BigEndian.PutUint16(out[21:], attrs)
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], wire.Castagnoli))
	return dst
}
