package compaction

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// Compaction state in etcd (docs/compaction.md):
//
//	compaction/paused                    present: compactors start no new work
//	claims/compact/<topic>/<p>           node id of the compactor working on
//	                                     the partition, bound to its lease
//
// Both sort before index/, outside the watched cache's range.

// SetPaused pauses (or resumes) compaction cluster-wide:
// compactors start no new partition while the key exists and finish or
// abandon the one in progress before its swap.
func (c *Client) SetPaused(ctx context.Context, paused bool) error {
	var err error
	if paused {
		_, err = c.cli.Put(ctx, keys.CompactionPaused(), time.Now().UTC().Format(time.RFC3339))
	} else {
		_, err = c.cli.Delete(ctx, keys.CompactionPaused())
	}
	if err != nil {
		return fmt.Errorf("set compaction paused=%v: %w", paused, err)
	}
	return nil
}

// Paused reports whether compaction is paused.
func (c *Client) Paused(ctx context.Context) (bool, error) {
	resp, err := c.cli.Get(ctx, keys.CompactionPaused(), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("read compaction pause: %w", err)
	}
	return resp.Count > 0, nil
}

// WatchPaused calls fn with the pause state now and at every
// change until ctx ends. It returns once the first state is known.
func (c *Client) WatchPaused(ctx context.Context, fn func(paused bool)) error {
	resp, err := c.cli.Get(ctx, keys.CompactionPaused(), clientv3.WithCountOnly())
	if err != nil {
		return fmt.Errorf("read compaction pause: %w", err)
	}
	fn(resp.Count > 0)
	go func() {
		rev := resp.Header.Revision
		for ctx.Err() == nil {
			wch := c.cli.Watch(clientv3.WithRequireLeader(ctx), keys.CompactionPaused(), clientv3.WithRev(rev+1))
			for wr := range wch {
				if wr.Err() != nil {
					break
				}
				for _, ev := range wr.Events {
					fn(ev.Type == clientv3.EventTypePut)
					rev = ev.Kv.ModRevision
				}
			}
			if ctx.Err() != nil {
				return
			}
			// Watch lost (compacted history, leader change): re-read.
			if r, err := c.cli.Get(ctx, keys.CompactionPaused(), clientv3.WithCountOnly()); err == nil {
				fn(r.Count > 0)
				rev = r.Header.Revision
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return nil
}

// PartitionBacklog is what compaction has left to do on one partition:
// the level-0 entries (blocks ingest wrote, not compacted yet).
type PartitionBacklog struct {
	Topic     string
	Partition int32
	Entries   int64 // all index entries
	L0Entries int64
	L0Bytes   int64
}

// Backlog reads every index entry (paginated, at one revision), and the
// sequencer records' blocks no index key covers (backlog.go), and counts,
// per partition, the entries and the level-0 entries and bytes.
func (c *Client) Backlog(ctx context.Context) ([]PartitionBacklog, error) {
	from, to := keys.IndexPrefix(), keys.PrefixEnd(keys.IndexPrefix())
	byTP := map[metadata.TopicPartition]*PartitionBacklog{}
	var order []metadata.TopicPartition
	ranges := map[metadata.TopicPartition][]keyRange{}
	key, rev := from, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(to), clientv3.WithLimit(5000)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := c.cli.Get(ctx, key, opts...)
		if err != nil {
			return nil, fmt.Errorf("read compaction backlog: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			k, ok := keys.Parse(string(kv.Key))
			if !ok || k.Kind != "index" {
				continue
			}
			var e metadata.IndexEntry
			if json.Unmarshal(kv.Value, &e) != nil {
				continue
			}
			tp := metadata.TopicPartition{Topic: k.Topic, Partition: k.Partition}
			b := byTP[tp]
			if b == nil {
				b = &PartitionBacklog{Topic: tp.Topic, Partition: tp.Partition}
				byTP[tp] = b
				order = append(order, tp)
			}
			ranges[tp] = append(ranges[tp], keyRange{k.Base, k.Base + max(e.Span, e.Records)})
			b.Entries++
			if e.Level == 0 {
				b.L0Entries++
				b.L0Bytes += e.Len
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if err := c.addRecordBacklog(ctx, rev, byTP, &order, ranges); err != nil {
		return nil, err
	}
	out := make([]PartitionBacklog, 0, len(order))
	for _, tp := range order {
		out = append(out, *byTP[tp])
	}
	return out, nil
}

// Claimer takes per-partition compaction claims bound to one lease, so
// that several compactors never work on the same partition at once. If the
// process dies the lease expires and the claims with it.
type Claimer struct {
	c     *Client
	owner string
	lease clientv3.LeaseID
	stop  context.CancelFunc

	mu   sync.Mutex
	lost bool
}

// NewClaimer grants a lease of ttl and keeps it alive until Close.
func (c *Client) NewClaimer(ctx context.Context, owner string, ttl time.Duration) (*Claimer, error) {
	resp, err := c.cli.Grant(ctx, max(int64(ttl/time.Second), 2))
	if err != nil {
		return nil, fmt.Errorf("grant compaction claim lease for %s: %w", owner, err)
	}
	kctx, cancel := context.WithCancel(metadata.WithCaller(context.Background(), metadata.CallerOf(ctx)))
	ka, err := c.cli.KeepAlive(kctx, resp.ID)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("keep compaction claim lease of %s alive: %w", owner, err)
	}
	cl := &Claimer{c: c, owner: owner, lease: resp.ID, stop: cancel}
	go func() {
		for range ka {
		}
		cl.mu.Lock()
		cl.lost = true
		cl.mu.Unlock()
	}()
	return cl, nil
}

// Lost reports that the lease could not be kept alive: claims may have
// expired. The caller should make a new Claimer.
func (cl *Claimer) Lost() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.lost
}

// Claim takes the partition's claim if nobody holds it. ok is false when
// another owner holds it.
func (cl *Claimer) Claim(ctx context.Context, topic string, p int32) (ok bool, err error) {
	k := keys.Claim(topic, p)
	resp, err := cl.c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, cl.owner, clientv3.WithLease(cl.lease))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("claim %s/%d for compaction: %w", topic, p, err)
	}
	return resp.Succeeded, nil
}

// Release gives the claim back (only if this owner holds it).
func (cl *Claimer) Release(ctx context.Context, topic string, p int32) error {
	if _, err := cl.c.cli.Txn(ctx).Then(cl.releaseOp(topic, p)).Commit(); err != nil {
		return fmt.Errorf("release compaction claim %s/%d: %w", topic, p, err)
	}
	return nil
}

// MaxClaimBatch bounds the partitions ClaimMany and ReleaseMany handle in
// one etcd transaction: each is a nested transaction, an operation of the
// outer one, and etcd allows a nested transaction only what the outer one
// leaves of its 128 operations (ReleaseMany's have releaseCmps
// comparisons).
const MaxClaimBatch = MaxGroupOps - releaseCmps

// releaseCmps are the comparisons of releaseOp's nested transaction.
const releaseCmps = 2

// ClaimMany takes the claims of tps that nobody holds, in one etcd
// transaction (a nested transaction per partition, each with its own
// comparison: a partition another owner holds does not fail the others).
// ok[i] says whether tps[i] was claimed; rev is the transaction's
// revision, after which every job released before these claims has
// swapped.
func (cl *Claimer) ClaimMany(ctx context.Context, tps []metadata.TopicPartition) (ok []bool, rev int64, err error) {
	if len(tps) > MaxClaimBatch {
		return nil, 0, fmt.Errorf("%w: %d claims in one batch, the limit is %d", metadata.ErrInvalidArgument, len(tps), MaxClaimBatch)
	}
	ops := make([]clientv3.Op, len(tps))
	for i, tp := range tps {
		k := keys.Claim(tp.Topic, tp.Partition)
		ops[i] = clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(k, cl.owner, clientv3.WithLease(cl.lease))}, nil)
	}
	resp, err := cl.c.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("claim %d partitions for compaction: %w", len(tps), err)
	}
	ok = make([]bool, len(tps))
	for i, r := range resp.Responses {
		ok[i] = r.GetResponseTxn().GetSucceeded()
	}
	return ok, resp.Header.Revision, nil
}

// ReleaseMany gives back the claims of tps this owner holds, in one etcd
// transaction.
func (cl *Claimer) ReleaseMany(ctx context.Context, tps []metadata.TopicPartition) error {
	if len(tps) == 0 {
		return nil
	}
	if len(tps) > MaxClaimBatch {
		return fmt.Errorf("%w: %d claims in one batch, the limit is %d", metadata.ErrInvalidArgument, len(tps), MaxClaimBatch)
	}
	ops := make([]clientv3.Op, len(tps))
	for i, tp := range tps {
		ops[i] = cl.releaseOp(tp.Topic, tp.Partition)
	}
	if _, err := cl.c.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("release %d compaction claims: %w", len(tps), err)
	}
	return nil
}

// releaseOp deletes the partition's claim if this owner holds it: a
// nested transaction, so that a claim held by another owner fails no
// other operation of the transaction it is in.
func (cl *Claimer) releaseOp(topic string, p int32) clientv3.Op {
	k := keys.Claim(topic, p)
	return clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", cl.owner), clientv3.Compare(clientv3.LeaseValue(k), "=", cl.lease)},
		[]clientv3.Op{clientv3.OpDelete(k)}, nil)
}

// Close revokes the lease: every claim of this Claimer goes at once.
func (cl *Claimer) Close(ctx context.Context) error {
	cl.stop()
	if _, err := cl.c.cli.Revoke(ctx, cl.lease); err != nil {
		return fmt.Errorf("revoke compaction claim lease: %w", err)
	}
	return nil
}
