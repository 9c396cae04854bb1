package tier

import (
	"fmt"
	"strings"
	"time"

	"github.com/varve-io/varve/internal/randhex"
)

// SegmentSuffix ends the key of every segment object, and only of those:
// garbage collection deletes unreferenced objects whose keys end with it and
// never touches anything else in the bucket. This file is the one place that
// names segment objects.
const SegmentSuffix = ".vseg"

// IsSegmentKey reports whether key names a segment object.
func IsSegmentKey(key string) bool { return strings.HasSuffix(key, SegmentSuffix) }

// FlushKey names the object of one ingest flush: prefix, the hour (so a
// listing by prefix finds a time range), the time to the millisecond, the
// node, its flush sequence and a random part, so two nodes or two runs of one
// node never name the same object.
func FlushKey(prefix, nodeID string, flush uint64, now time.Time) string {
	now = now.UTC()
	return fmt.Sprintf("%s%s/%s-%s-%d-%s%s", prefix, now.Format("2006-01-02T15"),
		now.Format("20060102T150405.000Z"), nodeID, flush, randhex.String(4), SegmentSuffix)
}

// CompactedKey names an object compaction writes at level for the offsets
// [start, end) of one partition.
func CompactedKey(level int, topic string, partition int32, start, end int64, nodeID string) string {
	return fmt.Sprintf("l%d/%s/%d/%020d-%020d-%s-%s%s", level, topic, partition, start, end, nodeID, randhex.String(4), SegmentSuffix)
}
