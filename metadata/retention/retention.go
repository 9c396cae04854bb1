package retention

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/conn"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// Client applies retention in the etcd of a metadata client. It is safe
// for concurrent use.
type Client struct {
	cli  *clientv3.Client
	log  *slog.Logger
	meta *metadata.Client
}

// New returns retention over meta's etcd; meta outlives it.
func New(meta *metadata.Client) *Client {
	cn := conn.Of(meta)
	return &Client{cli: cn.KV, log: cn.Log, meta: meta}
}

// retentionPerTxn bounds the index entries one retention transaction drops:
// per entry one compare and one delete, plus the topic and partition
// compares and the partition put, within etcd's 128 operations.
const retentionPerTxn = 60

// retentionAttempts bounds how often one partition's retention retries a
// transaction that lost to a concurrent commit or compaction.
const retentionAttempts = 20

// Result says what Apply dropped from one partition.
type Result struct {
	// Entries, Records and Bytes count the index entries dropped, the
	// records they held and their stored block bytes.
	Entries int
	Records int64
	Bytes   int64
	// Start is the partition's log start offset afterwards.
	Start int64
	// Objects are the object keys the dropped entries pointed at (some may
	// still be referenced by other entries): garbage collection deletes
	// them once nothing references them.
	Objects []string
}

// Apply enforces the topic's retention on one partition: it drops
// index entries from the start of the log, oldest first, while the oldest
// one is expired — its newest record is older than retention_ms before now,
// or dropping it still leaves at least retention_bytes in the partition
// (Kafka's rules). Each transaction compares the topic, the partition and
// every dropped entry's ModRevision, deletes the entries and advances the
// partition's log start offset (Start) to the end of the last one, so a
// concurrent commit or compaction makes it retry rather than lose data.
// Objects are not touched: the orphan collector deletes them once
// unreferenced. Topics with cleanup policy compact, unlimited retention, a
// missing topic or partition state are left alone.
func (c *Client) Apply(ctx context.Context, topic string, p int32, now time.Time) (Result, error) {
	var res Result
	backoff := 5 * time.Millisecond
	again := false
	for attempt := 0; ; {
		n, done, err := c.step(ctx, topic, p, now, &res)
		if err != nil {
			return res, err
		}
		if done {
			// The blocks committed through the sequencer at the start of
			// the log, and index keys of a partition with no partition key
			// (compacted from such blocks): the log start moves past the
			// expired ones; keys below it go in the next step.
			pastKeys, err := c.applyRecords(ctx, topic, p, now, &res)
			if err != nil || !pastKeys || again {
				return res, err
			}
			again = true
			continue
		}
		if n > 0 {
			attempt = 0 // progress: a full chunk went; look for more
			continue
		}
		attempt++
		if attempt >= retentionAttempts {
			return res, fmt.Errorf("retention of %s/%d: %d conflicting attempts in a row", topic, p, attempt)
		}
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("retention of %s/%d: %w", topic, p, ctx.Err())
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// step makes one attempt on at most retentionPerTxn entries. It
// returns how many entries it dropped, and done when nothing more is due.
func (c *Client) step(ctx context.Context, topic string, p int32, now time.Time, res *Result) (int, bool, error) {
	pk := keys.Partition(topic, p)
	prefix := keys.IndexPartitionPrefix(topic, p)
	rresp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(keys.Topic(topic)),
		clientv3.OpGet(pk),
		clientv3.OpGet(prefix, clientv3.WithRange(keys.PrefixEnd(prefix)), clientv3.WithLimit(retentionPerTxn)),
	).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("retention of %s/%d: read: %w", topic, p, err)
	}
	tkv := rresp.Responses[0].GetResponseRange().Kvs
	pkv := rresp.Responses[1].GetResponseRange().Kvs
	if len(tkv) == 0 || len(pkv) == 0 {
		return 0, true, nil // topic deleted, or nothing committed yet
	}
	var t metadata.Topic
	if err := json.Unmarshal(tkv[0].Value, &t); err != nil {
		return 0, false, fmt.Errorf("retention of %s/%d: decode topic: %w", topic, p, err)
	}
	var st metadata.PartitionState
	if err := json.Unmarshal(pkv[0].Value, &st); err != nil {
		return 0, false, fmt.Errorf("retention of %s/%d: decode partition: %w", topic, p, err)
	}
	res.Start = st.Start
	rule, ok := newRule(t, now)
	if !ok {
		return 0, true, nil
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(keys.Topic(topic)), "=", tkv[0].ModRevision),
		clientv3.Compare(clientv3.ModRevision(pk), "=", pkv[0].ModRevision),
	}
	var ops []clientv3.Op
	var drop []metadata.IndexEntry
	bytes := st.Bytes
	ikvs := rresp.Responses[2].GetResponseRange().Kvs
	for _, kv := range ikvs {
		k, ok := keys.Parse(string(kv.Key))
		if !ok || k.Kind != "index" {
			return 0, false, fmt.Errorf("retention of %s/%d: malformed index key %q", topic, p, kv.Key)
		}
		var e metadata.IndexEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return 0, false, fmt.Errorf("retention of %s/%d: decode index entry %s: %w", topic, p, kv.Key, err)
		}
		e.Topic, e.Partition, e.Base = topic, p, k.Base
		if !rule.expires(e, bytes) {
			break
		}
		bytes -= e.Len
		drop = append(drop, e)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
		ops = append(ops, clientv3.OpDelete(string(kv.Key)))
	}
	if len(drop) == 0 {
		return 0, true, nil
	}
	next := st
	var records int64
	for _, e := range drop {
		next.Start = max(next.Start, e.End())
		next.Bytes -= e.Len
		next.Segments--
		records += e.Records
	}
	next.Bytes, next.Segments = max(next.Bytes, 0), max(next.Segments, 0)
	sv, _ := json.Marshal(next)
	ops = append(ops, clientv3.OpPut(pk, string(sv)))
	tresp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		// The outcome is unknown; the next attempt rereads and sees it.
		return 0, false, fmt.Errorf("retention of %s/%d: drop %d entries below %d: %w", topic, p, len(drop), next.Start, err)
	}
	if !tresp.Succeeded {
		return 0, false, nil // a commit or compaction got there first
	}
	res.Entries += len(drop)
	res.Records += records
	res.Bytes += st.Bytes - next.Bytes
	res.Start = next.Start
	for _, e := range drop {
		res.Objects = append(res.Objects, e.Object)
	}
	c.log.Info("retention dropped index entries", "topic", topic, "partition", p,
		"entries", len(drop), "records", records, "start", next.Start)
	// A full chunk may have more behind it; a short one was all that is due.
	return len(drop), len(drop) < retentionPerTxn, nil
}
