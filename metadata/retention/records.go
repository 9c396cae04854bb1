package retention

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// applyRecords enforces retention on the record entries at the start of a
// partition's log (blocks committed through the sequencer that no index key
// covers yet) and, in a partition without a partition key, on the index keys
// compacted from them: while the oldest entry expires, the log start moves
// past it. The transaction, fenced on the topic and the partition key, puts
// the partition key with the new Start (creating it, Start only, when the
// partition had none); it deletes nothing. pastKeys reports that the start
// moved past index keys (the caller's next step deletes them). The record
// pruner then deletes the records below every log start, and GC their
// objects (docs/gc.md).
func (c *Client) applyRecords(ctx context.Context, topic string, p int32, now time.Time, res *Result) (pastKeys bool, err error) {
	for attempt := 0; attempt < retentionAttempts; attempt++ {
		done, pastKeys, err := c.recordsStep(ctx, topic, p, now, res)
		if err != nil || done {
			return pastKeys, err
		}
	}
	return false, fmt.Errorf("retention of %s/%d: record entries: %d conflicting attempts in a row", topic, p, retentionAttempts)
}

func (c *Client) recordsStep(ctx context.Context, topic string, p int32, now time.Time, res *Result) (done, pastKeys bool, err error) {
	tkv, err := c.cli.Get(ctx, keys.Topic(topic))
	if err != nil {
		return false, false, fmt.Errorf("retention of %s/%d: read topic: %w", topic, p, err)
	}
	if len(tkv.Kvs) == 0 {
		return true, false, nil
	}
	var t metadata.Topic
	if err := json.Unmarshal(tkv.Kvs[0].Value, &t); err != nil {
		return false, false, fmt.Errorf("retention of %s/%d: decode topic: %w", topic, p, err)
	}
	rule, ok := newRule(t, now)
	if !ok {
		return true, false, nil
	}
	entries, st, err := c.meta.IndexEntries(ctx, topic, p)
	if err != nil {
		return false, false, fmt.Errorf("retention of %s/%d: %w", topic, p, err)
	}
	var bytes int64
	for _, e := range entries {
		if e.End() > st.Start {
			bytes += e.Len
		}
	}
	pr, err := c.cli.Get(ctx, keys.Partition(topic, p))
	if err != nil {
		return false, false, fmt.Errorf("retention of %s/%d: read partition: %w", topic, p, err)
	}
	start := st.Start
	var dropped int64
	for _, e := range entries {
		if e.End() <= st.Start {
			continue
		}
		// Index keys of a partition with a partition key are the key
		// step's (it deletes them).
		if (e.Record == 0 && len(pr.Kvs) > 0) || !rule.expires(e, bytes) {
			break
		}
		bytes -= e.Len
		start = e.End()
		if e.Record == 0 {
			pastKeys = true
		} else {
			dropped += e.Records
		}
	}
	if start <= st.Start {
		return true, false, nil
	}
	pk := keys.Partition(topic, p)
	var next metadata.PartitionState
	cmp := clientv3.Compare(clientv3.CreateRevision(pk), "=", 0)
	if len(pr.Kvs) > 0 {
		if err := json.Unmarshal(pr.Kvs[0].Value, &next); err != nil {
			return false, false, fmt.Errorf("retention of %s/%d: decode partition: %w", topic, p, err)
		}
		cmp = clientv3.Compare(clientv3.ModRevision(pk), "=", pr.Kvs[0].ModRevision)
	}
	if next.Start >= start {
		return true, false, nil
	}
	next.Start = start
	sv, _ := json.Marshal(next)
	tr, err := c.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(keys.Topic(topic)), "=", tkv.Kvs[0].ModRevision), cmp,
	).Then(clientv3.OpPut(pk, string(sv))).Commit()
	if err != nil {
		return false, false, fmt.Errorf("retention of %s/%d: move the log start to %d: %w", topic, p, start, err)
	}
	if !tr.Succeeded {
		return false, false, nil
	}
	res.Records += dropped
	res.Start = start
	c.log.Info("retention moved the log start past sequencer record entries", "topic", topic, "partition", p, "records", dropped, "start", start)
	return true, pastKeys, nil
}
