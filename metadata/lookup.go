package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LookupIndex reads, with one linearizable transaction, the partition's state
// and the index entry holding offset (a ranged, reverse, limit-1 read). found
// is false when no committed entry holds offset. The returned revision lets a
// caller wait for its Cache to catch up.
//
// Blocks committed through the sequencer are looked up in its batch
// records at the same revision, newest first (records.go): the high
// watermark includes them, and an offset past the index keys' is found in
// the record that holds it, unless an index key overlaps that record
// entry (key entries shadow record entries).
func (c *Client) LookupIndex(ctx context.Context, topic string, p int32, offset int64) (e IndexEntry, st PartitionState, found bool, rev int64, err error) {
	prefix := indexPartitionPrefix(topic, p)
	ops := []clientv3.Op{
		clientv3.OpGet(partitionKey(topic, p)),
		clientv3.OpGet(prefix, clientv3.WithRange(indexKey(topic, p, offset+1)),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1)),
	}
	if recordDecoder != nil {
		ops = append(ops, recordOps(topic)...)
	}
	resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return e, st, false, 0, fmt.Errorf("look up %s/%d offset %d: %w", topic, p, offset, err)
	}
	rev = resp.Header.Revision
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if err := json.Unmarshal(kvs[0].Value, &st); err != nil {
			return e, st, false, rev, fmt.Errorf("decode partition %s/%d: %w", topic, p, err)
		}
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		k, ok := parseKey(string(kvs[0].Key))
		if !ok {
			return e, st, false, rev, fmt.Errorf("look up %s/%d: malformed index key %q", topic, p, kvs[0].Key)
		}
		if err := json.Unmarshal(kvs[0].Value, &e); err != nil {
			return e, st, false, rev, fmt.Errorf("decode index entry %s: %w", kvs[0].Key, err)
		}
		e.Topic, e.Partition, e.Base = topic, p, k.base
		found = offset < e.End()
	}
	t, head, err := recordView(resp.Responses[2:])
	if err != nil {
		return e, st, false, rev, fmt.Errorf("look up %s/%d: %w", topic, p, err)
	}
	if t == nil {
		return e, st, found, rev, nil
	}
	// Index keys hold every offset below their high watermark: only an
	// offset at or past it can be in a record.
	needEntry := !found && offset >= st.Next
	re, haveRe, next, err := c.lookupRecords(ctx, rev, t, p, offset, head, needEntry)
	if err != nil {
		return e, st, false, rev, fmt.Errorf("look up %s/%d offset %d: %w", topic, p, offset, err)
	}
	st.Next = max(st.Next, next)
	if found {
		st.Next = max(st.Next, e.End())
	}
	if haveRe && offset < re.End() {
		// Key entries shadow record entries: the record entry is served
		// only when no index key overlaps it. The key read above (the
		// greatest base at or below offset) is one candidate, a key after
		// offset within the entry the other.
		shadow := len(resp.Responses[1].GetResponseRange().Kvs) > 0 && e.End() > re.Base
		if !shadow {
			kr, err := c.cli.Get(ctx, indexKey(topic, p, offset+1), clientv3.WithRange(indexKey(topic, p, re.End())),
				clientv3.WithCountOnly(), clientv3.WithRev(rev))
			if err != nil {
				return e, st, false, rev, fmt.Errorf("look up %s/%d offset %d: %w", topic, p, offset, err)
			}
			shadow = kr.Count > 0
		}
		if !shadow && re.End() > st.Start {
			e, found = re, true
		}
	}
	return e, st, found, rev, nil
}

// lookupRecords reads topic t's partition p in the sequencer's records as
// of rev, newest first: its high watermark, and with needEntry the record
// entry with the greatest base at or below offset (have false: none). It
// stops at the first record holding the partition unless it still looks
// for the entry, and, reaching the checkpoint (head) without seeing the
// partition, takes the checkpoint's high watermark: an offset at or past
// it is in no record.
func (c *Client) lookupRecords(ctx context.Context, rev int64, t *Topic, p int32, offset int64, head []byte, needEntry bool) (e IndexEntry, have bool, next int64, err error) {
	var cpBatch uint64
	if head != nil {
		if cpBatch, _, err = recordDecoder.CheckpointHead(head); err != nil {
			return e, false, 0, fmt.Errorf("sequencer checkpoint: %w", err)
		}
	}
	seen, cpRead := false, false
	fromCheckpoint := func() (bool, error) {
		cpRead = true
		cp, err := c.checkpointNexts(ctx, rev, head, t)
		if err != nil {
			return false, err
		}
		if int(p) < len(cp) && cp[p] > 0 {
			next, seen = max(next, cp[p]), true
		}
		return needEntry && offset < next, nil
	}
	err = c.scanRecords(ctx, rev, 0, true, func(rb *RecordBlocks, modRev int64) (bool, error) {
		if head != nil && !seen && !cpRead && rb.Batch <= cpBatch {
			if more, err := fromCheckpoint(); err != nil || !more {
				return false, err
			}
		}
		if rb.liveIn(t) {
			for _, x := range rb.Entries {
				if x.Topic != t.Name || x.Partition != p {
					continue
				}
				next, seen = max(next, x.End()), true
				if needEntry && x.Base <= offset && (!have || x.Base > e.Base) {
					e, have = x, true
					e.ModRev = modRev
				}
			}
		}
		// Once the partition is seen, an offset at or past its high
		// watermark is in no record.
		return !seen || (needEntry && !have && offset < next), nil
	})
	if err == nil && head != nil && !seen && !cpRead {
		_, err = fromCheckpoint()
	}
	return e, have, next, err
}

// PartitionStates returns the state of every partition of topic that has
// had a commit, read at one revision. High watermarks include the blocks
// committed through the sequencer (records.go: the records after its
// checkpoint, newest first, and the checkpoint for partitions idle since);
// Bytes and Segments count the blocks under index keys only.
func (c *Client) PartitionStates(ctx context.Context, topic string) (map[int32]PartitionState, error) {
	ops := []clientv3.Op{clientv3.OpGet(partitionsPrefix(topic), clientv3.WithPrefix())}
	if recordDecoder != nil {
		ops = append(ops, recordOps(topic)...)
	}
	resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("read partitions of %q: %w", topic, err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	out := make(map[int32]PartitionState, len(kvs))
	for _, kv := range kvs {
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
	t, head, err := recordView(resp.Responses[1:])
	if err != nil {
		return nil, fmt.Errorf("read partitions of %q: %w", topic, err)
	}
	if t == nil {
		return out, nil
	}
	nexts, err := c.recordNexts(ctx, resp.Header.Revision, t, -1, head)
	if err != nil {
		return nil, fmt.Errorf("read partitions of %q: %w", topic, err)
	}
	for p, n := range nexts {
		if st := out[p]; n > st.Next {
			st.Next = n
			out[p] = st
		}
	}
	return out, nil
}

// Register announces a live node under nodes/<role>/<id> with a lease that
// is kept alive until ctx ends or the process dies; then the key disappears.
// If the lease is lost while ctx lives (etcd was unreachable for longer
// than its TTL), the node registers again as soon as etcd answers.
func (c *Client) Register(ctx context.Context, role, id, addr string) error {
	return c.RegisterRoles(ctx, id, addr, role)
}

// RegisterRoles is Register for every role of a node at once: one lease
// and one keep-alive for all of its keys (written in one transaction), so
// a node costs etcd the same whatever its number of roles.
func (c *Client) RegisterRoles(ctx context.Context, id, addr string, roles ...string) error {
	roles = slices.Compact(slices.Sorted(slices.Values(roles))) // a role named twice is one key
	if len(roles) == 0 {
		return nil
	}
	ka, err := c.register(ctx, roles, id, addr)
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
			c.log.Warn("node registration lost; registering again", "roles", roles, "node", id)
			wait := 100 * time.Millisecond
			for {
				if ka, err = c.register(ctx, roles, id, addr); err == nil {
					c.log.Info("node registered again", "roles", roles, "node", id)
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

func (c *Client) register(ctx context.Context, roles []string, id, addr string) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	lease, err := c.cli.Grant(ctx, nodeLeaseTTL)
	if err != nil {
		return nil, fmt.Errorf("register %v node %s: %w", roles, id, err)
	}
	puts := make([]clientv3.Op, len(roles))
	for i, role := range roles {
		puts[i] = clientv3.OpPut(nodeKey(role, id), addr, clientv3.WithLease(lease.ID))
	}
	if _, err := c.cli.Txn(ctx).Then(puts...).Commit(); err != nil {
		return nil, fmt.Errorf("register %v node %s: %w", roles, id, err)
	}
	ka, err := c.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, fmt.Errorf("keep %v node %s alive: %w", roles, id, err)
	}
	return ka, nil
}

// Deregister removes the registrations of node id under roles at once (a
// node that stops: the others need not wait for its lease to expire).
func (c *Client) Deregister(ctx context.Context, id string, roles ...string) error {
	ops := make([]clientv3.Op, len(roles))
	for i, role := range roles {
		ops[i] = clientv3.OpDelete(nodeKey(role, id))
	}
	if _, err := c.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("deregister node %s: %w", id, err)
	}
	return nil
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
