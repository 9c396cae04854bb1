package metadata

import "github.com/varve-io/varve/metadata/internal/keys"

// The key layout is spelled in metadata/internal/keys (shared with
// metadata's subpackages); these are this package's short names for it.
const root = keys.Root

var (
	topicKey             = keys.Topic
	topicsPrefix         = keys.TopicsPrefix
	partitionKey         = keys.Partition
	partitionsPrefix     = keys.PartitionsPrefix
	indexKey             = keys.Index
	indexPartitionPrefix = keys.IndexPartitionPrefix
	indexPrefix          = keys.IndexPrefix
	indexTopicPrefix     = keys.IndexTopicPrefix
	guardKey             = keys.Guard
	nodeKey              = keys.Node
	nodesPrefix          = keys.NodesPrefix
	prefixEnd            = keys.PrefixEnd
	producerCounterKey   = keys.ProducerCounter
	producersPrefix      = keys.ProducersPrefix
	producerKey          = keys.Producer
	producerStateKey     = keys.ProducerState
)

// parsedKey is a decoded topic, partition or index key.
type parsedKey struct {
	kind      string // "topics", "partitions", "index"
	topic     string
	partition int32
	base      int64
}

func parseKey(k string) (parsedKey, bool) {
	p, ok := keys.Parse(k)
	return parsedKey{kind: p.Kind, topic: p.Topic, partition: p.Partition, base: p.Base}, ok
}
