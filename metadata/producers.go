package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Idempotence errors. Each leaves the log unchanged.
var (
	// ErrProducerFenced: a newer epoch of the producer id exists.
	ErrProducerFenced = errors.New("producer fenced")
	// ErrOutOfOrderSequence: a batch's first sequence is neither the next
	// one expected nor that of a recent batch (a gap, or a stale retry).
	ErrOutOfOrderSequence = errors.New("out of order sequence")
	// ErrUnknownProducer: the producer id was never issued or its state
	// expired (no commit for producer_state_ttl).
	ErrUnknownProducer = errors.New("unknown producer")
	// ErrEpochAhead: a batch carries an epoch of the producer newer than
	// the one issued (it also wraps ErrInvalidArgument). A Kafka client
	// bumps its epoch itself after a refused batch (KIP-360), which the
	// Kafka listener then advances (AdvanceProducerEpoch).
	ErrEpochAhead = errors.New("producer epoch ahead of the issued one")
	// ErrBlockRefused: the block holding the records was not committed
	// because another batch in it was a duplicate or out of order. Nothing
	// of it is in the log; a retry is safe.
	ErrBlockRefused = errors.New("block not committed")
)

// DefaultProducerStateTTL is how long a producer's state outlives its last
// commit (Kafka's transactional.id.expiration.ms default).
const DefaultProducerStateTTL = 24 * time.Hour

// recentBatches is how many committed batches per (producer, partition) a
// duplicate can match (Kafka keeps 5).
const recentBatches = 5

// ProducerBatch is one producer's records inside a block: Count records
// with sequences FirstSeq.., the first at record Index of the block.
type ProducerBatch struct {
	ID       int64
	Epoch    int32
	FirstSeq int32
	Count    int32
	Index    int64
}

// BatchResult is the outcome of one ProducerBatch: committed (Base is its
// first offset), a duplicate of a committed batch (Duplicate, Base is the
// original first offset), or refused (Err).
type BatchResult struct {
	Base      int64
	Duplicate bool
	Err       error
}

// Producer is an identity issued by InitProducer.
type Producer struct {
	ID    int64
	Epoch int32
	TTL   time.Duration
}

// producerInfo is stored at idem/producers/<id>, bound to the producer's
// lease; every state key of the producer shares the lease.
type producerInfo struct {
	Epoch int32 `json:"e"`
	Lease int64 `json:"l"`
	TTLms int64 `json:"ttl"`
}

// ProducerState is stored at idem/producers/<id>/<topic>/<p>.
type ProducerState struct {
	Epoch  int32         `json:"e"`
	Next   int32         `json:"n"`
	Recent []RecentBatch `json:"r,omitempty"`
}

// RecentBatch is a committed batch a retry may duplicate.
type RecentBatch struct {
	Seq   int32 `json:"s"`
	Base  int64 `json:"b"`
	Count int32 `json:"c"`
}

// checkBatch decides one batch against the producer's info and its state
// for the partition: accepted (dupBase < 0, err nil), a duplicate
// (dupBase >= 0) or refused.
func checkBatch(info *producerInfo, st *ProducerState, b ProducerBatch, topic string, p int32) (dupBase int64, err error) {
	switch {
	case info == nil:
		return -1, fmt.Errorf("%w: producer %d has no state in the cluster (never issued, or idle longer than producer_state_ttl); call InitProducer for a new id", ErrUnknownProducer, b.ID)
	case b.Epoch < info.Epoch:
		return -1, fmt.Errorf("%w: producer %d epoch %d was fenced by epoch %d", ErrProducerFenced, b.ID, b.Epoch, info.Epoch)
	case b.Epoch > info.Epoch:
		return -1, fmt.Errorf("%w: %w: producer %d epoch %d was never issued (current epoch %d)", ErrInvalidArgument, ErrEpochAhead, b.ID, b.Epoch, info.Epoch)
	case b.FirstSeq < 0 || b.Count <= 0 || int64(b.FirstSeq)+int64(b.Count) > math.MaxInt32:
		return -1, fmt.Errorf("%w: producer %d batch for %s/%d: sequence %d with %d records is out of range", ErrInvalidArgument, b.ID, topic, p, b.FirstSeq, b.Count)
	}
	if st == nil || st.Epoch < b.Epoch {
		if b.FirstSeq != 0 {
			return -1, fmt.Errorf("%w: producer %d epoch %d on %s/%d: expected sequence 0 (first batch of the epoch), got %d", ErrOutOfOrderSequence, b.ID, b.Epoch, topic, p, b.FirstSeq)
		}
		return -1, nil
	}
	if b.FirstSeq == st.Next {
		return -1, nil
	}
	for _, r := range st.Recent {
		if r.Seq == b.FirstSeq {
			if r.Count != b.Count {
				return -1, fmt.Errorf("%w: producer %d epoch %d on %s/%d: the batch at sequence %d had %d records, the retry has %d", ErrOutOfOrderSequence, b.ID, b.Epoch, topic, p, b.FirstSeq, r.Count, b.Count)
			}
			return r.Base, nil
		}
	}
	return -1, fmt.Errorf("%w: producer %d epoch %d on %s/%d: expected sequence %d, got %d", ErrOutOfOrderSequence, b.ID, b.Epoch, topic, p, st.Next, b.FirstSeq)
}

// advance returns st after the accepted batch b committed at base.
func advance(st *ProducerState, b ProducerBatch, base int64) *ProducerState {
	// One allocation for the state and its recent batches: a state is
	// advanced per batch per partition on every commit (the sequencer's
	// decision, each ingest node's memory of its commits). States are
	// shared, never changed: Recent's capacity is its length.
	a := &struct {
		st     ProducerState
		recent [recentBatches]RecentBatch
	}{st: ProducerState{Epoch: b.Epoch, Next: b.FirstSeq + b.Count}}
	var prev []RecentBatch
	if st != nil && st.Epoch == b.Epoch {
		prev = st.Recent[max(0, len(st.Recent)-(recentBatches-1)):]
	}
	n := copy(a.recent[:], prev)
	a.recent[n] = RecentBatch{Seq: b.FirstSeq, Base: base, Count: b.Count}
	a.st.Recent = a.recent[: n+1 : n+1]
	return &a.st
}

// InitProducer issues a producer identity. id 0 asks for a new id (from a
// counter, so ids are never reused) at epoch 0, whose state lives ttl after
// its last commit. An existing id gets its epoch bumped, fencing earlier
// instances; an unknown or expired one fails with ErrUnknownProducer.
func (c *Client) InitProducer(ctx context.Context, id int64, ttl time.Duration) (Producer, error) {
	if id < 0 {
		return Producer{}, fmt.Errorf("%w: producer id %d is negative", ErrInvalidArgument, id)
	}
	if ttl <= 0 {
		ttl = DefaultProducerStateTTL
	}
	if ttl < 2*time.Second {
		return Producer{}, fmt.Errorf("%w: producer state ttl %v is below etcd's 2s minimum", ErrInvalidArgument, ttl)
	}
	if id == 0 {
		return c.newProducer(ctx, ttl)
	}
	return c.bumpProducer(ctx, id, func(cur int32) (int32, error) {
		if cur == math.MaxInt32 {
			return 0, fmt.Errorf("init producer %d: %w: epoch exhausted; ask for a new id", id, ErrInvalidArgument)
		}
		return cur + 1, nil
	})
}

// AdvanceProducerEpoch moves producer id to epoch when its epoch is older
// (a Kafka client's own bump, KIP-360), fencing the earlier ones as
// InitProducer does; an epoch already reached is left as it is. It never
// moves an epoch more than maxEpochAdvance ahead.
func (c *Client) AdvanceProducerEpoch(ctx context.Context, id int64, epoch int32) (Producer, error) {
	if id <= 0 || epoch < 0 {
		return Producer{}, fmt.Errorf("%w: producer id %d epoch %d", ErrInvalidArgument, id, epoch)
	}
	return c.bumpProducer(ctx, id, func(cur int32) (int32, error) {
		switch {
		case cur >= epoch:
			return cur, nil
		case int64(epoch)-int64(cur) > maxEpochAdvance:
			return 0, fmt.Errorf("advance producer %d: %w: epoch %d is %d past the issued %d (at most %d)", id, ErrInvalidArgument, epoch, int64(epoch)-int64(cur), cur, maxEpochAdvance)
		}
		return epoch, nil
	})
}

// maxEpochAdvance bounds how far AdvanceProducerEpoch moves an epoch at
// once: a client bumps by one per refused batch.
const maxEpochAdvance = 1000

// bumpProducer sets the epoch of producer id to next(its epoch), in one
// transaction (read again when another changed it meanwhile), and starts
// a new TTL; an epoch next leaves as it is writes nothing.
func (c *Client) bumpProducer(ctx context.Context, id int64, next func(int32) (int32, error)) (Producer, error) {
	for {
		resp, err := c.cli.Get(ctx, producerKey(id))
		if err != nil {
			return Producer{}, fmt.Errorf("init producer %d: %w", id, err)
		}
		if len(resp.Kvs) == 0 {
			return Producer{}, fmt.Errorf("init producer %d: %w: the id was never issued or its state expired", id, ErrUnknownProducer)
		}
		var info producerInfo
		if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
			return Producer{}, fmt.Errorf("init producer %d: decode: %w", id, err)
		}
		epoch, err := next(info.Epoch)
		if err != nil {
			return Producer{}, err
		}
		if epoch == info.Epoch {
			return Producer{ID: id, Epoch: info.Epoch, TTL: time.Duration(info.TTLms) * time.Millisecond}, nil
		}
		info.Epoch = epoch
		v, _ := json.Marshal(info)
		tresp, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(producerKey(id)), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(producerKey(id), string(v), clientv3.WithLease(clientv3.LeaseID(info.Lease)))).
			Commit()
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			continue // expired meanwhile: the reread finds no key
		}
		if err != nil {
			return Producer{}, fmt.Errorf("init producer %d: %w", id, err)
		}
		if !tresp.Succeeded {
			continue
		}
		// A new epoch starts a new TTL.
		if _, err := c.cli.KeepAliveOnce(ctx, clientv3.LeaseID(info.Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			c.log.Warn("refresh producer lease", "producer", id, "err", err)
		}
		return Producer{ID: id, Epoch: info.Epoch, TTL: time.Duration(info.TTLms) * time.Millisecond}, nil
	}
}

func (c *Client) newProducer(ctx context.Context, ttl time.Duration) (Producer, error) {
	lease, err := c.cli.Grant(ctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return Producer{}, fmt.Errorf("init producer: grant lease: %w", err)
	}
	for {
		resp, err := c.cli.Get(ctx, producerCounterKey())
		if err != nil {
			return Producer{}, fmt.Errorf("init producer: read id counter: %w", err)
		}
		var next, modRev int64 = 1, 0
		if len(resp.Kvs) > 0 {
			n, perr := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
			if perr != nil {
				return Producer{}, fmt.Errorf("init producer: id counter %q is malformed", resp.Kvs[0].Value)
			}
			next, modRev = n, resp.Kvs[0].ModRevision
		}
		v, _ := json.Marshal(producerInfo{Epoch: 0, Lease: int64(lease.ID), TTLms: ttl.Milliseconds()})
		tresp, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(producerCounterKey()), "=", modRev)).
			Then(clientv3.OpPut(producerCounterKey(), strconv.FormatInt(next+1, 10)),
				clientv3.OpPut(producerKey(next), string(v), clientv3.WithLease(lease.ID))).
			Commit()
		if err != nil {
			return Producer{}, fmt.Errorf("init producer: %w", err)
		}
		if tresp.Succeeded {
			return Producer{ID: next, Epoch: 0, TTL: ttl}, nil
		}
	}
}

// ProducerView is a snapshot of one producer's state on some partitions of
// a topic, for a cheap check before records are buffered. The commit
// transaction checks again, authoritatively.
type ProducerView struct {
	id     int64
	topic  string
	info   *producerInfo
	states map[int32]*ProducerState
	held   bool
}

// Held reports whether the view's identity is one a sequencer leader held
// rather than read from etcd for it: possibly stale (a newer epoch issued,
// the producer expired), so a batch it accepts is still decided by the
// commit, and a refusal or a duplicate must be decided on a fresh read.
func (v *ProducerView) Held() bool { return v.held }

// WithHeld marks v as Held (or not) and returns it.
func (v *ProducerView) WithHeld(held bool) *ProducerView {
	v.held = held
	return v
}

// ReadProducer reads producer id's info and its state on partitions of
// topic in one consistent snapshot, whatever the number of partitions (past
// etcd's operations per transaction, the reads are split and pinned to the
// revision of the first). It always reads etcd: epoch, the requesting
// batch's, and fresh are not needed (they are there for ingest.Committer,
// whose sequencer reader answers from the identity it holds).
func (c *Client) ReadProducer(ctx context.Context, id int64, _ int32, _ bool, topic string, partitions []int32) (*ProducerView, error) {
	ops := make([]clientv3.Op, 0, 1+len(partitions))
	ops = append(ops, clientv3.OpGet(producerKey(id)))
	for _, p := range partitions {
		ops = append(ops, clientv3.OpGet(producerStateKey(id, topic, p)))
	}
	rs, err := c.snapshot(ctx, ops)
	if err != nil {
		return nil, fmt.Errorf("read producer %d on %q (%d partitions): %w", id, topic, len(partitions), err)
	}
	v := &ProducerView{id: id, topic: topic, states: make(map[int32]*ProducerState, len(partitions))}
	if kvs := rs[0].GetResponseRange().Kvs; len(kvs) > 0 {
		v.info = new(producerInfo)
		if err := json.Unmarshal(kvs[0].Value, v.info); err != nil {
			return nil, fmt.Errorf("read producer %d: decode: %w", id, err)
		}
	}
	for i, p := range partitions {
		if kvs := rs[1+i].GetResponseRange().Kvs; len(kvs) > 0 {
			st := new(ProducerState)
			if err := json.Unmarshal(kvs[0].Value, st); err != nil {
				return nil, fmt.Errorf("read producer %d on %s/%d: decode: %w", id, topic, p, err)
			}
			v.states[p] = st
		}
	}
	return v, nil
}

// Check decides batch b on partition p as the commit would now: accepted
// (dupBase < 0, nil), a duplicate answered with its original first offset,
// or refused.
func (v *ProducerView) Check(p int32, b ProducerBatch) (dupBase int64, err error) {
	return checkBatch(v.info, v.states[p], b, v.topic, p)
}

// Assume advances the view as if b (accepted by Check) were committed; the
// ingester uses it for batches it holds that are not committed yet. A batch
// the view already reflects (its commit landed before the view was read,
// while the node still holds it) leaves the view unchanged: counted twice,
// it would push older batches out of the recent ones, and their retries
// would be refused as out of order.
func (v *ProducerView) Assume(p int32, b ProducerBatch) {
	if reflects(v.states[p], b) {
		return
	}
	v.states[p] = advance(v.states[p], b, -1)
}

// reflects reports whether st already counts batch b: b is of st's epoch
// and starts below its next sequence, or st is of a later epoch. Sequences
// of an epoch only grow, so such a batch committed before st was written
// (or can no longer commit). A nil st reflects nothing.
func reflects(st *ProducerState, b ProducerBatch) bool {
	return st != nil && (st.Epoch > b.Epoch || st.Epoch == b.Epoch && b.FirstSeq < st.Next)
}

// Ahead reports whether batch b on partition p is of the view's epoch and
// starts past the next sequence the view expects: a gap that a batch not
// seen yet (one the producer sent earlier, still on its way) may fill.
// Check refuses such a batch as out of order.
func (v *ProducerView) Ahead(p int32, b ProducerBatch) bool {
	if v.info == nil || b.Epoch != v.info.Epoch {
		return false
	}
	st := v.states[p]
	if st == nil || st.Epoch < b.Epoch {
		return b.FirstSeq > 0
	}
	return st.Epoch == b.Epoch && b.FirstSeq > st.Next
}

// Epoch returns the producer's epoch as read, and whether the producer was
// known (its id key existed).
func (v *ProducerView) Epoch() (epoch int32, known bool) {
	if v.info == nil {
		return 0, false
	}
	return v.info.Epoch, true
}

// State returns the producer's state on partition p as read (nil: no batch
// committed there yet). The caller must not modify it.
func (v *ProducerView) State(p int32) *ProducerState {
	return v.states[p]
}

// RememberedView builds a view from states a node remembers (the states its
// own commits wrote, or earlier reads) instead of reading etcd: the producer
// is known at epoch, with states[p] on each partition p (nil: none yet).
// Such a view may be stale: it is good only to accept a batch that the
// commit transaction then checks again; any other answer must come from a
// fresh ReadProducer. The states are shared, not copied; they are never
// modified in place.
func RememberedView(id int64, topic string, epoch int32, states map[int32]*ProducerState) *ProducerView {
	v := &ProducerView{id: id, topic: topic, info: &producerInfo{Epoch: epoch}, states: make(map[int32]*ProducerState, len(states))}
	for p, st := range states {
		v.states[p] = st
	}
	return v
}

// AdvanceState returns the state a producer has on a partition after its
// accepted batch b committed at base, given its state st before (nil:
// none). The commit transaction writes exactly this; st's recent batches
// may be incomplete when st is remembered rather than read.
func AdvanceState(st *ProducerState, b ProducerBatch, base int64) *ProducerState {
	return advance(st, b, base)
}

// ProducerStateKeys counts the idempotence keys in etcd (producer ids and
// their per-partition states), to show they stay bounded.
func (c *Client) ProducerStateKeys(ctx context.Context) (int64, error) {
	resp, err := c.cli.Get(ctx, producersPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("count producer keys: %w", err)
	}
	return resp.Count, nil
}

// leaseRefresh remembers when this process last refreshed each producer
// lease (lease ids are unique in the cluster, so clients may share it).
var leaseRefresh = struct {
	sync.Mutex
	at map[clientv3.LeaseID]time.Time
}{at: map[clientv3.LeaseID]time.Time{}}

// refreshProducerLeases keeps the state of producers that just committed
// alive for another TTL, at most once per TTL/8 per lease and node.
func (c *Client) refreshProducerLeases(ctx context.Context, infos map[int64]*producerInfo) {
	now := time.Now()
	for id, info := range infos {
		ttl := time.Duration(info.TTLms) * time.Millisecond
		lease := clientv3.LeaseID(info.Lease)
		leaseRefresh.Lock()
		last, ok := leaseRefresh.at[lease]
		due := !ok || now.Sub(last) >= ttl/8
		if due {
			leaseRefresh.at[lease] = now
		}
		if len(leaseRefresh.at) > 4096 {
			for l, at := range leaseRefresh.at {
				if now.Sub(at) > time.Hour {
					delete(leaseRefresh.at, l)
				}
			}
		}
		leaseRefresh.Unlock()
		if !due {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := c.cli.KeepAliveOnce(rctx, lease); err != nil {
			c.log.Warn("refresh producer lease", "producer", id, "err", err)
			leaseRefresh.Lock()
			delete(leaseRefresh.at, lease)
			leaseRefresh.Unlock()
		}
		cancel()
	}
}
