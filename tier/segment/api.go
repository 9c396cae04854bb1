package segment

import "errors"

// ErrCorrupt is wrapped by every decoding error: bad magic, unknown version,
// CRC mismatch, truncated or malformed data.
var ErrCorrupt = errors.New("corrupt segment")

// Header is a record header. A nil Value is a null header value.
type Header struct {
	Key   string
	Value []byte
}

// Record is one record as stored. A nil Key or Value is null (distinct from
// empty). Timestamp is milliseconds since the Unix epoch.
type Record struct {
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp int64
	// Gap is the number of offsets skipped right before this record:
	// offsets whose records compaction removed from a compacted topic. The
	// record's offset is the previous record's offset + 1 + Gap; the first
	// record's is the block's base offset (from the etcd index) + Gap. It is
	// 0 in every block an ingest node writes (offsets are dense); a block
	// with any non-zero Gap is written as a version 2 ("sparse") block. See
	// Offsets.
	Gap int64
}

// Offsets returns the offset of each record of a block whose index entry
// starts at base: base+i for a dense block, base plus the gaps so far for a
// sparse one.
func Offsets(base int64, recs []Record) []int64 {
	out := make([]int64, len(recs))
	off := base - 1
	for i := range recs {
		off += 1 + recs[i].Gap
		out[i] = off
	}
	return out
}

// BlockInfo locates one partition's block inside a segment object and
// summarises it. It is what the footer stores per block and what the etcd
// index entry keeps, so a reader can fetch the block with one ranged GET.
type BlockInfo struct {
	Topic     string
	Partition int32
	// Offset and Length are the block's byte range in the object, including
	// the block header.
	Offset int64
	Length int64
	// Records is the number of records in the block.
	Records int64
	// MinTimestamp and MaxTimestamp bound the records' timestamps.
	MinTimestamp int64
	MaxTimestamp int64
	// RawBytes is the uncompressed size of the block's records.
	RawBytes int64
}
