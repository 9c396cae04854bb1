package seqlog

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/conn"
	"github.com/varve-io/varve/metadata/internal/keys"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ElectionName is the campaign of the sequencer role.
const ElectionName = "sequencer"

// MaxRecordBytes bounds an encoded record so that its transaction stays
// below etcd's 1.5 MiB request limit with room for the key and compares.
const MaxRecordBytes = 1<<20 + 256<<10

// checkpointChunk bounds one checkpoint chunk's transaction.
const checkpointChunk = 1 << 20

// opsPerTxn keeps reads within etcd's 128 operations per transaction.
const opsPerTxn = 120

var (
	// ErrNotLeader: the term ended (its election key is gone); the batch
	// was not written and the caller must find the new leader.
	ErrNotLeader = errors.New("not the sequencer leader")
	// ErrStale: a topic or producer key changed after the sequencer read
	// it; the batch was not written and must be decided again.
	ErrStale = errors.New("topic or producer changed since read")
	// ErrNoLeader: no sequencer is elected.
	ErrNoLeader = errors.New("no sequencer elected")
)

// Log is the sequencer's view of etcd: its election, its batch records and
// checkpoints, and the topic and producer keys it decides against.
type Log struct {
	cli *clientv3.Client
	log *slog.Logger

	leaseMu   sync.Mutex
	refreshed map[int64]time.Time
}

// New shares the etcd connection of meta.
func New(meta *metadata.Client) *Log {
	c := conn.Of(meta)
	return &Log{cli: c.KV, log: c.Log, refreshed: map[int64]time.Time{}}
}

// MaxTopicCompares bounds the topics a batch's transaction compares one
// by one (etcd allows 128 compares per transaction).
const MaxTopicCompares = 100

// Fence is what a batch was decided against: the batch's transaction
// fails (ErrStale) if it changed since.
type Fence struct {
	// Topics holds each topic's ModRevision as read (0: absent). With at
	// most MaxTopicCompares of them each is compared on its own, which
	// catches a deletion too; with more, TopicsRev's range compare over
	// every topic key is used, which catches creations and updates but
	// not deletions (a deleted key has no revision to compare).
	Topics map[string]int64
	// TopicsRev and ProducersRev are the revisions the topics and the
	// producers were read at: no key under topics/ or idem/producers/ may
	// have changed since.
	TopicsRev, ProducersRev int64
}

// topicCompares returns the compares fencing f's topics.
func (f Fence) topicCompares() []clientv3.Cmp {
	if len(f.Topics) > 0 && len(f.Topics) <= MaxTopicCompares {
		out := make([]clientv3.Cmp, 0, len(f.Topics))
		for name, rev := range f.Topics {
			out = append(out, clientv3.Compare(clientv3.ModRevision(keys.Topic(name)), "=", rev))
		}
		return out
	}
	if f.TopicsRev > 0 {
		return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(keys.TopicsPrefix()), "<", f.TopicsRev+1).WithPrefix()}
	}
	return nil
}

// Append writes rec as one transaction, fenced by the term (its election
// key still exists with the term's create revision), by f, and by the
// record key being new. It returns the revision of the write.
func (t *Term) Append(ctx context.Context, rec *Record, f Fence) (int64, error) {
	rev, _, err := t.AppendCheckpoint(ctx, rec, f, nil)
	return rev, err
}

// AppendCheckpoint is Append that also makes cp current in the same
// transaction when cp is not nil and its one chunk fits beside the record
// (together at most MaxRecordBytes); it reports whether it did. cp must
// hold the state after a batch before rec's (one already written): a
// recovering leader reads it, then rec and the records after. Writing the
// checkpoint with a batch saves the leader's own transactions for it.
func (t *Term) AppendCheckpoint(ctx context.Context, rec *Record, f Fence, cp *Checkpoint) (rev int64, checkpointed bool, err error) {
	v := rec.Encode()
	if len(v) > MaxRecordBytes {
		return 0, false, fmt.Errorf("%w: batch %d encodes to %d bytes, above %d", metadata.ErrInvalidArgument, rec.Batch, len(v), MaxRecordBytes)
	}
	rk := keys.SeqRecord(rec.Batch)
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev),
		clientv3.Compare(clientv3.CreateRevision(rk), "=", 0),
	}
	cmps = append(cmps, f.topicCompares()...)
	if f.ProducersRev > 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.ProducersPrefix()), "<", f.ProducersRev+1).WithPrefix())
	}
	ops := []clientv3.Op{clientv3.OpPut(rk, string(v))}
	if cp != nil && cp.Batch < rec.Batch {
		if cv := cp.Encode(); len(v)+len(cv) <= MaxRecordBytes {
			ops = append(ops, clientv3.OpPut(keys.SeqCheckpointChunk(cp.Batch, 0), string(cv)))
			ops = append(ops, makeCurrent(cp.Batch, 1)...)
			checkpointed = true
		}
	}
	resp, err := t.log.cli.Txn(ctx).If(cmps...).Then(ops...).
		Else(clientv3.OpGet(t.key), clientv3.OpGet(rk, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return 0, false, fmt.Errorf("write sequencer batch %d: %w", rec.Batch, err)
	}
	if resp.Succeeded {
		return resp.Header.Revision, checkpointed, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 0 || kvs[0].CreateRevision != t.rev {
		return 0, false, fmt.Errorf("write sequencer batch %d: term %d: %w", rec.Batch, t.rev, ErrNotLeader)
	}
	if resp.Responses[1].GetResponseRange().Count > 0 {
		return 0, false, fmt.Errorf("write sequencer batch %d: the record exists already (two leaders in one term?): %w", rec.Batch, ErrNotLeader)
	}
	return 0, false, fmt.Errorf("write sequencer batch %d: %w", rec.Batch, ErrStale)
}

// makeCurrent returns the operations that make checkpoint batch, of n
// chunks, current and delete the older checkpoints' chunks.
func makeCurrent(batch uint64, n int) []clientv3.Op {
	head := binary.AppendUvarint(binary.AppendUvarint(nil, batch), uint64(n))
	return []clientv3.Op{
		clientv3.OpPut(keys.SeqCheckpoint(), string(head)),
		clientv3.OpDelete(keys.SeqCheckpointChunksPrefix(), clientv3.WithRange(keys.SeqCheckpointBatchPrefix(batch))),
	}
}

// WriteCheckpoint stores c and makes it current, fenced by the term: one
// transaction when it fits in one chunk, else each chunk its own
// transaction and a last one making it current and deleting the older
// checkpoints' chunks. A leader that dies half-way leaves the previous
// checkpoint current.
func (t *Term) WriteCheckpoint(ctx context.Context, c *Checkpoint) error {
	v := c.Encode()
	fence := clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.rev)
	if len(v) <= checkpointChunk {
		ops := append([]clientv3.Op{clientv3.OpPut(keys.SeqCheckpointChunk(c.Batch, 0), string(v))}, makeCurrent(c.Batch, 1)...)
		resp, err := t.log.cli.Txn(ctx).If(fence).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("write checkpoint %d: %w", c.Batch, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("write checkpoint %d: %w", c.Batch, ErrNotLeader)
		}
		return nil
	}
	n := 0
	for off := 0; off < len(v); off += checkpointChunk {
		end := min(off+checkpointChunk, len(v))
		resp, err := t.log.cli.Txn(ctx).If(fence).Then(clientv3.OpPut(keys.SeqCheckpointChunk(c.Batch, n), string(v[off:end]))).Commit()
		if err != nil {
			return fmt.Errorf("write checkpoint %d chunk %d: %w", c.Batch, n, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("write checkpoint %d: %w", c.Batch, ErrNotLeader)
		}
		n++
	}
	resp, err := t.log.cli.Txn(ctx).If(fence).Then(makeCurrent(c.Batch, n)...).Commit()
	if err != nil {
		return fmt.Errorf("make checkpoint %d current: %w", c.Batch, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("make checkpoint %d current: %w", c.Batch, ErrNotLeader)
	}
	return nil
}

// Recover reads the current checkpoint (nil if none) and every record
// after it, all at one revision. Call it once elected:
// no other writer adds records then.
func (l *Log) Recover(ctx context.Context) (*Checkpoint, []*Record, error) {
	resp, err := l.cli.Get(ctx, keys.SeqCheckpoint())
	if err != nil {
		return nil, nil, fmt.Errorf("read sequencer checkpoint: %w", err)
	}
	rev := resp.Header.Revision
	var cp *Checkpoint
	from := uint64(0)
	if len(resp.Kvs) > 0 {
		if cp, err = l.readCheckpoint(ctx, resp.Kvs[0].Value, rev); err != nil {
			return nil, nil, err
		}
		from = cp.Batch + 1
	}
	recs, err := l.Records(ctx, from, rev)
	if err != nil {
		return nil, nil, err
	}
	return cp, recs, nil
}

// Records reads every record from batch from on, at revision rev (0: the
// current one), in order.
func (l *Log) Records(ctx context.Context, from uint64, rev int64) ([]*Record, error) {
	var recs []*Record
	key, end := keys.SeqRecord(from), keys.PrefixEnd(keys.SeqRecordsPrefix())
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(64)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := l.cli.Get(ctx, key, opts...)
		if err != nil {
			return nil, fmt.Errorf("read sequencer records from %s: %w", key, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			r, err := DecodeRecord(kv.Value)
			if err != nil {
				return nil, fmt.Errorf("record %s: %w", kv.Key, err)
			}
			recs = append(recs, r)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return recs, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// CommitResults reads batch's record and returns the results it holds for
// commit id.
func (l *Log) CommitResults(ctx context.Context, batch uint64, id string) ([]metadata.AppendResult, error) {
	resp, err := l.cli.Get(ctx, keys.SeqRecord(batch))
	if err != nil {
		return nil, fmt.Errorf("read sequencer batch %d: %w", batch, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: sequencer batch %d is gone", ErrMalformed, batch)
	}
	r, err := DecodeRecord(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("sequencer batch %d: %w", batch, err)
	}
	for _, c := range r.Commits {
		if c.ID == id {
			return c.Results, nil
		}
	}
	return nil, fmt.Errorf("%w: sequencer batch %d does not hold commit %s", ErrMalformed, batch, id)
}

func (l *Log) readCheckpoint(ctx context.Context, head []byte, rev int64) (*Checkpoint, error) {
	batch, chunks, err := checkpointHead(head)
	if err != nil {
		return nil, err
	}
	var v []byte
	for i := range chunks {
		resp, err := l.cli.Get(ctx, keys.SeqCheckpointChunk(batch, i), clientv3.WithRev(rev))
		if err != nil {
			return nil, fmt.Errorf("read checkpoint %d chunk %d: %w", batch, i, err)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("%w: checkpoint %d chunk %d is missing", ErrMalformed, batch, i)
		}
		v = append(v, resp.Kvs[0].Value...)
	}
	cp, err := DecodeCheckpoint(v)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %d: %w", batch, err)
	}
	return cp, nil
}

// getMany reads keys at one revision (the first read's), in transactions
// of at most opsPerTxn gets. A missing key gives nil.
func (l *Log) getMany(ctx context.Context, ks []string) ([]*mvccpb.KeyValue, int64, error) {
	out := make([]*mvccpb.KeyValue, 0, len(ks))
	var rev int64
	for start := 0; start < len(ks) || start == 0; start += opsPerTxn {
		end := min(start+opsPerTxn, len(ks))
		ops := make([]clientv3.Op, 0, end-start)
		for _, k := range ks[start:end] {
			if rev > 0 {
				ops = append(ops, clientv3.OpGet(k, clientv3.WithRev(rev)))
			} else {
				ops = append(ops, clientv3.OpGet(k))
			}
		}
		resp, err := l.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, r := range resp.Responses {
			var kv *mvccpb.KeyValue
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				kv = kvs[0]
			}
			out = append(out, kv)
		}
		if len(ks) == 0 {
			break
		}
	}
	return out, rev, nil
}

// TopicRead is a topic as read (nil: not found) and its key's ModRevision
// (0: not found).
type TopicRead struct {
	Topic  *metadata.Topic
	ModRev int64
}

// LoadTopics reads topics by name and the revision read.
func (l *Log) LoadTopics(ctx context.Context, names []string) (map[string]TopicRead, int64, error) {
	ks := make([]string, len(names))
	for i, n := range names {
		ks[i] = keys.Topic(n)
	}
	kvs, rev, err := l.getMany(ctx, ks)
	if err != nil {
		return nil, 0, fmt.Errorf("read %d topics: %w", len(names), err)
	}
	out := make(map[string]TopicRead, len(names))
	for i, kv := range kvs {
		out[names[i]] = TopicRead{}
		if kv != nil {
			t := new(metadata.Topic)
			if err := json.Unmarshal(kv.Value, t); err != nil {
				return nil, 0, fmt.Errorf("decode topic %q: %w", names[i], err)
			}
			out[names[i]] = TopicRead{Topic: t, ModRev: kv.ModRevision}
		}
	}
	return out, rev, nil
}

// ProducerInfo is a producer's identity as read; Known is false when its
// id key is absent (never issued, or expired). Direct holds the states the
// direct commit path left for it, when asked for.
type ProducerInfo struct {
	metadata.ProducerInfo
	Known  bool
	Direct []PartitionState
}

// LoadProducers reads producers' identities and the revision read, and for
// the ids in withStates also the per-partition states the direct commit
// path wrote (one ranged read each), so that a sequencer taking over such
// a cluster continues their sequences.
func (l *Log) LoadProducers(ctx context.Context, ids []int64, withStates []int64) (map[int64]ProducerInfo, int64, error) {
	ks := make([]string, len(ids))
	for i, id := range ids {
		ks[i] = keys.Producer(id)
	}
	kvs, rev, err := l.getMany(ctx, ks)
	if err != nil {
		return nil, 0, fmt.Errorf("read %d producers: %w", len(ids), err)
	}
	out := make(map[int64]ProducerInfo, len(ids))
	for i, kv := range kvs {
		if kv == nil {
			out[ids[i]] = ProducerInfo{}
			continue
		}
		info, err := metadata.DecodeProducerInfo(kv.Value)
		if err != nil {
			return nil, 0, fmt.Errorf("producer %d: %w", ids[i], err)
		}
		out[ids[i]] = ProducerInfo{ProducerInfo: info, Known: true}
	}
	for _, id := range withStates {
		pi := out[id]
		if !pi.Known {
			continue
		}
		if pi.Direct, err = l.directStates(ctx, id, rev); err != nil {
			return nil, 0, err
		}
		out[id] = pi
	}
	return out, rev, nil
}

// directStates reads the states under a producer's id key at rev.
func (l *Log) directStates(ctx context.Context, id int64, rev int64) ([]PartitionState, error) {
	resp, err := l.cli.Get(ctx, keys.ProducerStatesPrefix(id), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, fmt.Errorf("read producer %d states: %w", id, err)
	}
	var out []PartitionState
	for _, kv := range resp.Kvs {
		topic, p, ok := keys.ParseProducerState(id, string(kv.Key))
		if !ok {
			continue
		}
		var st metadata.ProducerState
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, PartitionState{Topic: topic, Partition: p, State: st})
	}
	return out, nil
}

// PartitionNexts reads the high watermarks the direct commit path left in
// a topic's partition keys (absent: 0), so a sequencer started on a
// cluster that committed directly continues from them.
func (l *Log) PartitionNexts(ctx context.Context, topic string, partitions int32) ([]int64, error) {
	resp, err := l.cli.Get(ctx, keys.PartitionsPrefix(topic), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read partitions of %q: %w", topic, err)
	}
	next := make([]int64, partitions)
	for _, kv := range resp.Kvs {
		p, ok := keys.Parse(string(kv.Key))
		if !ok || p.Kind != "partitions" || p.Partition < 0 || p.Partition >= partitions {
			continue
		}
		st, err := metadata.DecodePartitionState(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		next[p.Partition] = st.Next
	}
	return next, nil
}

// RefreshLeases keeps committed producers' state alive for another TTL,
// at most once per TTL/8 per producer, as the direct commit does.
func (l *Log) RefreshLeases(ctx context.Context, infos []metadata.ProducerInfo) {
	now := time.Now()
	for _, info := range infos {
		l.leaseMu.Lock()
		last, ok := l.refreshed[info.Lease]
		due := !ok || now.Sub(last) >= info.TTL/8
		if due {
			l.refreshed[info.Lease] = now
		}
		if len(l.refreshed) > 4096 {
			for lease, at := range l.refreshed {
				if now.Sub(at) > time.Hour {
					delete(l.refreshed, lease)
				}
			}
		}
		l.leaseMu.Unlock()
		if !due {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := l.cli.KeepAliveOnce(rctx, clientv3.LeaseID(info.Lease)); err != nil {
			l.log.Warn("refresh producer lease", "lease", info.Lease, "err", err)
			l.leaseMu.Lock()
			delete(l.refreshed, info.Lease)
			l.leaseMu.Unlock()
		}
		cancel()
	}
}
