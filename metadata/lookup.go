package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LookupIndex reads, with one linearizable transaction, the partition's state
// and the index entry holding offset (a ranged, reverse, limit-1 read). found
// is false when no committed entry holds offset. The returned revision lets a
// caller wait for its Cache to catch up.
func (c *Client) LookupIndex(ctx context.Context, topic string, p int32, offset int64) (e IndexEntry, st PartitionState, found bool, rev int64, err error) {
	prefix := indexPartitionPrefix(topic, p)
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(partitionKey(topic, p)),
		clientv3.OpGet(prefix, clientv3.WithRange(indexKey(topic, p, offset+1)),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
	).Commit()
	if err != nil {
		return e, st, false, 0, fmt.Errorf("look up %s/%d offset %d: %w", topic, p, offset, err)
	}
	rev = resp.Header.Revision
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &st); err != nil {
			return e, st, false, rev, fmt.Errorf("decode partition %s/%d: %w", topic, p, err)
		}
	}
	kvs := resp.Responses[1].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return e, st, false, rev, nil
	}
	k, ok := parseKey(string(kvs[0].Key))
	if !ok {
		return e, st, false, rev, fmt.Errorf("look up %s/%d: malformed index key %q", topic, p, kvs[0].Key)
	}
	if err := json.Unmarshal(kvs[0].Value, &e); err != nil {
		return e, st, false, rev, fmt.Errorf("decode index entry %s: %w", kvs[0].Key, err)
	}
	e.Topic, e.Partition, e.Base = topic, p, k.base
	return e, st, offset < e.End(), rev, nil
}

// PartitionStates returns the state of every partition of topic that has
// had a commit.
func (c *Client) PartitionStates(ctx context.Context, topic string) (map[int32]PartitionState, error) {
	resp, err := c.cli.Get(ctx, partitionsPrefix(topic), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read partitions of %q: %w", topic, err)
	}
	out := make(map[int32]PartitionState, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		k, ok := parseKey(string(kv.Key))
		if !ok {
			continue
		}
		var st PartitionState
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out[k.partition] = st
	}
	return out, nil
}

// Register announces a live node under nodes/<role>/<id> with a lease that
// is kept alive until ctx ends or the process dies; then the key disappears.
// If the lease is lost while ctx lives (etcd was unreachable for longer
// than its TTL), the node registers again as soon as etcd answers.
func (c *Client) Register(ctx context.Context, role, id, addr string) error {
	ka, err := c.register(ctx, role, id, addr)
	if err != nil {
		return err
	}
	go func() {
		for {
			for range ka {
			}
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("node registration lost; registering again", "role", role, "node", id)
			wait := 100 * time.Millisecond
			for {
				if ka, err = c.register(ctx, role, id, addr); err == nil {
					c.log.Info("node registered again", "role", role, "node", id)
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				wait = min(2*wait, time.Second)
			}
		}
	}()
	return nil
}

func (c *Client) register(ctx context.Context, role, id, addr string) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	lease, err := c.cli.Grant(ctx, nodeLeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("register %s node %s: %w", role, id, err)
	}
	if _, err := c.cli.Put(ctx, nodeKey(role, id), addr, clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("register %s node %s: %w", role, id, err)
	}
	ka, err := c.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, fmt.Errorf("keep %s node %s alive: %w", role, id, err)
	}
	return ka, nil
}

// nodeLeaseTTL is how long (seconds) a node's registration outlives it.
const nodeLeaseTTL = 10

// Nodes lists live nodes of a role: id → address.
func (c *Client) Nodes(ctx context.Context, role string) (map[string]string, error) {
	resp, err := c.cli.Get(ctx, nodesPrefix(role), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list %s nodes: %w", role, err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(nodesPrefix(role)):])] = string(kv.Value)
	}
	return out, nil
}
