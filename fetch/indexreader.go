package fetch

import (
	"context"

	"github.com/varve-io/varve/metadata"
)

// IndexReader is what the read path reads of metadata past its watched
// cache: topics, an index lookup when the cache is behind, and partition
// states. *metadata.Client is one; tests can wrap it as they wrap
// tier.Store.
type IndexReader interface {
	GetTopic(ctx context.Context, name string) (metadata.Topic, error)
	ListTopics(ctx context.Context) ([]metadata.Topic, error)
	LookupIndex(ctx context.Context, topic string, p int32, offset int64) (e metadata.IndexEntry, st metadata.PartitionState, found bool, rev int64, err error)
	PartitionStates(ctx context.Context, topic string) (map[int32]metadata.PartitionState, error)
}

var _ IndexReader = (*metadata.Client)(nil)
