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
