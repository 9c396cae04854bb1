package seqlog

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata/internal/keys"
)

// reclaim ends the candidacy (and the term, if it led) that an earlier
// run of this very candidate left in the election: a key holding id under
// a lease other than own, this campaign's. id names one candidate — a
// node's internal API URL, whose port this process now holds — so such a
// key was left by a process that is gone without resigning (kill -9, a
// crash), whose lease would otherwise hold the election for its whole TTL
// (5 s) before anyone leads. Revoking that lease deletes the key at once.
// It is as safe as the lease running out: every write of that term is
// fenced on the key's create revision, so one still in flight is refused,
// and the next leader recovers from etcd after the key is gone. A failure
// only leaves the lease to expire.
func (l *Log) reclaim(ctx context.Context, id string, own clientv3.LeaseID) {
	resp, err := l.cli.Get(ctx, keys.ElectionPrefix(ElectionName)+"/", clientv3.WithPrefix())
	if err != nil {
		l.log.Warn("sequencer campaign: read the election", "err", err)
		return
	}
	for _, kv := range resp.Kvs {
		lease := clientv3.LeaseID(kv.Lease)
		if string(kv.Value) != id || lease == clientv3.NoLease || lease == own {
			continue
		}
		if _, err := l.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			l.log.Warn("sequencer campaign: revoke an earlier run's election lease", "id", id, "key", string(kv.Key), "err", err)
			continue
		}
		l.log.Info("sequencer campaign: ended an earlier run's candidacy left without resigning", "id", id, "key", string(kv.Key), "term", kv.CreateRevision)
	}
}
