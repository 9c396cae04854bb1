package seqlog

import (
	"context"
	"time"

	"github.com/varve-io/varve/metadata/internal/keys"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchLeader follows the sequencer election until ctx ends: it calls fn
// with the id the current leader campaigned with ("" while none leads)
// once at the start and again after every change of the election's keys
// (a term won, resigned or expired), from one etcd watch; reads of etcd
// happen only then, never per question asked of the answer. When etcd
// cannot be read or the watch breaks, fn gets the error (the leader is
// then unknown) and WatchLeader tries again with a growing pause.
func (l *Log) WatchLeader(ctx context.Context, fn func(id string, err error)) {
	prefix := keys.ElectionPrefix(ElectionName) + "/"
	backoff := 50 * time.Millisecond
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
			backoff = min(2*backoff, 2*time.Second)
			return true
		}
	}
	for ctx.Err() == nil {
		resp, err := l.cli.Get(ctx, prefix, clientv3.WithFirstCreate()...)
		if err != nil {
			if ctx.Err() == nil {
				fn("", err)
			}
			if !pause() {
				return
			}
			continue
		}
		id := ""
		if len(resp.Kvs) > 0 {
			id = string(resp.Kvs[0].Value)
		}
		fn(id, nil)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := l.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		var werr error
		changed := false
		for wr := range wch {
			werr, changed = wr.Err(), len(wr.Events) > 0
			if werr != nil || changed {
				break // read the leader again (or report why not)
			}
		}
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case werr != nil:
			fn("", werr)
			fallthrough
		case !changed: // the watch ended without a word: not at once again
			if !pause() {
				return
			}
		default:
			backoff = 50 * time.Millisecond
		}
	}
}
