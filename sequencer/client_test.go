package sequencer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

// TestClientKeepsTheLeader: a client reads the leader's id from etcd once
// for any number of commits, and again only when the leader it kept
// refuses (it stopped leading); every commit is answered.
func TestClientKeepsTheLeader(t *testing.T) {
	ctx := context.Background()
	cl, _, c := leaderOver(t, "t", 4, true)
	var reads atomic.Int64
	read := c.leaderOf
	c.leaderOf = func(ctx context.Context) (string, error) {
		reads.Add(1)
		return read(ctx)
	}
	commit := func(i int) {
		t.Helper()
		id := fmt.Sprintf("objects/c%d.vseg", i)
		res, err := c.Commit(ctx, id, flush("t", id, []int32{0, 1, 2, 3}, func(int32) int64 { return 1 }))
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("commit %d: %v", i, r.Err)
			}
		}
	}
	for i := range 50 {
		commit(i)
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("50 commits read the leader %d times, want once", n)
	}
	// a stops leading (its server still answers, refusing); b takes over.
	cl.kill("a")
	b := cl.start(Config{ID: "b"})
	waitLeading(t, b)
	for i := 50; i < 100; i++ {
		commit(i)
	}
	if n := reads.Load(); n < 2 {
		t.Fatalf("the leader was read %d times across a failover, want again after a refused", n)
	}
	t.Logf("100 commits across a failover: %d leader reads", reads.Load())
}

// timedOutLeader is a leader whose etcd does not answer: its first Commit
// fails as a real leader's does after its write waited out etcd's request
// timeout; the next `refusals` calls refuse (it stopped leading), which
// is retriable; later ones commit.
type timedOutLeader struct {
	calls    atomic.Int64
	refusals atomic.Int64
}

func (l *timedOutLeader) Commit(_ context.Context, _ string, appends []metadata.Append) ([]metadata.AppendResult, error) {
	n := l.calls.Add(1)
	switch {
	case n == 1:
		return nil, fmt.Errorf("%w: write sequencer batch 5: %w: etcd did not answer within 5s", metadata.ErrCommitUnknown, metadata.ErrUnavailable)
	case n <= 1+l.refusals.Load():
		return nil, fmt.Errorf("%w: term ended", ErrNotLeader)
	}
	out := make([]metadata.AppendResult, len(appends))
	for i := range out {
		out[i].Base = int64(i)
	}
	return out, nil
}

func (l *timedOutLeader) ReadProducer(context.Context, int64, int32, bool, string, []int32) (*metadata.ProducerView, error) {
	return nil, ErrNotLeader
}

// TestClientLeaderTimedOutOnEtcd: when the leader answers that its etcd
// write went unanswered for its request timeout, the commit fails at once
// (outcome unknown) through the RPC as in process, instead of reading
// the election from etcd for another timeout (e2e TestEtcdOutage answered
// a produce after 10 s when it did); a refusal that is not etcd's outage
// is still retried.
func TestClientLeaderTimedOutOnEtcd(t *testing.T) {
	meta := connectEtcd(t)
	for _, rpc := range []bool{false, true} {
		t.Run(fmt.Sprintf("rpc=%v", rpc), func(t *testing.T) {
			leader := &timedOutLeader{}
			leader.refusals.Store(3)
			id := "in-process"
			dial := func(context.Context, string) (Service, error) { return leader, nil }
			if rpc {
				mux := http.NewServeMux()
				mux.Handle(NewHandler(leader))
				srv := httptest.NewServer(mux)
				defer srv.Close()
				id, dial = srv.URL, NewDialer(srv.Client())
			}
			c := NewClient(meta, dial)
			var reads atomic.Int64
			c.leaderOf = func(context.Context) (string, error) { reads.Add(1); return id, nil }
			appends := flush("t", "objects/a.vseg", []int32{0, 1}, func(int32) int64 { return 1 })
			res, err := c.Commit(context.Background(), "objects/a.vseg", appends)
			if !errors.Is(err, metadata.ErrUnavailable) || !errors.Is(err, metadata.ErrCommitUnknown) {
				t.Fatalf("commit through a leader whose etcd timed out: %v; want etcd unavailable, outcome unknown", err)
			}
			for _, r := range res {
				if !errors.Is(r.Err, metadata.ErrCommitUnknown) {
					t.Fatalf("result %+v; want outcome unknown", r)
				}
			}
			if n, r := leader.calls.Load(), reads.Load(); n != 1 || r != 1 {
				t.Fatalf("%d calls, %d leader reads; want 1 and 1 (no retry after the leader waited out etcd)", n, r)
			}
			// A plain refusal is retried, the leader read again, until a
			// leader commits.
			res, err = c.Commit(context.Background(), "objects/b.vseg", appends)
			if err != nil || len(res) != len(appends) {
				t.Fatalf("commit through a leader that refused 3 times: %d results, %v; want committed after retries", len(res), err)
			}
			if n, r := leader.calls.Load(), reads.Load(); n != 5 || r < 3 {
				t.Fatalf("%d calls, %d leader reads; want 5 calls (3 refused) and the leader read again", n, r)
			}
			// One that refuses for good is given up when MaxCommitTime
			// passes. In process its last answer is the refusal; through
			// the RPC the deadline may cut a call short, and the outcome
			// of that call is unknown instead (not checked here).
			leader.refusals.Store(1 << 40)
			c.MaxCommitTime = 300 * time.Millisecond
			_, err = c.Commit(context.Background(), "objects/c.vseg", appends)
			if !rpc && !errors.Is(err, ErrNotLeader) || rpc && !errors.Is(err, ErrNotLeader) && !errors.Is(err, metadata.ErrCommitUnknown) {
				t.Fatalf("commit through a refusing leader: %v; want not leader after retries (or outcome unknown when the deadline cut an RPC)", err)
			}
		})
	}
}

// slowRefusal refuses every call (its term ended) after delay, as a
// leader does with the commits queued behind a write that waited out
// etcd.
type slowRefusal struct{ delay time.Duration }

func (l slowRefusal) Commit(context.Context, string, []metadata.Append) ([]metadata.AppendResult, error) {
	time.Sleep(l.delay)
	return nil, fmt.Errorf("%w: term ended", ErrNotLeader)
}

func (l slowRefusal) ReadProducer(context.Context, int64, int32, bool, string, []int32) (*metadata.ProducerView, error) {
	return nil, ErrNotLeader
}

// TestClientRefusedLateReadsLeaderWithinTimeout: a commit refused by its
// leader after most of etcd's request timeout (the leader's write waited
// for etcd just before it arrived), with etcd then unanswering, ends
// within one request timeout of its start: the next read of the leader
// gets what is left of it, not a whole timeout more (e2e TestEtcdOutage
// answered a produce after 10 s when a commit's first attempt had taken
// 4.99 s of the 5).
func TestClientRefusedLateReadsLeaderWithinTimeout(t *testing.T) {
	const timeout = time.Second
	meta, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(t), RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	leader := slowRefusal{delay: timeout * 7 / 10}
	c := NewClient(meta, func(context.Context, string) (Service, error) { return leader, nil })
	var reads atomic.Int64
	c.leaderOf = func(ctx context.Context) (string, error) {
		if reads.Add(1) == 1 {
			return "a", nil
		}
		<-ctx.Done() // etcd does not answer
		return "", fmt.Errorf("read sequencer leader: %w", ctx.Err())
	}
	start := time.Now()
	appends := flush("t", "objects/a.vseg", []int32{0}, func(int32) int64 { return 1 })
	_, err = c.Commit(context.Background(), "objects/a.vseg", appends)
	took := time.Since(start)
	if !errors.Is(err, metadata.ErrUnavailable) {
		t.Fatalf("commit: %v; want etcd unavailable", err)
	}
	if took > timeout+timeout/2 {
		t.Fatalf("commit answered after %v, want within about one request timeout (%v)", took, timeout)
	}
	t.Logf("answered after %v, %d leader reads", took, reads.Load())
}
