package metadata

import (
	"fmt"
	"strconv"
	"strings"
)

const root = "/varve/"

func topicKey(topic string) string { return root + "topics/" + topic }

func topicsPrefix() string { return root + "topics/" }

func partitionKey(topic string, p int32) string {
	return root + "partitions/" + topic + "/" + strconv.Itoa(int(p))
}

func partitionsPrefix(topic string) string { return root + "partitions/" + topic + "/" }

func indexKey(topic string, p int32, base int64) string {
	return fmt.Sprintf("%sindex/%s/%d/%020d", root, topic, p, base)
}

func indexPartitionPrefix(topic string, p int32) string {
	return indexTopicPrefix(topic) + strconv.Itoa(int(p)) + "/"
}

func indexPrefix() string { return root + "index/" }

func indexTopicPrefix(topic string) string { return indexPrefix() + topic + "/" }

func guardKey(commitID string, chunk int) string {
	return root + "guards/" + commitID + "/" + strconv.Itoa(chunk)
}

func nodeKey(role, id string) string { return root + "nodes/" + role + "/" + id }

func nodesPrefix(role string) string { return root + "nodes/" + role + "/" }

// prefixEnd returns the first key after every key with the prefix.
func prefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00"
}

// parsedKey is a decoded partition or index key.
type parsedKey struct {
	kind      string // "topics", "partitions", "index"
	topic     string
	partition int32
	base      int64
}

func parseKey(k string) (parsedKey, bool) {
	if !strings.HasPrefix(k, root) {
		return parsedKey{}, false
	}
	parts := strings.Split(k[len(root):], "/")
	switch {
	case len(parts) == 2 && parts[0] == "topics":
		return parsedKey{kind: "topics", topic: parts[1]}, true
	case len(parts) == 3 && parts[0] == "partitions":
		p, err := strconv.ParseInt(parts[2], 10, 32)
		if err != nil {
			return parsedKey{}, false
		}
		return parsedKey{kind: "partitions", topic: parts[1], partition: int32(p)}, true
	case len(parts) == 4 && parts[0] == "index":
		p, err := strconv.ParseInt(parts[2], 10, 32)
		if err != nil {
			return parsedKey{}, false
		}
		b, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil {
			return parsedKey{}, false
		}
		return parsedKey{kind: "index", topic: parts[1], partition: int32(p), base: b}, true
	}
	return parsedKey{}, false
}

// Idempotence keys sort before index/, outside the range the cache
// watches: fetch nodes never see producer state changes.

func producerCounterKey() string { return root + "idem/next-producer-id" }

func producersPrefix() string { return root + "idem/producers/" }

func producerKey(id int64) string { return fmt.Sprintf("%sidem/producers/%020d", root, id) }

func producerStateKey(id int64, topic string, p int32) string {
	return fmt.Sprintf("%sidem/producers/%020d/%s/%d", root, id, topic, p)
}

// Group keys, all under groups/<group>/.
func groupPrefix(g string) string        { return root + "groups/" + g + "/" }
func groupsPrefix() string               { return root + "groups/" }
func groupMetaKey(g string) string       { return groupPrefix(g) + "meta" }
func groupMembersPrefix(g string) string { return groupPrefix(g) + "members/" }
func groupMemberKey(g, id string) string { return groupMembersPrefix(g) + id }
func groupOffsetsPrefix(g string) string { return groupPrefix(g) + "offsets/" }
func groupTopicOffsetsPrefix(g, t string) string {
	return groupOffsetsPrefix(g) + t + "/"
}
func groupOffsetKey(g, t string, p int32) string {
	return groupTopicOffsetsPrefix(g, t) + strconv.Itoa(int(p))
}

// Compaction keys (docs/compaction.md); both sort before index/, outside the
// watched cache's range.
func compactionPausedKey() string { return root + "compaction/paused" }

func claimKey(topic string, p int32) string {
	return root + "claims/compact/" + topic + "/" + strconv.Itoa(int(p))
}

// electionPrefix is the campaign prefix of a singleton role (the janitor).
func electionPrefix(name string) string { return root + "elections/" + name }
