package metadata

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchNodes reads the live nodes of role (id → address, as Register
// wrote them) and calls fn with them, then again after every change, until
// ctx ends or stop is called: a node appears when it registers and
// disappears when it is stopped or its lease expires (a killed node within
// the lease's 10 s). fn is called from one goroutine at a time with a map it
// may keep. A watch that breaks (leader change, connection reset, revision
// compacted) is resumed or reloaded; membership is never guessed.
//
// stop ends the watch and waits for the last call of fn to return.
func (c *Client) WatchNodes(ctx context.Context, role string, fn func(map[string]string)) (stop func(), err error) {
	stop, err = c.watchPrefix(ctx, nodesPrefix(role), fn)
	if err != nil {
		return nil, fmt.Errorf("watch %s nodes: %w", role, err)
	}
	return stop, nil
}

// watchPrefix calls fn with the keys under prefix (the rest of the key →
// value) now and after every change, as WatchNodes describes.
func (c *Client) watchPrefix(ctx context.Context, prefix string, fn func(map[string]string)) (stop func(), err error) {
	nodes, rev, err := c.listNodes(ctx, prefix)
	if err != nil {
		return nil, err
	}
	fn(maps.Clone(nodes))
	wctx, cancel := context.WithCancel(WithCaller(context.Background(), CallerOf(ctx)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wctx.Err() == nil {
			wch := c.cli.Watch(clientv3.WithRequireLeader(wctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for wr := range wch {
				if err := wr.Err(); err != nil {
					if errors.Is(err, rpctypes.ErrCompacted) {
						// Events were lost: read the whole set again.
						if n, r, err := c.listNodes(wctx, prefix); err == nil {
							nodes, rev = n, r
							fn(maps.Clone(nodes))
						}
					}
					break
				}
				for _, ev := range wr.Events {
					id := string(ev.Kv.Key[len(prefix):])
					if ev.Type == mvccpb.DELETE {
						delete(nodes, id)
					} else {
						nodes[id] = string(ev.Kv.Value)
					}
				}
				rev = wr.Header.Revision
				if len(wr.Events) > 0 {
					fn(maps.Clone(nodes))
				}
			}
			select {
			case <-wctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

func (c *Client) listNodes(ctx context.Context, prefix string) (map[string]string, int64, error) {
	resp, err := c.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(prefix):])] = string(kv.Value)
	}
	return out, resp.Header.Revision, nil
}
