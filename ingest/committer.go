package ingest

import (
	"context"
	"time"

	"github.com/varve-io/varve/metadata"
)

// Committer is what the write path needs of metadata: commit flushed
// blocks to the index, read a topic, and read or start producers'
// idempotence state. *metadata.Client is one; tests wrap it (count
// commits, fail one) as they wrap tier.Store.
type Committer interface {
	Commit(ctx context.Context, commitID string, appends []metadata.Append) ([]metadata.AppendResult, error)
	GetTopic(ctx context.Context, name string) (metadata.Topic, error)
	InitProducer(ctx context.Context, id int64, ttl time.Duration) (metadata.Producer, error)
	// AdvanceProducerEpoch moves a producer to a newer epoch its client
	// chose (metadata.Client.AdvanceProducerEpoch).
	AdvanceProducerEpoch(ctx context.Context, id int64, epoch int32) (metadata.Producer, error)
	// ReadProducer reads a producer's identity and its states on
	// partitions of topic, for a batch of epoch. Unless fresh, a reader may
	// answer from an identity it holds that is not older than epoch, and
	// marks the view Held: the caller then only accepts batches on it and
	// asks again, fresh, before it refuses one or answers a duplicate.
	ReadProducer(ctx context.Context, id int64, epoch int32, fresh bool, topic string, partitions []int32) (*metadata.ProducerView, error)
}

var _ Committer = (*metadata.Client)(nil)

// RetryCounter is a Committer that counts the attempts it made again:
// the direct path's transactions that lost to a concurrent commit and
// were reread, the sequencer client's calls repeated after a leader was
// lost or busy. The ingester exports it as varve.ingest.commit.retries.
type RetryCounter interface {
	CommitRetries() int64
}
