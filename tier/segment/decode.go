package segment

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"github.com/varve-io/varve/tier/segment/internal/wire"
)

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// parseBlockHeader checks a block's header against its byte range (b is the
// whole block) and its CRC, and returns the header.
func parseBlockHeader(b []byte) (blockHeader, error) {
	var h blockHeader
	if len(b) < BlockHeaderSize {
		return h, corrupt("block of %d bytes is shorter than its %d-byte header", len(b), BlockHeaderSize)
	}
	if string(b[0:2]) != blockMagic {
		return h, corrupt("bad block magic %q", b[0:2])
	}
	if b[2] != BlockVersion && b[2] != SparseBlockVersion && b[2] != BatchesBlockVersion {
		return h, corrupt("unknown block version %d (this reader knows %d, %d and %d)", b[2], BlockVersion, SparseBlockVersion, BatchesBlockVersion)
	}
	h.version = b[2]
	h.codec = b[3]
	h.records = binary.LittleEndian.Uint32(b[4:])
	h.rawLen = binary.LittleEndian.Uint32(b[8:])
	h.payloadLen = binary.LittleEndian.Uint32(b[12:])
	h.base = int64(binary.LittleEndian.Uint64(b[16:]))
	h.crc = binary.LittleEndian.Uint32(b[24:])
	payload := len(b) - BlockHeaderSize
	switch {
	case h.codec != codecNone && h.codec != codecZstd:
		return h, corrupt("unknown block codec %d", h.codec)
	case uint64(h.payloadLen) != uint64(payload):
		return h, corrupt("block header says %d payload bytes, the block range holds %d", h.payloadLen, payload)
	case h.records == 0:
		return h, corrupt("block header says 0 records")
	case h.rawLen > MaxBlockRawBytes:
		return h, corrupt("block header says %d uncompressed bytes, the limit is %d", h.rawLen, MaxBlockRawBytes)
	case h.version == BatchesBlockVersion && h.codec != codecNone:
		return h, corrupt("block version 3 with codec %d (its batches carry their own compression; the envelope must be codec 0)", h.codec)
	case h.version == BatchesBlockVersion && uint64(h.records) > uint64(h.rawLen)*kafkaMaxRecordsPerByte:
		return h, corrupt("block header says %d records in %d bytes of batches", h.records, h.rawLen)
	case h.version != BatchesBlockVersion && uint64(h.records)*uint64(h.minRecord()) > uint64(h.rawLen):
		return h, corrupt("block header says %d records in %d bytes", h.records, h.rawLen)
	case h.payloadLen > h.rawLen:
		return h, corrupt("block payload of %d bytes is larger than its %d uncompressed bytes", h.payloadLen, h.rawLen)
	case h.codec == codecNone && h.payloadLen != h.rawLen:
		return h, corrupt("uncompressed block payload of %d bytes, header says %d", h.payloadLen, h.rawLen)
	case h.codec == codecZstd && uint64(h.rawLen) > uint64(h.payloadLen)*maxZstdRatio:
		return h, corrupt("block header says %d uncompressed bytes, more than %d zstd bytes can hold", h.rawLen, h.payloadLen)
	}
	if got := blockCRC(b, b[BlockHeaderSize:]); got != h.crc {
		return h, corrupt("block CRC32C is %08x, header says %08x", got, h.crc)
	}
	return h, nil
}

// CheckBlock verifies one block's header and CRC32C, as DecodeBlock does
// before it decodes, and returns its record count, without decoding: for a
// reader that ships the stored bytes (BlockBatches checks every batch's
// CRC besides). Every failure wraps ErrCorrupt.
func CheckBlock(b []byte) (records int64, err error) {
	h, err := parseBlockHeader(b)
	if err != nil {
		return 0, err
	}
	return int64(h.records), nil
}

// DecodeBlock verifies and decodes one block from exactly its byte range
// (obj[info.Offset:info.Offset+info.Length], as a ranged GET returns it).
// The returned records alias one freshly allocated buffer, never b. Every
// failure wraps ErrCorrupt.
func DecodeBlock(b []byte) ([]Record, error) {
	_, recs, err := decodeBlock(b)
	return recs, err
}

func decodeBlock(b []byte) (blockHeader, []Record, error) {
	h, err := parseBlockHeader(b)
	if err != nil {
		return h, nil, err
	}
	payload := b[BlockHeaderSize:]
	if h.version == BatchesBlockVersion {
		// One copy, so the records never alias b.
		recs, s, reason := decodeBatchesRecords(append([]byte(nil), payload...), int(h.records), h.base)
		if reason != "" {
			return h, nil, corrupt("block batches: %s", reason)
		}
		h.minTS, h.maxTS = s.minTS, s.maxTS
		return h, recs, nil
	}
	var raw []byte
	switch h.codec {
	case codecNone:
		raw = make([]byte, len(payload))
		copy(raw, payload)
	case codecZstd:
		var fh zstd.Header
		if err := fh.Decode(payload); err != nil {
			return h, nil, corrupt("zstd frame header: %v", err)
		}
		if !fh.HasFCS {
			return h, nil, corrupt("zstd frame does not declare its content size")
		}
		if fh.FrameContentSize != uint64(h.rawLen) {
			return h, nil, corrupt("zstd frame holds %d bytes, block header says %d", fh.FrameContentSize, h.rawLen)
		}
		// The frame's content size equals rawLen (checked above) and the
		// decoder enforces it; the slack only lets the decoder use its
		// fast path, which may write up to 32 bytes past the output.
		raw, err = wire.Decoder().DecodeAll(payload, make([]byte, 0, int(h.rawLen)+wire.ZstdSlack))
		if err != nil {
			return h, nil, corrupt("zstd: %v", err)
		}
		if len(raw) != int(h.rawLen) || cap(raw) != int(h.rawLen)+wire.ZstdSlack {
			return h, nil, corrupt("zstd payload decodes to %d bytes, block header says %d", len(raw), h.rawLen)
		}
	}
	var gaps []byte
	if h.version == SparseBlockVersion {
		var reason string
		if gaps, raw, reason = splitGaps(raw, int(h.records)); reason != "" {
			return h, nil, corrupt("block offset gaps: %s", reason)
		}
	}
	recs, reason := decodeRecords(raw, int(h.records), h.base)
	if reason != "" {
		return h, nil, corrupt("block records: %s", reason)
	}
	if gaps != nil {
		r := wire.Reader{B: gaps}
		for i := range recs {
			recs[i].Gap = int64(r.Uvarint()) // verified by splitGaps
		}
	}
	return h, recs, nil
}

// minRecord is the smallest encoded record of the block's version.
func (h *blockHeader) minRecord() int {
	if h.version == SparseBlockVersion {
		return minSparseRecordSize
	}
	return minRecordSize
}

// splitGaps splits a sparse block's raw payload into its n offset gaps and
// its records. The gaps must be canonical uvarints, at least one of them
// non-zero (a block without gaps is a version 1 block), and the offsets
// they span (records plus gaps) must fit in an int64.
func splitGaps(raw []byte, n int) (gaps, records []byte, reason string) {
	r := wire.Reader{B: raw}
	var span uint64
	nonZero := false
	for i := 0; i < n; i++ {
		g := r.Uvarint()
		if r.Err != "" {
			return nil, nil, r.Err + " in gap " + strconv.Itoa(i)
		}
		if g >= spanOverflow-span-1 {
			return nil, nil, "the records and gaps span more than 2^63-1 offsets"
		}
		span += 1 + g
		nonZero = nonZero || g != 0
	}
	if !nonZero {
		return nil, nil, "sparse block without any offset gap (a dense block is version 1)"
	}
	return raw[:r.P:r.P], raw[r.P:], ""
}

// FooterSize reads the trailer (exactly the last TrailerSize bytes of an
// object) and returns the footer's length, so that a reader can GET exactly
// footer and trailer with one ranged read of the object's last
// FooterSize+TrailerSize bytes.
func FooterSize(trailer []byte) (int64, error) {
	n, _, err := parseTrailer(trailer)
	return int64(n), err
}

func parseTrailer(t []byte) (footerLen int, crc uint32, err error) {
	if len(t) != TrailerSize {
		return 0, 0, corrupt("trailer is %d bytes, want %d", len(t), TrailerSize)
	}
	if string(t[10:16]) != magic {
		return 0, 0, corrupt("bad trailer magic %q", t[10:16])
	}
	if v := binary.LittleEndian.Uint16(t[8:]); v != FormatVersion {
		return 0, 0, corrupt("unknown format version %d in trailer (this reader knows %d)", v, FormatVersion)
	}
	n := binary.LittleEndian.Uint32(t[0:])
	if n < minFooterSize || n > MaxFooterSize {
		return 0, 0, corrupt("trailer says the footer is %d bytes, want %d to %d", n, minFooterSize, MaxFooterSize)
	}
	return int(n), binary.LittleEndian.Uint32(t[4:]), nil
}

// minFooterSize is the smallest footer: one topic of one byte, one block.
const minFooterSize = 1 + 2 + 1 + minFooterEntry

// DecodeFooter parses footer and trailer (the object's last
// FooterSize+TrailerSize bytes) into BlockInfos, in object order. It checks
// the footer's CRC32C and that the blocks tile the object from the header
// on; only Decode, which has the whole object, can check that they end
// where the footer starts.
func DecodeFooter(tail []byte) ([]BlockInfo, error) {
	if len(tail) < TrailerSize {
		return nil, corrupt("object tail of %d bytes is shorter than the %d-byte trailer", len(tail), TrailerSize)
	}
	n, crc, err := parseTrailer(tail[len(tail)-TrailerSize:])
	if err != nil {
		return nil, err
	}
	if n != len(tail)-TrailerSize {
		return nil, corrupt("trailer says the footer is %d bytes, got %d", n, len(tail)-TrailerSize)
	}
	footer := tail[:n]
	if got := crc32Castagnoli(footer); got != crc {
		return nil, corrupt("footer CRC32C is %08x, trailer says %08x", got, crc)
	}
	infos, reason := parseFooter(footer)
	if reason != "" {
		return nil, corrupt("footer: %s", reason)
	}
	return infos, nil
}

func parseFooter(footer []byte) ([]BlockInfo, string) {
	r := wire.Reader{B: footer}
	nt := r.Count("topic", 2)
	if r.Err != "" {
		return nil, r.Err
	}
	if nt == 0 {
		return nil, "no topics"
	}
	topics := make([]string, nt)
	seen := make(map[string]struct{}, nt)
	for i := range topics {
		l := r.ULength("topic")
		t := string(r.Bytes(l))
		if r.Err != "" {
			return nil, r.Err
		}
		if l == 0 || l > MaxTopicLen {
			return nil, fmt.Sprintf("topic %d is %d bytes, want 1 to %d", i, l, MaxTopicLen)
		}
		if _, dup := seen[t]; dup {
			return nil, fmt.Sprintf("topic %q appears twice", t)
		}
		seen[t] = struct{}{}
		topics[i] = t
	}
	nb := r.Count("block", minFooterEntry)
	if r.Err != "" {
		return nil, r.Err
	}
	if nb == 0 {
		return nil, "no blocks"
	}
	infos := make([]BlockInfo, nb)
	used := 0 // topics are listed in order of first use
	end := int64(HeaderSize)
	for i := range infos {
		bi := &infos[i]
		ti := r.Uvarint()
		part := r.Uvarint()
		off := r.Uvarint()
		length := r.Uvarint()
		records := r.Uvarint()
		bi.MinTimestamp = r.Varint()
		tsRange := r.Uvarint()
		raw := r.Uvarint()
		if r.Err != "" {
			return nil, fmt.Sprintf("block %d: %s", i, r.Err)
		}
		switch {
		case ti > uint64(used) || ti >= uint64(nt):
			return nil, fmt.Sprintf("block %d: topic index %d, want below %d (topics listed in order of first use)", i, ti, min(used+1, nt))
		case part > math.MaxInt32:
			return nil, fmt.Sprintf("block %d: partition %d out of range", i, part)
		case off != uint64(end):
			return nil, fmt.Sprintf("block %d at offset %d, want %d (blocks tile the object)", i, off, end)
		case length <= BlockHeaderSize || length-BlockHeaderSize > raw:
			return nil, fmt.Sprintf("block %d: length %d with %d uncompressed bytes", i, length, raw)
		case records == 0 || raw > MaxBlockRawBytes || records > raw*kafkaMaxRecordsPerByte:
			return nil, fmt.Sprintf("block %d: %d records in %d uncompressed bytes", i, records, raw)
		}
		maxTS, ok := addDelta(bi.MinTimestamp, tsRange)
		if !ok {
			return nil, fmt.Sprintf("block %d: timestamp range overflows", i)
		}
		if ti == uint64(used) {
			used++
		}
		bi.Topic = topics[ti]
		bi.Partition = int32(part)
		bi.Offset = int64(off)
		bi.Length = int64(length)
		bi.Records = int64(records)
		bi.MaxTimestamp = maxTS
		bi.RawBytes = int64(raw)
		end += bi.Length // no overflow: at most 2^21 blocks of under 2^29 bytes
	}
	if used != nt {
		return nil, fmt.Sprintf("%d topics listed, %d used", nt, used)
	}
	if r.Remaining() != 0 {
		return nil, fmt.Sprintf("%d bytes of trailing garbage", r.Remaining())
	}
	return infos, ""
}

// Decode verifies a whole object: header magic and version, trailer, footer
// CRC, every block's CRC and contents (decoded in parallel over up to GOMAXPROCS
// goroutines), that every block agrees with its footer entry (records,
// uncompressed bytes, timestamp bounds), and that the footer's ranges tile
// the object exactly. It returns the footer and each block's records. Every
// failure wraps ErrCorrupt.
func Decode(obj []byte) ([]BlockInfo, [][]Record, error) {
	if len(obj) < HeaderSize+minFooterSize+TrailerSize {
		return nil, nil, corrupt("object of %d bytes is too short", len(obj))
	}
	if string(obj[:6]) != magic {
		return nil, nil, corrupt("bad header magic %q", obj[:6])
	}
	if v := binary.LittleEndian.Uint16(obj[6:]); v != FormatVersion {
		return nil, nil, corrupt("unknown format version %d (this reader knows %d)", v, FormatVersion)
	}
	fl, err := FooterSize(obj[len(obj)-TrailerSize:])
	if err != nil {
		return nil, nil, err
	}
	footerStart := int64(len(obj)) - TrailerSize - fl
	if footerStart < HeaderSize {
		return nil, nil, corrupt("footer of %d bytes does not fit in an object of %d bytes", fl, len(obj))
	}
	infos, err := DecodeFooter(obj[footerStart:])
	if err != nil {
		return nil, nil, err
	}
	last := infos[len(infos)-1]
	if end := last.Offset + last.Length; end != footerStart {
		return nil, nil, corrupt("blocks end at %d, the footer starts at %d", end, footerStart)
	}

	recs := make([][]Record, len(infos))
	errs := make([]error, len(infos))
	decodeOne := func(i int) {
		bi := &infos[i]
		h, rs, err := decodeBlock(obj[bi.Offset : bi.Offset+bi.Length])
		if err == nil {
			err = checkAgainstFooter(bi, &h, rs)
		}
		if err != nil {
			errs[i] = fmt.Errorf("block %d (%s/%d at %d+%d): %w", i, bi.Topic, bi.Partition, bi.Offset, bi.Length, err)
			return
		}
		recs[i] = rs
	}
	workers := min(runtime.GOMAXPROCS(0), len(infos), 1+int(footerStart/parallelDecodeBytes))
	if workers <= 1 {
		for i := range infos {
			if decodeOne(i); errs[i] != nil {
				return nil, nil, errs[i]
			}
		}
		return infos, recs, nil
	}
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= len(infos) {
					return
				}
				if decodeOne(i); errs[i] != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, nil, err
		}
	}
	return infos, recs, nil
}

// parallelDecodeBytes is the stored bytes per extra decoding goroutine.
const parallelDecodeBytes = 64 << 10

func checkAgainstFooter(bi *BlockInfo, h *blockHeader, recs []Record) error {
	if int64(h.records) != bi.Records {
		return corrupt("block holds %d records, the footer says %d", h.records, bi.Records)
	}
	if int64(h.rawLen) != bi.RawBytes {
		return corrupt("block holds %d uncompressed bytes, the footer says %d", h.rawLen, bi.RawBytes)
	}
	lo, hi := recs[0].Timestamp, recs[0].Timestamp
	if h.version == BatchesBlockVersion {
		lo, hi = h.minTS, h.maxTS // from the batch headers
	} else {
		for i := range recs {
			lo = min(lo, recs[i].Timestamp)
			hi = max(hi, recs[i].Timestamp)
		}
	}
	if lo != bi.MinTimestamp || hi != bi.MaxTimestamp {
		return corrupt("block timestamps span %d..%d, the footer says %d..%d", lo, hi, bi.MinTimestamp, bi.MaxTimestamp)
	}
	return nil
}
