package sequencer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

// Dialer returns the Service of the node that campaigned with id.
type Dialer func(ctx context.Context, id string) (Service, error)

// Client is what an ingest node commits through when the sequencer is on:
// it implements ingest.Committer by sending each flush's manifest to the
// current leader, and retries against whichever node leads next when the
// leader is lost (same commit id, so a retry is answered as the first
// attempt). Topics and producer identities are read from etcd as before.
type Client struct {
	meta *metadata.Client
	log  *seqlog.Log
	dial Dialer
	// MaxCommitTime bounds one Commit's retries (default 60 s, as the
	// direct path).
	MaxCommitTime time.Duration

	retries atomic.Int64
	// leader is the id of the leader the last call reached (nil: read it
	// from etcd at the next call). A call that fails retriably forgets it:
	// the leader may have changed, and the next attempt reads etcd again.
	leader atomic.Pointer[string]
	// leaderOf reads the leader's id from etcd (a test counts the reads).
	leaderOf func(context.Context) (string, error)
}

// CommitRetries counts the calls made again after a retriable failure
// (ingest.RetryCounter).
func (c *Client) CommitRetries() int64 { return c.retries.Load() }

// NewClient returns a client over meta's etcd that reaches leaders
// through dial.
func NewClient(meta *metadata.Client, dial Dialer) *Client {
	c := &Client{meta: meta, log: seqlog.New(meta), dial: dial, MaxCommitTime: 60 * time.Second}
	c.leaderOf = c.log.Leader
	return c
}

// Commit sends the flush to the leader and waits for its batch to be
// written. Past MaxCommitTime with no answer, every result is
// metadata.ErrCommitUnknown, as with the direct path.
func (c *Client) Commit(ctx context.Context, commitID string, appends []metadata.Append) ([]metadata.AppendResult, error) {
	if err := metadata.ValidateAppends(commitID, appends); err != nil {
		return nil, err
	}
	var res []metadata.AppendResult
	err := c.retry(ctx, func(ctx context.Context, svc Service) (err error) {
		res, err = svc.Commit(ctx, commitID, appends)
		return err
	})
	if err != nil && isRetriable(err) {
		res = make([]metadata.AppendResult, len(appends))
		for i, a := range appends {
			res[i] = metadata.AppendResult{Base: -1, Err: fmt.Errorf("%s/%d: %w", a.Topic, a.Partition, metadata.ErrCommitUnknown)}
		}
	}
	return res, err
}

// ReadProducer asks the leader for the producer's identity and states; epoch
// is the requesting batch's (the leader rereads an identity older than it).
func (c *Client) ReadProducer(ctx context.Context, id int64, epoch int32, fresh bool, topic string, partitions []int32) (*metadata.ProducerView, error) {
	var v *metadata.ProducerView
	err := c.retry(ctx, func(ctx context.Context, svc Service) (err error) {
		v, err = svc.ReadProducer(ctx, id, epoch, fresh, topic, partitions)
		return err
	})
	return v, err
}

// GetTopic reads a topic from etcd.
func (c *Client) GetTopic(ctx context.Context, name string) (metadata.Topic, error) {
	return c.meta.GetTopic(ctx, name)
}

// InitProducer issues a producer identity in etcd; the leader reads it
// (fenced) when the producer's first batch arrives.
func (c *Client) InitProducer(ctx context.Context, id int64, ttl time.Duration) (metadata.Producer, error) {
	return c.meta.InitProducer(ctx, id, ttl)
}

// AdvanceProducerEpoch moves a producer to a newer epoch in etcd, as
// InitProducer issues one; the leader reads it when a batch of that epoch
// arrives.
func (c *Client) AdvanceProducerEpoch(ctx context.Context, id int64, epoch int32) (metadata.Producer, error) {
	return c.meta.AdvanceProducerEpoch(ctx, id, epoch)
}

// retry calls call on the current leader until it answers with something
// other than a retriable error, or MaxCommitTime passes. An etcd outage is
// not waited out, as on the direct path (metadata.Client.Commit): once
// etcd has not answered for its request timeout, the last error is
// returned (a commit's outcome is then unknown: the ingest node answers
// UNAVAILABLE and the producer retries). That is at once when a request
// timed out (metadata.ErrUnavailable), this client's reading the leader
// or the leader's own write: either has waited out etcd already, and a
// retry would read the election from etcd for another timeout.
func (c *Client) retry(ctx context.Context, call func(context.Context, Service) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.MaxCommitTime)
	defer cancel()
	backoff := 2 * time.Millisecond
	var unavailableSince time.Time // the current run of etcd failures began
	for {
		attemptStart := time.Now()
		var readBy time.Time
		if !unavailableSince.IsZero() {
			readBy = unavailableSince.Add(c.meta.RequestTimeout())
		}
		err := c.once(ctx, call, readBy)
		if err == nil || !isRetriable(err) {
			return err
		}
		if errors.Is(err, metadata.ErrUnavailable) {
			c.meta.SuspectUnavailable(attemptStart)
			return err
		}
		// An attempt that failed after the request timeout counts as
		// etcd's outage too: the leader it reached waited out etcd for
		// it (its answer says "outcome unknown" or "not leader", not
		// "etcd unavailable").
		// One that took half of it starts the count too: the leader may
		// have waited out most of the timeout for etcd just before this
		// call reached it, and the next attempt's read of the leader must
		// not wait a whole timeout more (readBy).
		if limit := c.meta.RequestTimeout(); metadata.IsUnavailable(err) || time.Since(attemptStart) >= limit/2 {
			if unavailableSince.IsZero() {
				unavailableSince = attemptStart
			}
			if time.Since(unavailableSince) >= limit || c.meta.Unreachable() >= limit {
				// The commits queued behind this one read the leader
				// from etcd next: they should not each wait the whole
				// request timeout for it (a produce would wait
				// several timeouts).
				c.meta.SuspectUnavailable(unavailableSince)
				return err
			}
		} else {
			unavailableSince = time.Time{}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		c.retries.Add(1)
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// once makes one call on the leader; when it has to read the leader from
// etcd, the read ends by readBy (zero: no bound but ctx's).
//
// The leader's id is read from etcd once and kept while calls to it
// succeed (an etcd read per commit from every ingest node was most of
// etcd's reads); a node that no longer leads refuses the call (ErrNotLeader
// or, for a deposed leader that does not know it yet, seqlog.ErrStale when
// its term's write is fenced), so a kept id is never trusted for more than
// routing.
func (c *Client) once(ctx context.Context, call func(context.Context, Service) error, readBy time.Time) error {
	kept := c.leader.Load()
	var id string
	if kept != nil {
		id = *kept
	} else {
		rctx := ctx
		if !readBy.IsZero() {
			var cancel context.CancelFunc
			rctx, cancel = context.WithDeadline(ctx, readBy)
			defer cancel()
		}
		var err error
		if id, err = c.leaderOf(rctx); err != nil {
			if ctx.Err() == nil && rctx.Err() != nil {
				// The run of etcd failures reached the request timeout.
				return fmt.Errorf("read sequencer leader: %w: etcd did not answer for %v", metadata.ErrUnavailable, c.meta.RequestTimeout())
			}
			return err
		}
		kept = &id
		c.leader.Store(kept)
	}
	svc, err := c.dial(ctx, id)
	if err != nil {
		err = fmt.Errorf("%w: dial sequencer %s: %w", ErrNotLeader, id, err)
	} else {
		err = call(ctx, svc)
	}
	if err != nil && isRetriable(err) {
		c.leader.CompareAndSwap(kept, nil)
	}
	return err
}
