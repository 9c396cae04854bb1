package maintenance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/conn"
	"github.com/varve-io/varve/metadata/internal/keys"
	"github.com/varve-io/varve/metadata/seqlog"
)

// Etcd is the maintenance view of a metadata client's etcd. It is safe
// for concurrent use.
type Etcd struct {
	cli *clientv3.Client
}

// New returns the maintenance view of meta's etcd; meta outlives it.
func New(meta *metadata.Client) *Etcd {
	return &Etcd{cli: conn.Of(meta).KV}
}

// referencedPage is how many index keys one range read of
// ReferencedObjects returns; recordPage how many sequencer records (each
// up to about 1.25 MiB).
const (
	referencedPage = 5000
	recordPage     = 32
)

// ReferencedObjects returns every object key some index entry points at
// or some live sequencer batch record names (seq/records/…: the blocks
// committed through the sequencer have no index key; every object a
// record names counts, refused blocks' too), read with paged range reads
// all at one revision (a consistent snapshot), and that revision. An
// object absent from the set was unreferenced at rev.
func (c *Etcd) ReferencedObjects(ctx context.Context) (map[string]struct{}, int64, error) {
	refs := map[string]struct{}{}
	rev, err := c.pages(ctx, keys.IndexPrefix(), referencedPage, 0, func(kv *mvccpb.KeyValue) error {
		var e metadata.IndexEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return fmt.Errorf("decode index entry %s: %w", kv.Key, err)
		}
		if e.Object == "" {
			return fmt.Errorf("index entry %s names no object", kv.Key)
		}
		refs[e.Object] = struct{}{}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	_, err = c.pages(ctx, keys.SeqRecordsPrefix(), recordPage, rev, func(kv *mvccpb.KeyValue) error {
		rb, err := seqlog.IndexDecoder.DecodeBlocks(kv.Value)
		if err != nil {
			// Never guess: an unreadable record may name live objects.
			return fmt.Errorf("sequencer record %s: %w", kv.Key, err)
		}
		for _, o := range rb.Objects {
			refs[o] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return refs, rev, nil
}

// pages calls fn on every key under prefix, read page keys at a time at
// rev (0: the first read's revision), and returns the revision read.
func (c *Etcd) pages(ctx context.Context, prefix string, page int64, rev int64, fn func(*mvccpb.KeyValue) error) (int64, error) {
	key, end := prefix, keys.PrefixEnd(prefix)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := c.cli.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("read referenced objects from %s at revision %d: %w", key, rev, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Revision returns etcd's current revision (a linearizable read).
func (c *Etcd) Revision(ctx context.Context) (int64, error) {
	resp, err := c.cli.Get(ctx, keys.TopicsPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read etcd revision: %w", err)
	}
	return resp.Header.Revision, nil
}

// CompactHistory discards etcd's revision history before rev and waits
// until the space is reclaimed inside the database (physical compaction).
// Watches that resume from a revision below rev get ErrCompacted (the
// metadata Cache reloads then). A rev already compacted is not an error.
func (c *Etcd) CompactHistory(ctx context.Context, rev int64) error {
	if rev <= 0 {
		return fmt.Errorf("%w: compact etcd history at revision %d: must be positive", metadata.ErrInvalidArgument, rev)
	}
	if _, err := c.cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil
		}
		return fmt.Errorf("compact etcd history at revision %d: %w", rev, err)
	}
	return nil
}

// StorageStats are figures about etcd's storage.
type StorageStats struct {
	// Keys counts Varve's keys (under /varve/).
	Keys int64
	// DBSize is the database file size of the largest member: it shrinks
	// only on defragmentation.
	DBSize int64
	// DBSizeInUse is the part of DBSize holding live data (after revision
	// compaction freed pages, before defragmentation returns them).
	DBSizeInUse int64
	// Quota is the database size above which etcd refuses writes (0: the
	// member did not say).
	Quota int64
	// Revision is the current revision.
	Revision int64
}

// StorageStats counts Varve's keys and asks every endpoint for its database
// size; it reports the largest member.
func (c *Etcd) StorageStats(ctx context.Context) (StorageStats, error) {
	resp, err := c.cli.Get(ctx, keys.Root, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return StorageStats{}, fmt.Errorf("count etcd keys: %w", err)
	}
	st := StorageStats{Keys: resp.Count, Revision: resp.Header.Revision}
	var errs []error
	for _, ep := range c.cli.Endpoints() {
		s, err := c.cli.Status(ctx, ep)
		if err != nil {
			errs = append(errs, fmt.Errorf("status of etcd member %s: %w", ep, err))
			continue
		}
		st.DBSize = max(st.DBSize, s.DbSize)
		st.DBSizeInUse = max(st.DBSizeInUse, s.DbSizeInUse)
		st.Quota = max(st.Quota, s.DbSizeQuota)
	}
	if len(errs) == len(c.cli.Endpoints()) && len(errs) > 0 {
		return st, errors.Join(errs...)
	}
	return st, nil
}

// Defragment defragments every endpoint's database, one member after the
// other, returning freed pages to the file system. A member blocks reads
// and writes while it defragments: run it off-peak (see docs/gc.md).
func (c *Etcd) Defragment(ctx context.Context) error {
	for _, ep := range c.cli.Endpoints() {
		if _, err := c.cli.Defragment(ctx, ep); err != nil {
			return fmt.Errorf("defragment etcd member %s: %w", ep, err)
		}
	}
	return nil
}

// Leadership is a won election. It lasts until Done is closed: the
// session's lease expired (etcd unreachable for longer than its TTL) or
// Resign was called.
type Leadership struct {
	session  *concurrency.Session
	election *concurrency.Election
}

// Campaign blocks until this caller leads the election name (one leader
// among every caller of the same name across the cluster) or ctx ends.
// Leadership is tied to a lease of ttl that is kept alive in the
// background; if the process dies, another campaigner takes over within
// ttl. id identifies the leader in the election key's value.
func (c *Etcd) Campaign(ctx context.Context, name, id string, ttl time.Duration) (*Leadership, error) {
	secs := max(int(ttl/time.Second), 1)
	s, err := concurrency.NewSession(c.cli, concurrency.WithTTL(secs))
	if err != nil {
		return nil, fmt.Errorf("campaign for %s: start session: %w", name, err)
	}
	e := concurrency.NewElection(s, keys.ElectionPrefix(name))
	if err := e.Campaign(ctx, id); err != nil {
		s.Close()
		return nil, fmt.Errorf("campaign for %s as %s: %w", name, id, err)
	}
	return &Leadership{session: s, election: e}, nil
}

// Done is closed when leadership is lost.
func (l *Leadership) Done() <-chan struct{} { return l.session.Done() }

// Resign gives up leadership (another campaigner takes over at once) and
// releases the session.
func (l *Leadership) Resign(ctx context.Context) error {
	rerr := l.election.Resign(ctx)
	cerr := l.session.Close()
	if rerr != nil {
		return fmt.Errorf("resign leadership %s: %w", l.election.Key(), rerr)
	}
	return cerr
}

// Footprint is the live size of Varve's state in etcd: keys under /varve/
// and the bytes of their keys and values. Unlike the database size it does
// not move in whole pages or with history, so it shows what each GiB
// ingested costs in metadata.
type Footprint struct {
	Keys  int64
	Bytes int64
}

// Footprint reads every key under /varve/ in pages of 1000 (a consistent
// snapshot at one revision) and sums their sizes.
func (c *Etcd) Footprint(ctx context.Context) (Footprint, error) {
	var f Footprint
	key, end := keys.Root, keys.PrefixEnd(keys.Root)
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := c.cli.Get(ctx, key, opts...)
		if err != nil {
			return f, fmt.Errorf("read %s for its footprint: %w", key, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			f.Keys++
			f.Bytes += int64(len(kv.Key) + len(kv.Value))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return f, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
