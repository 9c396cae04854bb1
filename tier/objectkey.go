package tier

import (
	"fmt"
	"regexp"
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

// flushKeyRE matches the end of a FlushKey: the hour directory, the time,
// the node, the flush sequence and the random part.
var flushKeyRE = regexp.MustCompile(`(?:^|/)(\d{4}-\d{2}-\d{2}T\d{2})/(\d{8}T\d{6}\.\d{3}Z)-(.+)-\d+-[0-9a-f]+` + regexp.QuoteMeta(SegmentSuffix) + `$`)

// FlushKeyNode returns the node that wrote the object of an ingest flush,
// named by FlushKey, and whether key is such a name (a compacted object's
// key is not).
func FlushKeyNode(key string) (string, bool) {
	m := flushKeyRE.FindStringSubmatch(key)
	if m == nil {
		return "", false
	}
	t, err := time.Parse("20060102T150405.000Z", m[2])
	if err != nil || t.Format("2006-01-02T15") != m[1] {
		return "", false
	}
	return m[3], true
}
