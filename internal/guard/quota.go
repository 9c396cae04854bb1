package guard

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/metadata"
)

// QuotaConfig holds the byte rates of principals across the cluster.
type QuotaConfig struct {
	// ProduceBytes and FetchBytes are the default rates (bytes/s; 0: none).
	ProduceBytes, FetchBytes int64
	// Principals override the defaults for some principals.
	Principals map[string]Quota
}

// Quota is one principal's rates (bytes/s; 0: none).
type Quota struct{ ProduceBytes, FetchBytes int64 }

// ParseQuotas reads quota overrides, each PRINCIPAL:produce=BYTES or
// PRINCIPAL:fetch=BYTES, BYTES read by parseBytes.
func ParseQuotas(items []string, parseBytes func(string) (int64, error)) (map[string]Quota, error) {
	out := map[string]Quota{}
	for _, it := range items {
		p, rest, ok := strings.Cut(it, ":")
		dir, val, ok2 := strings.Cut(rest, "=")
		if !ok || !ok2 || p == "" {
			return nil, fmt.Errorf("quota %q: want PRINCIPAL:produce=BYTES or PRINCIPAL:fetch=BYTES", it)
		}
		n, err := parseBytes(val)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("quota %q: bytes %q: want a number of bytes such as 1MiB", it, val)
		}
		q := out[p]
		switch dir {
		case "produce":
			q.ProduceBytes = n
		case "fetch":
			q.FetchBytes = n
		default:
			return nil, fmt.Errorf("quota %q: %q is not produce or fetch", it, dir)
		}
		out[p] = q
	}
	return out, nil
}

// quotas enforces the rates on this node. Each node gives a principal the
// cluster rate divided by the number of live nodes of the role (ingest for
// produce, fetch for fetch), read from their etcd registrations: a client
// spread over every node gets the whole rate, one pinned to a single node
// gets its share (never more than the whole rate in total, with no traffic
// between nodes).
type quotas struct {
	cfg    QuotaConfig
	log    *slog.Logger
	ingest atomic.Int64 // live nodes per role (at least 1)
	fetch  atomic.Int64
	stops  []func()

	mu      sync.Mutex
	buckets map[string]*bucket // "produce/alice"
}

// burstSeconds is how much of its rate a principal may spend at once
// after a pause: a tenth of a second, so a rate holds over any second.
const burstSeconds = 0.1

type bucket struct {
	tokens float64
	last   time.Time
}

func newQuotas(ctx context.Context, meta *metadata.Client, cfg QuotaConfig, log *slog.Logger) *quotas {
	q := &quotas{cfg: cfg, log: log, buckets: map[string]*bucket{}}
	q.ingest.Store(1)
	q.fetch.Store(1)
	if cfg.ProduceBytes == 0 && cfg.FetchBytes == 0 && len(cfg.Principals) == 0 {
		return q
	}
	for role, n := range map[string]*atomic.Int64{"ingest": &q.ingest, "fetch": &q.fetch} {
		stop, err := meta.WatchNodes(ctx, role, func(m map[string]string) { n.Store(max(1, int64(len(m)))) })
		if err != nil {
			log.Warn("quotas: cannot watch the live nodes; each node enforces the whole rate", "role", role, "err", err)
			continue
		}
		q.stops = append(q.stops, stop)
	}
	return q
}

func (q *quotas) close() {
	for _, s := range q.stops {
		s()
	}
}

func (q *quotas) rate(principal, dir string) float64 {
	qq, ok := q.cfg.Principals[principal]
	if !ok {
		qq = Quota{ProduceBytes: q.cfg.ProduceBytes, FetchBytes: q.cfg.FetchBytes}
	}
	if dir == "produce" {
		return float64(qq.ProduceBytes) / float64(q.ingest.Load())
	}
	return float64(qq.FetchBytes) / float64(q.fetch.Load())
}

// take charges n bytes to principal's dir bucket; when the bucket is in
// debt it charges nothing and returns how long until it is not.
func (q *quotas) take(principal, dir string, n int, charge bool) time.Duration {
	r := q.rate(principal, dir)
	if r <= 0 {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.refill(principal, dir, r)
	if b.tokens < 0 && !charge {
		return time.Duration(-b.tokens / r * float64(time.Second))
	}
	b.tokens -= float64(n)
	return 0
}

// refill returns principal's dir bucket, refilled at rate r up to its
// burst. q.mu is held.
func (q *quotas) refill(principal, dir string, r float64) *bucket {
	k := dir + "/" + principal
	b := q.buckets[k]
	now := time.Now()
	burst := r * burstSeconds
	if b == nil {
		b = &bucket{tokens: burst, last: now}
		q.buckets[k] = b
	}
	b.tokens = min(burst, b.tokens+r*now.Sub(b.last).Seconds())
	b.last = now
	return b
}

func exhausted(principal, dir string, wait time.Duration) error {
	wait = max(wait, 10*time.Millisecond)
	ce := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("principal %q is over its %s quota: retry in %s", principal, dir, wait.Round(time.Millisecond)))
	if d, err := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(wait)}); err == nil {
		ce.AddDetail(d)
	}
	return ce
}

// maxThrottle is the longest a produce over its quota is held before it
// is served: like a Kafka broker delaying its answer, so a pipelined
// producer keeps its requests in flight and in order and gets exactly its
// rate. A request that would wait longer is refused with RetryInfo.
const maxThrottle = time.Second

// before throttles a produce (charging its request bytes, as sent) or
// refuses it when it would wait over maxThrottle, and refuses a fetch of a
// principal in debt.
func (q *quotas) before(ctx context.Context, id Identity, proc string, req any) error {
	if id.Super || id.Node {
		return nil
	}
	switch proc {
	case varvev1connect.ProduceServiceProduceProcedure:
		m, _ := req.(proto.Message)
		if m == nil {
			return nil
		}
		w, ok := q.reserve(id.Principal, "produce", proto.Size(m), maxThrottle)
		if !ok {
			return exhausted(id.Principal, "produce", w)
		}
		if w > 0 {
			t := time.NewTimer(w)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("throttled by the produce quota of %q: %w", id.Principal, ctx.Err()))
			case <-t.C:
			}
		}
	case varvev1connect.FetchServiceFetchProcedure, varvev1connect.FetchServiceFetchPartitionsProcedure:
		if w := q.take(id.Principal, "fetch", 0, false); w > 0 {
			return exhausted(id.Principal, "fetch", w)
		}
	}
	return nil
}

// reserve charges n bytes to principal's dir bucket and returns how long
// until they are covered, or, when that is over limit, charges nothing and
// returns how long until a request of n bytes would wait no more than
// limit (a request too large for any wait is served, after limit, when
// the bucket is full).
func (q *quotas) reserve(principal, dir string, n int, limit time.Duration) (time.Duration, bool) {
	r := q.rate(principal, dir)
	if r <= 0 {
		return 0, true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	b := q.refill(principal, dir, r)
	wait := time.Duration(max(0, float64(n)-b.tokens) / r * float64(time.Second))
	if wait > limit {
		if b.tokens < r*burstSeconds {
			return wait - limit, false
		}
		// Larger than any wait allows: served from a full bucket, which
		// it leaves in debt for the requests after it.
		wait = limit
	}
	b.tokens -= float64(n)
	return wait, true
}

// after charges a fetch's answer.
func (q *quotas) after(id Identity, proc string, resp any) {
	if id.Super || id.Node || (proc != varvev1connect.FetchServiceFetchProcedure && proc != varvev1connect.FetchServiceFetchPartitionsProcedure) {
		return
	}
	if m, ok := resp.(proto.Message); ok {
		q.take(id.Principal, "fetch", proto.Size(m), true)
	}
}

// stream charges a Subscribe message, waiting while the principal is in
// debt (a stream cannot be answered "retry later" message by message).
func (q *quotas) stream(ctx context.Context, id Identity, proc string, msg any) error {
	if id.Super || id.Node || proc != varvev1connect.FetchServiceSubscribeProcedure {
		return nil
	}
	m, ok := msg.(proto.Message)
	if !ok {
		return nil
	}
	for {
		w := q.take(id.Principal, "fetch", 0, false)
		if w == 0 {
			break
		}
		t := time.NewTimer(w)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	q.take(id.Principal, "fetch", proto.Size(m), true)
	return nil
}
