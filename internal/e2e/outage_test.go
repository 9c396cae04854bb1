package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

// etcdOutage is VARVE_ETCD_OUTAGE (a Go duration), how long
// TestEtcdOutage keeps etcd down; default 20s.
func etcdOutage(t *testing.T) time.Duration {
	t.Helper()
	s := os.Getenv("VARVE_ETCD_OUTAGE")
	if s == "" {
		return 20 * time.Second
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		t.Fatalf("VARVE_ETCD_OUTAGE=%q: want a duration of at least 1s, like 120s", s)
	}
	return d
}

// etcdProc is `varve etcd` as its own process, so that it can be killed
// and started again on the same data directory and ports.
type etcdProc struct {
	t                  *testing.T
	dir                string
	clientURL, peerURL string
	p                  *proc
}

func startEtcdProc(t *testing.T) *etcdProc {
	t.Helper()
	e := &etcdProc{
		t:         t,
		dir:       filepath.Join(t.TempDir(), "etcd"),
		clientURL: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		peerURL:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
	}
	e.start()
	return e
}

func (e *etcdProc) start() {
	e.t.Helper()
	e.p = startProc(e.t, "etcd", cleanEnv(), "etcd", "--data-dir", e.dir, "--listen-client", e.clientURL, "--listen-peer", e.peerURL)
	if !testenv.EventuallyEvery(readyTimeout, pollInterval, func() bool {
		if e.p.exited() {
			e.p.fatalf("exited before it was ready")
		}
		b, _ := os.ReadFile(e.p.logPath)
		return strings.Contains(string(b), "etcd ready")
	}) {
		e.p.fatalf("not ready after %v", readyTimeout)
	}
}

// TestEtcdOutage kills the cluster's etcd (SIGKILL) under two producing
// `varve serve` nodes, keeps it down for VARVE_ETCD_OUTAGE and starts it
// again on the same data and ports. While it is down, metadata calls
// (ListTopics, DescribeTopic, ListOffsets, `varve consume`) and produces
// answer UNAVAILABLE with retry advice within the etcd request timeout,
// and /readyz is 503. Once etcd answers again, acknowledgements resume on
// both nodes within 3 s whatever the outage's length, a record produced
// on one node is fetched on the other (the index watch is back), and every
// record acknowledged before, during or after the outage is in the log at
// its acknowledged offset.
func TestEtcdOutage(t *testing.T) {
	const (
		topic      = "outage"
		partitions = 2
		// requestTimeout is the nodes' etcd_request_timeout (the default).
		requestTimeout = metadata.DefaultRequestTimeout
		// slack covers the request's own work and a loaded test machine.
		slack = 2 * time.Second
		// resumeGoal is how soon after etcd answers again acks must resume.
		resumeGoal = 3 * time.Second
	)
	outage := etcdOutage(t)
	etcd := startEtcdProc(t)
	m := testenv.MinIO(t)
	c := &cluster{t: t, etcd: []string{etcd.clientURL}, minio: m, bucket: m.NewBucket(t)}
	nodes := []*serveNode{
		c.startServe("outage-0", loopbackListen(t), "--linger", "10ms"),
		c.startServe("outage-1", loopbackListen(t), "--linger", "10ms"),
	}
	apis := []*api{newAPI(nodes[0].addr), newAPI(nodes[1].addr)}
	apis[0].createTopic(t, topic, partitions)

	// Producers, three per node, each sending one record at a time, as
	// fast as they are answered, until stopped. Concurrent requests make
	// a node hold several segments waiting for their commits when etcd
	// dies: every one of them must be answered within the bound.
	type ack struct {
		value     string
		partition int32
		offset    int64
		at        time.Time
	}
	var (
		mu       sync.Mutex
		acks     []ack
		lastAck  = make([]time.Time, len(nodes))
		failures atomic.Int64
		slowFail time.Duration // the slowest UNAVAILABLE answer to a produce
		hung     atomic.Pointer[string]
	)
	// stop ends the producers after their requests in flight are
	// answered, so that the log does not grow after they return.
	var stop atomic.Bool
	defer stop.Store(true)
	var wg sync.WaitGroup
	for g := range 3 * len(apis) {
		i, a := g%len(apis), apis[g%len(apis)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; !stop.Load(); seq++ {
				v := fmt.Sprintf("n%d-g%d-%d", i, g, seq)
				p := int32(seq % partitions)
				start := time.Now()
				rctx, cancel := context.WithTimeout(context.Background(), requestTimeout+slack)
				res, err := a.produce.Produce(rctx, connect.NewRequest(&varvev1.ProduceRequest{
					Topic: topic, Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(p), Record: &varvev1.Record{Value: []byte(v)}}},
				}))
				cancel()
				switch {
				case err == nil:
					mu.Lock()
					acks = append(acks, ack{value: v, partition: p, offset: res.Msg.GetResults()[0].GetOffset(), at: time.Now()})
					lastAck[i] = time.Now()
					mu.Unlock()
				case connect.CodeOf(err) == connect.CodeUnavailable:
					failures.Add(1)
					mu.Lock()
					slowFail = max(slowFail, time.Since(start))
					mu.Unlock()
				default:
					msg := fmt.Sprintf("produce %s via node %d answered %v after %v; want an ack or UNAVAILABLE within %v", v, i, err, time.Since(start).Round(time.Millisecond), requestTimeout+slack)
					hung.CompareAndSwap(nil, &msg)
					failures.Add(1)
				}
			}
		}()
	}
	acked := func(i int) time.Time {
		mu.Lock()
		defer mu.Unlock()
		return lastAck[i]
	}
	// Both nodes acknowledge before the outage.
	before := time.Now()
	if !testenv.EventuallyEvery(30*time.Second, pollInterval, func() bool {
		return acked(0).After(before) && acked(1).After(before)
	}) {
		t.Fatalf("no acks from both nodes before the outage")
	}

	// The outage.
	etcd.p.kill9()
	// Hold etcd's ports while it is down: the tests of other packages,
	// run in parallel, pick free ports, and a node reaching another
	// test's etcd on this one's port once answered while "etcd is down".
	releaseClient, releasePeer := holdPort(t, etcd.clientURL), holdPort(t, etcd.peerURL)
	down := time.Now()
	t.Logf("etcd killed; keeping it down for %v", outage)

	// unavailable requires an UNAVAILABLE answer with RetryInfo within
	// the request timeout.
	unavailable := func(what string, call func(context.Context) error) time.Duration {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout+slack)
		defer cancel()
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		var ce *connect.Error
		switch {
		case err == nil:
			t.Fatalf("%s succeeded while etcd is down", what)
		case ctx.Err() != nil:
			t.Fatalf("%s: no answer within %v while etcd is down (%v)", what, requestTimeout+slack, err)
		case !errors.As(err, &ce) || ce.Code() != connect.CodeUnavailable:
			t.Fatalf("%s answered %v while etcd is down; want UNAVAILABLE", what, err)
		}
		retry := false
		for _, d := range ce.Details() {
			if v, err := d.Value(); err == nil {
				if ri, ok := v.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
					retry = true
				}
			}
		}
		if !retry {
			t.Fatalf("%s: UNAVAILABLE without RetryInfo: %v", what, err)
		}
		return took
	}
	for i, a := range apis {
		took := unavailable(fmt.Sprintf("ListTopics on node %d", i), func(ctx context.Context) error {
			_, err := a.topics.ListTopics(ctx, connect.NewRequest(&varvev1.ListTopicsRequest{}))
			return err
		})
		t.Logf("node %d: ListTopics UNAVAILABLE after %v", i, took.Round(time.Millisecond))
		unavailable(fmt.Sprintf("DescribeTopic on node %d", i), func(ctx context.Context) error {
			_, err := a.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: topic}))
			return err
		})
		unavailable(fmt.Sprintf("ListOffsets on node %d", i), func(ctx context.Context) error {
			_, err := a.fetch.ListOffsets(ctx, connect.NewRequest(&varvev1.ListOffsetsRequest{Topic: topic, Spec: varvev1.OffsetSpec_OFFSET_SPEC_LATEST}))
			return err
		})
		start := time.Now()
		r := runCLI(t, "", "consume", topic, "--addr", a.addr)
		if took := time.Since(start); r.code == 0 || took > requestTimeout+slack || !strings.Contains(r.stderr, "unavailable") {
			t.Fatalf("`varve consume` while etcd is down: want a non-zero exit naming UNAVAILABLE within %v, took %v:\n%s", requestTimeout+slack, took, r)
		}
		if code, body := httpGet(t, a.addr+"/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("node %d: /readyz %d (%s) while etcd is down; want 503", i, code, body)
		}
	}
	// Every call keeps answering within the bound for the whole outage.
	calls := 0
	var slowest time.Duration
	for time.Since(down) < outage {
		took := unavailable(fmt.Sprintf("ListTopics on node %d, %v into the outage", calls%2, time.Since(down).Round(time.Second)), func(ctx context.Context) error {
			_, err := apis[calls%2].topics.ListTopics(ctx, connect.NewRequest(&varvev1.ListTopicsRequest{}))
			return err
		})
		slowest = max(slowest, took)
		calls++
	}
	if msg := hung.Load(); msg != nil {
		t.Fatal(*msg)
	}
	if failures.Load() == 0 {
		t.Fatalf("no produce was answered during the outage of %v", outage)
	}
	mu.Lock()
	t.Logf("%d ListTopics during the outage, all UNAVAILABLE, the slowest after %v; %d produces answered UNAVAILABLE, the slowest after %v", calls, slowest.Round(time.Millisecond), failures.Load(), slowFail.Round(time.Millisecond))
	mu.Unlock()

	// Back: the same data directory and ports.
	releaseClient()
	releasePeer()
	etcd.start() // returns once etcd serves requests ("etcd ready")
	healthy := time.Now()
	cli, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: []string{etcd.clientURL}, DialTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("etcd after restart: %v", err)
	}
	cli.Close()
	t.Logf("etcd answers again after an outage of %v", healthy.Sub(down).Round(time.Millisecond))
	for i := range nodes {
		if !testenv.EventuallyEvery(30*time.Second, pollInterval, func() bool { return acked(i).After(healthy) }) {
			t.Fatalf("node %d: no ack within 30s of etcd answering again", i)
		}
		resume := acked(i).Sub(healthy)
		t.Logf("node %d: acks resumed %v after etcd answered again (outage %v)", i, resume.Round(time.Millisecond), healthy.Sub(down).Round(time.Second))
		if resume > resumeGoal {
			t.Errorf("node %d: acks resumed %v after etcd answered again; want at most %v", i, resume.Round(time.Millisecond), resumeGoal)
		}
	}
	// Readiness and the watches are back: a record produced on node 0 is
	// fetched on node 1, whose index cache follows etcd through a watch.
	for i, n := range nodes {
		if !testenv.EventuallyEvery(resumeGoal, pollInterval, func() bool {
			code, _ := httpGet(t, n.addr+"/readyz")
			return code == http.StatusOK
		}) {
			t.Fatalf("node %d: /readyz not 200 within %v of etcd answering again", i, resumeGoal)
		}
	}
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := apis[0].produce.Produce(rctx, connect.NewRequest(&varvev1.ProduceRequest{
		Topic: topic, Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte("after")}}},
	}))
	if err != nil {
		t.Fatalf("produce after the outage: %v", err)
	}
	off := res.Msg.GetResults()[0].GetOffset()
	start := time.Now()
	fres, err := apis[1].fetch.Fetch(rctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: 0, Offset: off, MaxBytes: 1 << 20, MaxWaitMs: int32(resumeGoal / time.Millisecond)}))
	if err != nil {
		t.Fatalf("fetch on node 1 of offset %d produced on node 0: %v", off, err)
	}
	if recs := fres.Msg.GetRecords(); len(recs) == 0 || string(recs[0].GetValue()) != "after" {
		t.Fatalf("fetch on node 1 of offset %d produced on node 0 after the outage: %d records after %v; the index watch did not resume", off, len(recs), time.Since(start))
	}

	// Nothing acknowledged was lost or duplicated.
	stop.Store(true)
	wg.Wait()
	logs := apis[1].readAll(t, topic)
	seen := map[string]int64{}
	for p, recs := range logs {
		for _, r := range recs {
			if _, dup := seen[r.value]; dup {
				t.Fatalf("record %q stored twice (partition %d)", r.value, p)
			}
			seen[r.value] = r.offset
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range acks {
		got, ok := seen[a.value]
		if !ok || got != a.offset || logs[a.partition][a.offset].value != a.value {
			t.Fatalf("acknowledged record %q at %d/%d: not in the log there (found at %d, %v)", a.value, a.partition, a.offset, got, ok)
		}
	}
	t.Logf("%d acknowledged records all in the log; %d records stored", len(acks), len(seen))
}
