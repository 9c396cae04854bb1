package seqlog

import (
	"context"
	"fmt"

	"github.com/varve-io/varve/metadata/internal/keys"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MarkActive writes the marker key seq/active, fenced by the term, unless
// a term wrote it before: from then on every direct-path commit
// transaction fails (metadata.ErrSequencerActive), so the sequencer is
// the only offset authority. A term calls it before it reads any high
// watermark the direct path left, so no direct commit can land after
// that read.
func (t *Term) MarkActive(ctx context.Context, id string) error {
	ak := keys.SeqActive()
	v := fmt.Sprintf(`{"term":%d,"id":%q}`, t.rev, id)
	resp, err := t.log.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)).
		Then(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ak), "=", 0)},
			[]clientv3.Op{clientv3.OpPut(ak, v)}, nil)).
		Commit()
	if err != nil {
		return fmt.Errorf("write sequencer marker: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("write sequencer marker: term %d: %w", t.rev, ErrNotLeader)
	}
	return nil
}
