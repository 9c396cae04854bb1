package bounded

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The etcd client waits for a connection before it sends a request
// (gRPC's WaitForReady): while etcd is down every call would block until
// its caller's deadline, and most callers have none. The wrappers below
// give every unary call a deadline of its own, the client's request
// timeout, and turn its expiry into ErrUnavailable, so that an outage is
// answered in bounded time and the caller can retry. Streams (watches,
// lease keep-alives) are not bounded: they resume by themselves when etcd
// is back.

// Health remembers when etcd last answered and since when it has not.
type Health struct {
	timeout  time.Duration
	lastOK   atomic.Int64 // unix nanoseconds of the last answer
	downFrom atomic.Int64 // unix nanoseconds since when every call failed; 0: none
}

// downWait is how long a call waits for a connection once etcd has not
// answered for a whole request timeout: calls fail fast while it is known
// to be down, and still succeed as soon as it is back (the connection is
// retried at least every second).
const downWait = time.Second

// record notes the outcome of a call that started at start.
func (h *Health) record(start time.Time, err error) {
	if err == nil || !IsUnavailable(err) {
		h.lastOK.Store(time.Now().UnixNano())
		h.downFrom.Store(0)
		return
	}
	// Unanswered since the call began, or since the last answer if that
	// came later.
	h.downFrom.CompareAndSwap(0, max(start.UnixNano(), h.lastOK.Load()))
}

// Suspect notes that etcd did not answer another process on this node's
// behalf (a sequencer whose write timed out) since the given time, unless
// this client has already noted a failure: until one of its own calls is
// answered, calls wait downWait rather than the whole request timeout. A
// wrong suspicion costs little: a call etcd answers within downWait
// clears it.
func (h *Health) Suspect(since time.Time) {
	// The peer waited out etcd before it said so: count the outage as a
	// whole request timeout at least.
	h.downFrom.CompareAndSwap(0, min(since.UnixNano(), time.Now().Add(-h.timeout).UnixNano()))
}

// Down reports how long etcd has failed every call (0: it answers).
func (h *Health) Down() time.Duration {
	from := h.downFrom.Load()
	if from == 0 {
		return 0
	}
	return time.Since(time.Unix(0, from))
}

// bound returns ctx with the request deadline, and a function that
// classifies the call's error and releases the context.
func (h *Health) bound(ctx context.Context) (context.Context, func(error) error) {
	wait := h.timeout
	if h.Down() >= h.timeout {
		wait = min(wait, downWait)
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, wait)
	return cctx, func(err error) error {
		defer cancel()
		if err != nil && ctx.Err() == nil && cctx.Err() != nil {
			// Our deadline, not the caller's: etcd did not answer.
			err = fmt.Errorf("%w: etcd did not answer within %v (etcd_request_timeout)", ErrUnavailable, wait)
		}
		if ctx.Err() == nil {
			h.record(start, err)
		}
		return err
	}
}

// Wrap bounds the unary calls of cli's KV, Lease and Maintenance by
// timeout and returns the health they record.
func Wrap(cli *clientv3.Client, timeout time.Duration) *Health {
	h := &Health{timeout: timeout}
	h.record(time.Now(), nil)
	cli.KV = boundedKV{KV: cli.KV, h: h}
	cli.Lease = boundedLease{Lease: cli.Lease, h: h}
	cli.Maintenance = boundedMaintenance{Maintenance: cli.Maintenance, h: h}
	return h
}

// Timeout is the request timeout.
func (h *Health) Timeout() time.Duration { return h.timeout }

// ErrUnavailable marks a request etcd did not answer in time: etcd is
// down, unreachable or without a leader. It is worth a retry.
var ErrUnavailable = errors.New("etcd unavailable")

type boundedKV struct {
	clientv3.KV
	h *Health
}

func (kv boundedKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	ctx, done := kv.h.bound(ctx)
	resp, err := kv.KV.Put(ctx, key, val, opts...)
	return resp, done(err)
}

func (kv boundedKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	ctx, done := kv.h.bound(ctx)
	resp, err := kv.KV.Get(ctx, key, opts...)
	return resp, done(err)
}

func (kv boundedKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	ctx, done := kv.h.bound(ctx)
	resp, err := kv.KV.Delete(ctx, key, opts...)
	return resp, done(err)
}

func (kv boundedKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	ctx, done := kv.h.bound(ctx)
	resp, err := kv.KV.Do(ctx, op)
	return resp, done(err)
}

// Compact is not bounded: a physical compaction may take long on a large
// database, and it runs in the background.

func (kv boundedKV) Txn(ctx context.Context) clientv3.Txn {
	return &boundedTxn{kv: kv, ctx: ctx}
}

// boundedTxn collects the transaction and sends it at Commit, so that the
// deadline starts when the request does.
type boundedTxn struct {
	kv          boundedKV
	ctx         context.Context
	cmps        []clientv3.Cmp
	thens, elss []clientv3.Op
}

func (t *boundedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cmps = append(t.cmps, cs...)
	return t
}

func (t *boundedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.thens = append(t.thens, ops...)
	return t
}

func (t *boundedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.elss = append(t.elss, ops...)
	return t
}

func (t *boundedTxn) Commit() (*clientv3.TxnResponse, error) {
	ctx, done := t.kv.h.bound(t.ctx)
	resp, err := t.kv.KV.Txn(ctx).If(t.cmps...).Then(t.thens...).Else(t.elss...).Commit()
	return resp, done(err)
}

// boundedLease bounds the unary lease calls; KeepAlive is a stream.
type boundedLease struct {
	clientv3.Lease
	h *Health
}

func (l boundedLease) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	ctx, done := l.h.bound(ctx)
	resp, err := l.Lease.Grant(ctx, ttl)
	return resp, done(err)
}

func (l boundedLease) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	ctx, done := l.h.bound(ctx)
	resp, err := l.Lease.Revoke(ctx, id)
	return resp, done(err)
}

func (l boundedLease) TimeToLive(ctx context.Context, id clientv3.LeaseID, opts ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error) {
	ctx, done := l.h.bound(ctx)
	resp, err := l.Lease.TimeToLive(ctx, id, opts...)
	return resp, done(err)
}

func (l boundedLease) Leases(ctx context.Context) (*clientv3.LeaseLeasesResponse, error) {
	ctx, done := l.h.bound(ctx)
	resp, err := l.Lease.Leases(ctx)
	return resp, done(err)
}

func (l boundedLease) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	ctx, done := l.h.bound(ctx)
	resp, err := l.Lease.KeepAliveOnce(ctx, id)
	return resp, done(err)
}

// boundedMaintenance bounds Status (readiness and stats); defragmentation
// and snapshots take as long as they take.
type boundedMaintenance struct {
	clientv3.Maintenance
	h *Health
}

func (m boundedMaintenance) Status(ctx context.Context, endpoint string) (*clientv3.StatusResponse, error) {
	ctx, done := m.h.bound(ctx)
	resp, err := m.Maintenance.Status(ctx, endpoint)
	return resp, done(err)
}

// IsUnavailable reports whether err is etcd failing to answer (no leader,
// connection lost, too many requests, timed out): worth a retry, as opposed
// to a request etcd refused. ErrUnavailable (no answer within the
// client's request timeout) is one.
func IsUnavailable(err error) bool {
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	var code codes.Code
	var ee rpctypes.EtcdError
	switch {
	case errors.As(err, &ee):
		code = ee.Code()
	default:
		st, ok := status.FromError(err)
		if !ok {
			return false
		}
		code = st.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}
