// Package keys is Varve's etcd key layout: every key family is spelled here
// and nowhere else (docs/metadata.md). Package metadata and its subpackages
// build and parse keys only through these names.
//
// It never talks to etcd and holds no state.
package keys

import (
	"fmt"
	"strconv"
	"strings"
)

// Root prefixes every key Varve writes.
const Root = "/varve/"

// Topic is topics/<topic>: the topic's configuration.
func Topic(topic string) string { return Root + "topics/" + topic }

// TopicsPrefix is the prefix of every topic key.
func TopicsPrefix() string { return Root + "topics/" }

// Partition is partitions/<topic>/<p>: the partition's state.
func Partition(topic string, p int32) string {
	return Root + "partitions/" + topic + "/" + strconv.Itoa(int(p))
}

// PartitionsPrefix is the prefix of a topic's partition keys.
func PartitionsPrefix(topic string) string { return Root + "partitions/" + topic + "/" }

// Index is index/<topic>/<p>/<base, 20 digits>: one index entry.
func Index(topic string, p int32, base int64) string {
	return fmt.Sprintf("%sindex/%s/%d/%020d", Root, topic, p, base)
}

// IndexPartitionPrefix is the prefix of a partition's index entries.
func IndexPartitionPrefix(topic string, p int32) string {
	return IndexTopicPrefix(topic) + strconv.Itoa(int(p)) + "/"
}

// IndexPrefix is the prefix of every index entry.
func IndexPrefix() string { return Root + "index/" }

// IndexTopicPrefix is the prefix of a topic's index entries.
func IndexTopicPrefix(topic string) string { return IndexPrefix() + topic + "/" }

// Guard is guards/<commit id>/<chunk>: a commit guard.
func Guard(commitID string, chunk int) string {
	return Root + "guards/" + commitID + "/" + strconv.Itoa(chunk)
}

// Node is nodes/<role>/<id>: a live node.
func Node(role, id string) string { return Root + "nodes/" + role + "/" + id }

// NodesPrefix is the prefix of a role's nodes.
func NodesPrefix(role string) string { return Root + "nodes/" + role + "/" }

// PlacementPrefix holds what the sequencer decides of producer placement:
// placement/writers, how many ingest nodes take the producers.
func PlacementPrefix() string { return Root + "placement/" }

// PrefixEnd returns the first key after every key with the prefix.
func PrefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return "\x00"
}

// Parsed is a decoded topic, partition or index key.
type Parsed struct {
	Kind      string // "topics", "partitions", "index"
	Topic     string
	Partition int32
	Base      int64
}

// Parse decodes a topic, partition or index key.
func Parse(k string) (Parsed, bool) {
	if !strings.HasPrefix(k, Root) {
		return Parsed{}, false
	}
	parts := strings.Split(k[len(Root):], "/")
	switch {
	case len(parts) == 2 && parts[0] == "topics":
		return Parsed{Kind: "topics", Topic: parts[1]}, true
	case len(parts) == 3 && parts[0] == "partitions":
		p, err := strconv.ParseInt(parts[2], 10, 32)
		if err != nil {
			return Parsed{}, false
		}
		return Parsed{Kind: "partitions", Topic: parts[1], Partition: int32(p)}, true
	case len(parts) == 4 && parts[0] == "index":
		p, err := strconv.ParseInt(parts[2], 10, 32)
		if err != nil {
			return Parsed{}, false
		}
		b, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil {
			return Parsed{}, false
		}
		return Parsed{Kind: "index", Topic: parts[1], Partition: int32(p), Base: b}, true
	}
	return Parsed{}, false
}

// Idempotence keys sort before index/, outside the range the cache
// watches: fetch nodes never see producer state changes.

// ProducerCounter holds the next producer id.
func ProducerCounter() string { return Root + "idem/next-producer-id" }

// ProducersPrefix is the prefix of every producer key.
func ProducersPrefix() string { return Root + "idem/producers/" }

// Producer is idem/producers/<id, 20 digits>: a producer's epoch.
func Producer(id int64) string { return fmt.Sprintf("%sidem/producers/%020d", Root, id) }

// ProducerState is idem/producers/<id>/<topic>/<p>: its sequence state.
func ProducerState(id int64, topic string, p int32) string {
	return fmt.Sprintf("%sidem/producers/%020d/%s/%d", Root, id, topic, p)
}

// Group keys, all under groups/<group>/.

// GroupPrefix is the prefix of every key of group g.
func GroupPrefix(g string) string { return Root + "groups/" + g + "/" }

// GroupsPrefix is the prefix of every group key.
func GroupsPrefix() string { return Root + "groups/" }

// GroupMeta is groups/<g>/meta: the generation and its assignment.
func GroupMeta(g string) string { return GroupPrefix(g) + "meta" }

// GroupMembersPrefix is the prefix of group g's members.
func GroupMembersPrefix(g string) string { return GroupPrefix(g) + "members/" }

// GroupMember is groups/<g>/members/<id>: a member, bound to its lease.
func GroupMember(g, id string) string { return GroupMembersPrefix(g) + id }

// GroupOffsetsPrefix is the prefix of group g's committed offsets.
func GroupOffsetsPrefix(g string) string { return GroupPrefix(g) + "offsets/" }

// GroupTopicOffsetsPrefix is the prefix of group g's offsets on topic t.
func GroupTopicOffsetsPrefix(g, t string) string { return GroupOffsetsPrefix(g) + t + "/" }

// GroupOffset is groups/<g>/offsets/<topic>/<p>: a committed offset.
func GroupOffset(g, t string, p int32) string {
	return GroupTopicOffsetsPrefix(g, t) + strconv.Itoa(int(p))
}

// ParseGroupOffset splits groups/<g>/offsets/<topic>/<p>.
func ParseGroupOffset(k string) (group, topic string, p int32, ok bool) {
	if !strings.HasPrefix(k, GroupsPrefix()) {
		return "", "", 0, false
	}
	parts := strings.Split(k[len(GroupsPrefix()):], "/")
	if len(parts) != 4 || parts[1] != "offsets" {
		return "", "", 0, false
	}
	n, err := strconv.ParseInt(parts[3], 10, 32)
	if err != nil {
		return "", "", 0, false
	}
	return parts[0], parts[2], int32(n), true
}

// Compaction keys (docs/compaction.md); both sort before index/, outside the
// watched cache's range.

// CompactionPaused is present while compaction is paused cluster-wide.
func CompactionPaused() string { return Root + "compaction/paused" }

// Claim is claims/compact/<topic>/<p>: a compactor's claim on a partition.
func Claim(topic string, p int32) string {
	return Root + "claims/compact/" + topic + "/" + strconv.Itoa(int(p))
}

// ElectionPrefix is the campaign prefix of a singleton role (the janitor).
func ElectionPrefix(name string) string { return Root + "elections/" + name }

// AccessPrefix is the prefix of the access keys (API keys and ACLs).
func AccessPrefix() string { return Root + "access/" }

// APIKey is access/keys/<id>: an API key's principal and salted hash.
func APIKey(id string) string { return AccessPrefix() + "keys/" + id }

// APIKeysPrefix is the prefix of every API key.
func APIKeysPrefix() string { return AccessPrefix() + "keys/" }

// ACL is access/acls/<id>: one ACL.
func ACL(id string) string { return AccessPrefix() + "acls/" + id }

// ACLsPrefix is the prefix of every ACL.
func ACLsPrefix() string { return AccessPrefix() + "acls/" }

// Sequencer keys (docs/metadata.md, "The sequencer"); all sort before
// index/, outside the watched cache's range.

// SeqRecordsPrefix is the prefix of every sequencer batch record.
func SeqRecordsPrefix() string { return Root + "seq/records/" }

// SeqRecord is seq/records/<batch, 20 digits>: one committed batch.
func SeqRecord(batch uint64) string { return fmt.Sprintf("%s%020d", SeqRecordsPrefix(), batch) }

// ParseSeqRecord returns the batch number of a SeqRecord key.
func ParseSeqRecord(k string) (uint64, bool) {
	if !strings.HasPrefix(k, SeqRecordsPrefix()) {
		return 0, false
	}
	n, err := strconv.ParseUint(k[len(SeqRecordsPrefix()):], 10, 64)
	return n, err == nil
}

// SeqActive is seq/active: written once by the first sequencer term;
// while it exists the direct commit path refuses to write.
func SeqActive() string { return Root + "seq/active" }

// SeqCheckpoint is seq/checkpoint: which checkpoint is current.
func SeqCheckpoint() string { return Root + "seq/checkpoint" }

// SeqCheckpointChunksPrefix is the prefix of every checkpoint chunk.
func SeqCheckpointChunksPrefix() string { return Root + "seq/checkpoints/" }

// SeqCheckpointChunk is seq/checkpoints/<batch, 20 digits>/<i>: part i of
// the checkpoint taken after batch.
func SeqCheckpointChunk(batch uint64, i int) string {
	return fmt.Sprintf("%s%020d/%d", SeqCheckpointChunksPrefix(), batch, i)
}

// SeqCheckpointBatchPrefix is the prefix of the chunks of one checkpoint.
func SeqCheckpointBatchPrefix(batch uint64) string {
	return fmt.Sprintf("%s%020d/", SeqCheckpointChunksPrefix(), batch)
}

// ProducerStatesPrefix is the prefix of producer id's state keys.
func ProducerStatesPrefix(id int64) string { return Producer(id) + "/" }

// ParseProducerState splits a ProducerState key of producer id.
func ParseProducerState(id int64, k string) (topic string, p int32, ok bool) {
	rest, found := strings.CutPrefix(k, ProducerStatesPrefix(id))
	i := strings.LastIndexByte(rest, '/')
	if !found || i <= 0 {
		return "", 0, false
	}
	n, err := strconv.ParseInt(rest[i+1:], 10, 32)
	if err != nil {
		return "", 0, false
	}
	return rest[:i], int32(n), true
}
