package metadata

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

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
func (c *Client) Footprint(ctx context.Context) (Footprint, error) {
	var f Footprint
	key, end := root, prefixEnd(root)
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
