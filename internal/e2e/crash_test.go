package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
)

// crashRounds is VARVE_CRASH_ROUNDS, default 5.
func crashRounds(t *testing.T) int {
	t.Helper()
	s := os.Getenv("VARVE_CRASH_ROUNDS")
	if s == "" {
		return 5
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("VARVE_CRASH_ROUNDS=%q: want a positive integer", s)
	}
	return n
}

// nodeStats are what the producers of one node address observed.
type nodeStats struct {
	acked    atomic.Int64 // batches acknowledged
	failed   atomic.Int64 // batches answered with an error or not answered
	inFlight atomic.Int64 // requests sent and not yet answered
}

// TestCrashRecovery kills ingest nodes with SIGKILL while producers keep
// writing through them, restarts them (with the same node id or a new one),
// and then proves Invariant 1 and 2 on what was acknowledged: every
// acknowledged record is in the log exactly once at its acknowledged offset,
// offsets are dense, and a record whose produce failed is there at most once.
func TestCrashRecovery(t *testing.T) {
	const (
		topic        = "crash"
		partitions   = 4
		nodeCount    = 2
		prodsPerNode = 2
		maxBatch     = 10
		reqTimeout   = 5 * time.Second
	)
	rounds := crashRounds(t)
	c := newCluster(t)
	listens := make([]string, nodeCount)
	nodes := make([]*serveNode, nodeCount)
	for i := range nodes {
		listens[i] = loopbackListen(t)
		nodes[i] = c.startServe(fmt.Sprintf("crash-%d", i), listens[i], "--linger", "10ms")
	}
	apis := make([]*api, nodeCount)
	for i := range apis {
		apis[i] = newAPI(nodes[i].addr)
	}
	apis[0].createTopic(t, topic, partitions)

	stats := make([]*nodeStats, nodeCount)
	for i := range stats {
		stats[i] = new(nodeStats)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	var badAnswer atomic.Pointer[string]
	producers := make([][]sent, nodeCount*prodsPerNode)
	for gid := range producers {
		ni := gid % nodeCount
		a, st := apis[ni], stats[ni]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(gid), uint64(time.Now().UnixNano())))
			seq := 0
			for ctx.Err() == nil {
				n := 1 + rng.IntN(maxBatch)
				req := &varvev1.ProduceRequest{Topic: topic}
				batch := make([]sent, n)
				for i := range n {
					p := rng.Int32N(partitions)
					v := fmt.Sprintf("c%d-%d", gid, seq)
					seq++ // a value is never sent twice, whatever the outcome
					batch[i] = sent{partition: p, value: v}
					req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: []byte(v)}})
				}
				// Requests are not tied to ctx: stopping the producers lets
				// the last requests finish instead of cancelling them.
				rctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
				st.inFlight.Add(1)
				res, err := a.produce.Produce(rctx, connect.NewRequest(req))
				st.inFlight.Add(-1)
				cancel()
				if err == nil {
					if bad := checkAnswer(batch, res.Msg.GetResults()); bad != "" {
						msg := fmt.Sprintf("producer %d via %s: %s", gid, a.addr, bad)
						badAnswer.CompareAndSwap(nil, &msg)
						return
					}
				}
				producers[gid] = append(producers[gid], batch...)
				if err == nil {
					st.acked.Add(1)
					continue
				}
				st.failed.Add(1)
				// The node is down or restarting: back off a little.
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		})
	}

	// waitAcks waits until the producers of node i have had `more` batches
	// acknowledged beyond `from`.
	waitAcks := func(i int, from, more int64, why string) {
		t.Helper()
		if !testenv.Eventually(30*time.Second, func() bool {
			if bad := badAnswer.Load(); bad != nil {
				t.Fatalf("a successful produce answered wrongly: %s", *bad)
			}
			return stats[i].acked.Load() >= from+more
		}) {
			nodes[i].fatalf("%s: %d batches acknowledged through %s in 30s, want %d (%d failed)",
				why, stats[i].acked.Load()-from, nodes[i].addr, more, stats[i].failed.Load())
		}
	}
	for i := range nodes {
		waitAcks(i, 0, 5, "before the first crash")
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	inFlightAtKill := int64(0)
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		victim := rng.IntN(nodeCount)
		delay := time.Duration(100+rng.IntN(501)) * time.Millisecond
		select {
		case <-time.After(delay):
		case <-nodes[victim].done:
			nodes[victim].fatalf("round %d: exited on its own", round)
		}
		// Kill while the node's producers have requests in flight.
		if !testenv.Eventually(10*time.Second, func() bool { return stats[victim].inFlight.Load() > 0 }) {
			nodes[victim].fatalf("round %d: no request in flight for 10s", round)
		}
		inFlight := stats[victim].inFlight.Load()
		inFlightAtKill += inFlight
		nodes[victim].kill9()
		id := nodes[victim].id
		if round%2 == 0 {
			id = fmt.Sprintf("crash-%d-r%d", victim, round) // a new node on the old address
		}
		t.Logf("round %d: killed %s after %v with %d requests in flight; restarting as %s", round, nodes[victim].id, delay, inFlight, id)
		before := stats[victim].acked.Load()
		nodes[victim] = c.startServe(id, listens[victim], "--linger", "10ms")
		waitAcks(victim, before, 5, fmt.Sprintf("round %d: after restart", round))
	}
	stop()
	wg.Wait()
	crashTime := time.Since(start)

	logA := apis[0].readAll(t, topic)
	logB := apis[1].readAll(t, topic)
	sameLogs(t, nodes[0].id, logA, nodes[1].id, logB)
	if bad := badAnswer.Load(); bad != nil {
		t.Fatalf("a successful produce answered wrongly: %s", *bad)
	}
	res := checkLog(t, logA, producers)
	if res.unexpected > 0 {
		t.Fatalf("log holds %d records nobody sent", res.unexpected)
	}
	var batchesAcked, batchesFailed int64
	for _, s := range stats {
		batchesAcked += s.acked.Load()
		batchesFailed += s.failed.Load()
	}
	t.Logf("crash totals: rounds=%d nodes=%d in %v; batches acked=%d failed=%d; in flight at kill=%d; records in log=%d acked=%d unknown=%d unknown-landed=%d unknown-lost=%d",
		rounds, nodeCount, crashTime.Round(time.Millisecond), batchesAcked, batchesFailed, inFlightAtKill,
		res.inLog, res.acked, res.unknown, res.unknownLanded, res.unknown-res.unknownLanded)
	if res.inLog != res.acked+res.unknownLanded {
		t.Fatalf("log holds %d records, want acked %d + unknown-landed %d", res.inLog, res.acked, res.unknownLanded)
	}
}

// checkAnswer fills batch from a successful produce's results, or says what
// is wrong with them.
func checkAnswer(batch []sent, results []*varvev1.ProduceResult) string {
	if len(results) != len(batch) {
		return fmt.Sprintf("%d results for %d records", len(results), len(batch))
	}
	for i, r := range results {
		if r.GetPartition() != batch[i].partition {
			return fmt.Sprintf("record %d (%s) acknowledged on partition %d, sent to %d", i, batch[i].value, r.GetPartition(), batch[i].partition)
		}
		if r.GetOffset() < 0 {
			return fmt.Sprintf("record %d (%s) acknowledged at offset %d", i, batch[i].value, r.GetOffset())
		}
	}
	for i, r := range results {
		batch[i].acked, batch[i].offset = true, r.GetOffset()
	}
	return ""
}
