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
	memo *metadata.RecordMemo
}

// New returns retention over meta's etcd; meta outlives it.
func New(meta *metadata.Client) *Client {
	cn := conn.Of(meta)
	return &Client{cli: cn.KV, log: cn.Log, meta: meta}
}

// WithRecordMemo makes the index reads go through memo
// (metadata.IndexEntriesWith): a pass over every partition shares one, so
// that each sequencer record is decoded once per pass. It returns c.
func (c *Client) WithRecordMemo(memo *metadata.RecordMemo) *Client {
	c.memo = memo
	return c
}

// retentionPerTxn bounds the index keys one retention transaction
// deletes: per key one compare and one delete, plus the topic, partition
// and index-range compares and the partition put, within etcd's 128
// operations.
const retentionPerTxn = 60

// retentionAttempts bounds how often one partition's retention retries a
// transaction that lost to a concurrent commit or compaction.
const retentionAttempts = 20

// Result says what Apply dropped from one partition.
type Result struct {
	// Entries, Records and Bytes count the entries (blocks), records
	// and stored block bytes that left the log: under index keys, which
	// are deleted, or in sequencer records, whose blocks leave the log
	// when the log start moves past them (the record pruner deletes the
	// records).
	Entries int
	Records int64
	Bytes   int64
	// Start is the partition's log start offset afterwards.
	Start int64
	// Objects are the object keys the deleted index keys pointed at (some
	// may still be referenced by other entries): garbage collection
	// deletes them once nothing references them. Objects of sequencer
	// records are collected once the pruner deleted the records.
	Objects []string
}

// Apply enforces the topic's retention on one partition: the entries at
// the start of its log leave it, oldest first, while the oldest one is
// expired — its newest record is older than retention_ms before now, or
// dropping it still leaves at least retention_bytes in the partition
// (Kafka's rules). The entries are every block the partition serves:
// those under index keys (committed directly, or compacted) and those the
// sequencer's batch records hold that no index key covers; the bytes
// counted are theirs, not the partition key's Bytes (which counts index
// keys only, and which a partition written through the sequencer lacks).
// Each transaction moves the log start offset (Start) past the expired
// entries and deletes the expired index keys (and any left below the log
// start), fenced on the topic, the partition key (or its absence), every
// deleted key and the partition's whole index range, so a concurrent
// commit or compaction makes it retry rather than lose data. Records and
// objects are not touched: the record pruner and the orphan collector
// delete them once unreferenced. Topics with cleanup policy compact,
// unlimited retention, or a missing topic are left alone.
func (c *Client) Apply(ctx context.Context, topic string, p int32, now time.Time) (Result, error) {
	var res Result
	backoff := 5 * time.Millisecond
	for attempt := 0; ; {
		progress, done, err := c.step(ctx, topic, p, now, &res)
		if err != nil || done {
			return res, err
		}
		if progress {
			attempt = 0 // a full chunk went; look for more
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

// step makes one attempt, deleting at most retentionPerTxn index keys. It
// reports progress when its transaction applied, and done when nothing
// more is due (or it did all that was).
func (c *Client) step(ctx context.Context, topic string, p int32, now time.Time, res *Result) (progress, done bool, err error) {
	pk := keys.Partition(topic, p)
	rresp, err := c.cli.Txn(ctx).Then(clientv3.OpGet(keys.Topic(topic)), clientv3.OpGet(pk)).Commit()
	if err != nil {
		return false, false, fmt.Errorf("retention of %s/%d: read: %w", topic, p, err)
	}
	tkv := rresp.Responses[0].GetResponseRange().Kvs
	pkv := rresp.Responses[1].GetResponseRange().Kvs
	if len(tkv) == 0 {
		return false, true, nil // topic deleted
	}
	var t metadata.Topic
	if err := json.Unmarshal(tkv[0].Value, &t); err != nil {
		return false, false, fmt.Errorf("retention of %s/%d: decode topic: %w", topic, p, err)
	}
	var st metadata.PartitionState
	if len(pkv) > 0 {
		if err := json.Unmarshal(pkv[0].Value, &st); err != nil {
			return false, false, fmt.Errorf("retention of %s/%d: decode partition: %w", topic, p, err)
		}
	}
	res.Start = st.Start
	rule, ok := newRule(t, now)
	if !ok {
		return false, true, nil
	}
	// Read after the partition key: what changed in between either makes
	// the partition key's compare fail (a direct commit, retention, a
	// swap over a partition with a key) or shows here.
	entries, _, err := c.meta.IndexEntriesWith(ctx, topic, p, c.memo)
	if err != nil {
		return false, false, fmt.Errorf("retention of %s/%d: %w", topic, p, err)
	}
	bytes := liveBytes(entries, st.Start)
	var keyRev int64
	for _, e := range entries {
		if e.Record == 0 {
			keyRev = max(keyRev, e.ModRev)
		}
	}
	next := st
	var drop []metadata.IndexEntry // index keys to delete
	var entriesOut int
	var records, dropped int64
	full := false
	for _, e := range entries {
		if e.Record == 0 && len(drop) >= retentionPerTxn {
			full = true
			break
		}
		if e.End() <= st.Start {
			if e.Record == 0 { // left below the log start: no longer served
				drop = append(drop, e)
			}
			continue
		}
		if !rule.expires(e, bytes) {
			break
		}
		bytes -= e.Len
		next.Start = e.End()
		entriesOut++
		records += e.Records
		dropped += e.Len
		if e.Record == 0 {
			drop = append(drop, e)
		}
	}
	if next.Start <= st.Start && len(drop) == 0 {
		return false, true, nil
	}
	// The partition key counts the index keys left.
	next.Bytes, next.Segments = 0, 0
	deleted := map[int64]bool{}
	for _, e := range drop {
		deleted[e.Base] = true
	}
	for _, e := range entries {
		if e.Record == 0 && !deleted[e.Base] {
			next.Bytes += e.Len
			next.Segments++
		}
	}
	prefix := keys.IndexPartitionPrefix(topic, p)
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(keys.Topic(topic)), "=", tkv[0].ModRevision),
		// No index key of the partition was written since it was read
		// (a swap over a partition without a partition key shows only here).
		clientv3.Compare(clientv3.ModRevision(prefix), "<", keyRev+1).WithRange(keys.PrefixEnd(prefix)),
	}
	if len(pkv) > 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(pk), "=", pkv[0].ModRevision))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pk), "=", 0))
	}
	var ops []clientv3.Op
	for _, e := range drop {
		k := keys.Index(topic, p, e.Base)
		// ...and none of those it deletes is gone.
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", e.ModRev))
		ops = append(ops, clientv3.OpDelete(k))
	}
	sv, _ := json.Marshal(next)
	ops = append(ops, clientv3.OpPut(pk, string(sv)))
	tresp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		// The outcome is unknown; the next attempt rereads and sees it.
		return false, false, fmt.Errorf("retention of %s/%d: move the log start to %d: %w", topic, p, next.Start, err)
	}
	if !tresp.Succeeded {
		return false, false, nil // a commit or compaction got there first
	}
	res.Entries += entriesOut
	res.Records += records
	res.Bytes += dropped
	res.Start = next.Start
	for _, e := range drop {
		res.Objects = append(res.Objects, e.Object)
	}
	c.log.Info("retention moved the log start", "topic", topic, "partition", p,
		"entries", entriesOut, "keys", len(drop), "records", records, "bytes", dropped, "start", next.Start)
	return true, !full, nil
}
