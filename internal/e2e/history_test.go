package e2e

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/anishathalye/porcupine"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

// historyRounds is the number of kill rounds: VARVE_SOAK_ROUNDS (make
// soak, at least 100) or else VARVE_HISTORY_ROUNDS, default 3 (make test).
func historyRounds(t *testing.T) int {
	t.Helper()
	for _, name := range []string{"VARVE_SOAK_ROUNDS", "VARVE_HISTORY_ROUNDS"} {
		if s := os.Getenv(name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive integer", name, s)
			}
			return n
		}
	}
	return 3
}

var seedFlag = flag.Uint64("varve.seed", 0, "seed of TestRandomizedHistory (0: VARVE_HISTORY_SEED, else random)")

// historySeed is the seed of every random choice of the randomized history
// test (operations, batch sizes, which node to kill and when): -varve.seed,
// else VARVE_HISTORY_SEED, else random. It is printed with the command that
// replays it. The interleaving of goroutines and the timing of kills still
// depend on the machine, so a replay repeats the choices, not always the
// exact history.
func historySeed(t *testing.T) uint64 {
	t.Helper()
	seed := *seedFlag
	if s := os.Getenv("VARVE_HISTORY_SEED"); seed == 0 && s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			t.Fatalf("VARVE_HISTORY_SEED=%q: want a positive integer", s)
		}
		seed = n
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d, %d kill rounds; replay: VARVE_HISTORY_SEED=%d go test -run '%s$' -v ./internal/e2e/", seed, historyRounds(t), seed, t.Name())
	return seed
}

// TestRandomizedHistory runs idempotent producers (some resending answered
// batches on purpose, some switching ingest node on every retry) and
// consumers against two `varve serve` nodes on real etcd and MinIO, kills
// and restarts the nodes at random points, records every operation, and
// checks the history:
//
//   - produce and fetch are linearizable per partition (porcupine);
//   - every acknowledged record is in the log exactly once, at its
//     acknowledged offset, and every consumer read it there exactly once;
//   - offsets are dense; a record whose batch failed is there at most once;
//   - each producer's records of a partition are in the order it sent them;
//   - a batch resent after its answer, through either node, is answered
//     with the same offsets and stored once;
//   - idempotence never refuses a well-behaved producer (no fencing or
//     sequence error), including one that gives up on batches and starts a
//     new epoch.
//
// Three members of a consumer group (SDK GroupConsumers, each talking to
// one of the nodes being killed, so their sessions break and they rejoin)
// read the topic too and commit as they go; every commit attempt is an
// opGroupCommit operation and an etcd watch records the group's keys
// (groupHist, history_group_test.go). Checked after the group committed
// the end of the log:
//
//   - accepted commits never go backwards in real time (checkGroupCommits)
//     nor in etcd's revision order;
//   - no commit is accepted from a member whose key was deleted (zombie),
//     including deliberate late commits with a removed member's id; each
//     accepted commit is in the group's current generation, on a
//     partition assigned to or revoked from its member;
//   - every record of the log was processed by the group at least once,
//     and each processed record is the log's record at its offset.
func TestRandomizedHistory(t *testing.T) { runHistory(t, historyDirect) }

// historyMode is how the nodes of a history test commit.
type historyMode struct {
	name string
	// args are the nodes' extra flags.
	args []string
	// victim picks the node a round kills; nil: at random.
	victim func(t *testing.T, c *cluster, nodes []*serveNode, round int, rng *rand.Rand) int
	// settle, when set, runs after the producers stopped and before the
	// final log is read and checked.
	settle func(t *testing.T, c *cluster, topic string, partitions int32)
}

var historyDirect = historyMode{name: "direct", args: []string{"--commit-path", "direct"}}

// TestRandomizedHistorySequencer is TestRandomizedHistory with the nodes
// committing through the sequencer (commit_path sequencer, both nodes
// candidates): odd rounds kill -9 whichever node leads, mid-batch, so the
// other one takes over; even rounds kill one at random. The same checks
// hold: linearizable, exactly once, dense, per-producer order.
func TestRandomizedHistorySequencer(t *testing.T) {
	runHistory(t, historyMode{
		name: "sequencer",
		args: []string{"--commit-path", "sequencer"},
		victim: func(t *testing.T, c *cluster, nodes []*serveNode, round int, rng *rand.Rand) int {
			if round%2 == 0 {
				return rng.IntN(len(nodes))
			}
			return leaderOf(t, c, nodes)
		},
	})
}

// TestRandomizedHistoryCompacted is TestRandomizedHistorySequencer with
// both nodes running the compact role too, compacting every 200 ms from two
// level-0 entries: swaps replace the sequencer records' entries and merge
// levels while producers, fetches and kill -9 rounds go on (a compactor
// killed between its PUT and its swap leaves an orphan; one killed
// mid-swap, nothing). The same checks hold.
func TestRandomizedHistoryCompacted(t *testing.T) {
	runHistory(t, historyMode{
		name: "compacted",
		// --roles adds to startServe's ingest,fetch,sequence.
		args: []string{"--commit-path", "sequencer", "--roles", "compact",
			"--compaction-interval", "200ms", "--compaction-min-entries", "2"},
		settle: waitCompacted,
	})
}

// waitCompacted waits until compaction has replaced all but at most one
// level-0 entry of every partition (the last one may wait for a second),
// so that the final log is read from compacted objects.
func waitCompacted(t *testing.T, c *cluster, topic string, partitions int32) {
	t.Helper()
	meta, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: c.etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	var state string
	if !testenv.Eventually(60*time.Second, func() bool {
		var b strings.Builder
		done := true
		for p := range partitions {
			es, _, err := meta.IndexEntries(context.Background(), topic, p)
			if err != nil {
				t.Fatal(err)
			}
			l0, l1 := 0, 0
			for _, e := range es {
				if e.Level == 0 {
					l0++
				} else {
					l1++
				}
			}
			fmt.Fprintf(&b, " %d:%d/%d", p, l0, l1)
			done = done && l0 <= 1 && l1 > 0
		}
		state = b.String()
		return done
	}) {
		t.Fatalf("compaction did not catch up in 60 s (partition:level-0/compacted entries):%s", state)
	}
	t.Logf("compacted (partition:level-0/compacted entries):%s", state)
}

func runHistory(t *testing.T, mode historyMode) {
	const (
		topic      = "history"
		partitions = 3
		nodeCount  = 2
		producers  = 4 // even: home node; producer 3 switches on retries
		consumers  = 2
		maxBatch   = 6
		reqTimeout = 5 * time.Second
	)
	rounds := historyRounds(t)
	seed := historySeed(t)
	c := newCluster(t)
	listens := make([]string, nodeCount)
	nodes := make([]*serveNode, nodeCount)
	for i := range nodes {
		listens[i] = loopbackListen(t)
		nodes[i] = c.startServe(fmt.Sprintf("hist-%d", i), listens[i], append([]string{"--linger", "5ms"}, mode.args...)...)
	}
	apis := make([]*api, nodeCount)
	for i := range apis {
		apis[i] = newAPI(nodes[i].addr)
	}
	apis[0].createTopic(t, topic, partitions)

	h := newHistory()
	var bad atomic.Pointer[string]
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		bad.CompareAndSwap(nil, &msg)
	}
	acked := make([]atomic.Int64, nodeCount+1) // per home node, and total
	prodCtx, stopProducers := context.WithCancel(context.Background())
	defer stopProducers()
	var prodWG sync.WaitGroup
	// sentOrder[g][p] lists producer g's values for partition p in send order.
	sentOrder := make([][][]string, producers)
	for g := range producers {
		sentOrder[g] = make([][]string, partitions)
		prodWG.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			home := g % nodeCount
			switching := g == producers-1
			// One impatient producer gives up after two attempts: its
			// batch's outcome is unknown and it starts a new epoch.
			attempts := 40
			if g == producers-2 {
				attempts = 2
			}
			send := func(ni int, req *varvev1.ProduceRequest) (*varvev1.ProduceResponse, error) {
				ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
				defer cancel()
				res, err := apis[ni].produce.Produce(ctx, connect.NewRequest(req))
				if err != nil {
					return nil, err
				}
				return res.Msg, nil
			}
			var id int64
			var epoch int32
			initProducer := func() bool {
				for attempt := 0; ; attempt++ {
					ni := (home + attempt) % nodeCount
					ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
					res, err := apis[ni].produce.InitProducer(ctx, connect.NewRequest(&varvev1.InitProducerRequest{ProducerId: id}))
					cancel()
					if err == nil {
						id, epoch = res.Msg.GetProducerId(), res.Msg.GetProducerEpoch()
						return true
					}
					if prodCtx.Err() != nil && attempt > 50 {
						return false
					}
					time.Sleep(20 * time.Millisecond) // the node is restarting
				}
			}
			if !initProducer() {
				return
			}
			seqs := map[int32]int32{}
			n := 0
			for prodCtx.Err() == nil && bad.Load() == nil {
				req := &varvev1.ProduceRequest{Topic: topic, ProducerId: id, ProducerEpoch: epoch}
				byPart := map[int32][]string{}
				var order []int32
				for range 1 + rng.IntN(maxBatch) {
					p := rng.Int32N(partitions)
					v := fmt.Sprintf("g%d-%d", g, n)
					n++
					if byPart[p] == nil {
						order = append(order, p)
					}
					byPart[p] = append(byPart[p], v)
					req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: []byte(v)}})
				}
				for _, p := range order {
					req.Sequences = append(req.Sequences, &varvev1.PartitionSequence{Partition: p, FirstSequence: seqs[p]})
					seqs[p] += int32(len(byPart[p]))
					sentOrder[g][p] = append(sentOrder[g][p], byPart[p]...)
				}
				call := h.now()
				ni := home
				var res *varvev1.ProduceResponse
				var err error
				retried := 0
				for attempt := 0; attempt < attempts; attempt++ {
					if res, err = send(ni, req); err == nil {
						break
					}
					if connect.CodeOf(err) == connect.CodeFailedPrecondition || connect.CodeOf(err) == connect.CodeInvalidArgument {
						fail("producer %d (id %d epoch %d): a well-behaved batch was refused: %v", g, id, epoch, err)
						return
					}
					retried++
					if switching {
						ni = (ni + 1) % nodeCount
					}
					time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
				}
				ret := h.now()
				if err != nil {
					// Unknown outcome: start a new epoch, as the SDK does.
					for _, p := range order {
						h.add(histOp{kind: opProduce, client: g, partition: p, call: call, ret: ret, values: byPart[p], retried: retried})
					}
					if !initProducer() {
						return
					}
					clear(seqs)
					continue
				}
				bases, msg := batchBases(req, res)
				if msg != "" {
					fail("producer %d via node %d: %s", g, ni, msg)
					return
				}
				// Resend an answered batch on purpose, through any node.
				if rng.IntN(5) == 0 {
					again, err := send(rng.IntN(nodeCount), req)
					if err == nil {
						if b2, msg := batchBases(req, again); msg != "" || !equalBases(bases, b2) {
							fail("producer %d: a resent batch was answered %v, first answer %v %s", g, b2, bases, msg)
							return
						}
						ret = h.now()
						retried++
					}
				}
				for _, p := range order {
					h.add(histOp{kind: opProduce, client: g, partition: p, call: call, ret: ret, values: byPart[p], ok: true, base: bases[p], retried: retried})
				}
				acked[home].Add(1)
				acked[nodeCount].Add(1)
			}
		})
	}

	// Members of a consumer group read the topic too, each through one of
	// the nodes being killed, committing as they go.
	const groupMembers = 3
	gh, err := startGroupHist(h, c.etcd, []string{nodes[0].addr, nodes[1].addr}, "hist-group", topic,
		groupMembers, producers+consumers*partitions, seed, fail)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		select {
		case <-gh.stop:
		default:
			gh.close()
		}
	}()

	// Consumers read every partition in order, through a random node.
	consCtx, stopConsumers := context.WithCancel(context.Background())
	defer stopConsumers()
	var consWG sync.WaitGroup
	type position struct{ next atomic.Int64 }
	positions := make([][]position, consumers)
	readByConsumer := make([][][]string, consumers)
	for ci := range consumers {
		positions[ci] = make([]position, partitions)
		readByConsumer[ci] = make([][]string, partitions)
		for p := int32(0); p < partitions; p++ {
			consWG.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(1000+ci*partitions+int(p))))
				client := producers + ci*partitions + int(p)
				off := int64(0)
				for consCtx.Err() == nil {
					ni := rng.IntN(nodeCount)
					call := h.now()
					ctx, cancel := context.WithTimeout(consCtx, reqTimeout)
					res, err := apis[ni].fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: p, Offset: off, MaxBytes: 4 << 10, MaxWaitMs: 100}))
					cancel()
					if err != nil {
						if consCtx.Err() == nil {
							time.Sleep(20 * time.Millisecond)
						}
						continue
					}
					ret := h.now()
					var vals []string
					for i, r := range res.Msg.GetRecords() {
						if r.GetOffset() != off+int64(i) {
							fail("consumer %d: fetch %d/%d returned offset %d at position %d", ci, p, off, r.GetOffset(), i)
							return
						}
						vals = append(vals, string(r.GetValue()))
					}
					h.add(histOp{kind: opFetch, client: client, partition: p, call: call, ret: ret, offset: off, read: vals})
					readByConsumer[ci][p] = append(readByConsumer[ci][p], vals...)
					off += int64(len(vals))
					positions[ci][p].next.Store(off)
				}
			})
		}
	}

	waitAcks := func(from, more int64, why string) {
		t.Helper()
		if !testenv.Eventually(60*time.Second, func() bool {
			return bad.Load() != nil || acked[nodeCount].Load() >= from+more
		}) {
			t.Fatalf("%s: only %d batches acknowledged in 60s", why, acked[nodeCount].Load()-from)
		}
		if m := bad.Load(); m != nil {
			t.Fatal(*m)
		}
	}
	waitAcks(0, 10, "before the first kill")
	rng := rand.New(rand.NewPCG(seed, 99))
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		victim := rng.IntN(nodeCount)
		if mode.victim != nil {
			victim = mode.victim(t, c, nodes, round, rng)
		}
		select {
		case <-time.After(time.Duration(50+rng.IntN(400)) * time.Millisecond):
		case <-nodes[victim].done:
			nodes[victim].fatalf("round %d: exited on its own", round)
		}
		nodes[victim].kill9()
		id := nodes[victim].id
		if round%2 == 0 {
			id = fmt.Sprintf("hist-%d-r%d", victim, round)
		}
		nodes[victim] = c.startServe(id, listens[victim], append([]string{"--linger", "5ms"}, mode.args...)...)
		waitAcks(acked[nodeCount].Load(), 3, fmt.Sprintf("round %d: after restarting %s", round, id))
	}
	stopProducers()
	prodWG.Wait()
	killTime := time.Since(start)
	if m := bad.Load(); m != nil {
		t.Fatal(*m)
	}
	if mode.settle != nil {
		mode.settle(t, c, topic, partitions)
	}

	// The final log, read through both nodes.
	logA := apis[0].readAll(t, topic)
	sameLogs(t, nodes[0].id, logA, nodes[1].id, apis[1].readAll(t, topic))
	// Consumers catch up with it, then stop.
	if !testenv.EventuallyEvery(60*time.Second, 10*time.Millisecond, func() bool {
		for ci := range consumers {
			for p := range partitions {
				if positions[ci][p].next.Load() < int64(len(logA[p])) {
					return false
				}
			}
		}
		return true
	}) {
		t.Fatal("consumers did not reach the end of the log in 60s")
	}
	stopConsumers()
	consWG.Wait()
	// The group commits the end of every partition, then its members leave.
	ends := make([]int64, partitions)
	for p := range ends {
		ends[p] = int64(len(logA[p]))
	}
	if !testenv.EventuallyEvery(60*time.Second, 10*time.Millisecond, func() bool { return bad.Load() != nil || gh.settled(ends) }) {
		t.Fatalf("the consumer group did not commit the end of the log in 60s:\n%s", gh.describe(ends))
	}
	gh.close()
	if m := bad.Load(); m != nil {
		t.Fatal(*m)
	}
	ops := h.snapshot()

	// Direct checks of the invariants.
	where := map[string][2]int64{} // value -> partition, offset
	for p, recs := range logA {
		for _, r := range recs {
			if prev, dup := where[r.value]; dup {
				t.Fatalf("value %s stored twice: %d/%d and %d/%d", r.value, prev[0], prev[1], p, r.offset)
			}
			where[r.value] = [2]int64{int64(p), r.offset}
		}
	}
	var nAcked, nUnknown, nUnknownLanded, nRetried, nUnknownBatches int
	sent := map[string]bool{}
	for _, op := range ops {
		if op.kind != opProduce {
			continue
		}
		if op.retried > 0 {
			nRetried++
		}
		if !op.ok {
			nUnknownBatches++
		}
		for i, v := range op.values {
			sent[v] = true
			w, ok := where[v]
			switch {
			case op.ok && (!ok || w[0] != int64(op.partition) || w[1] != op.base+int64(i)):
				t.Fatalf("acknowledged %s at %d/%d, log has it at %v (present %v)", v, op.partition, op.base+int64(i), w, ok)
			case op.ok:
				nAcked++
			default:
				nUnknown++
				if ok {
					nUnknownLanded++
				}
			}
		}
	}
	for v := range where {
		if !sent[v] {
			t.Fatalf("the log holds %s, which nobody sent", v)
		}
	}
	for g := range producers {
		for p := range partitions {
			last := int64(-1)
			for _, v := range sentOrder[g][p] {
				if w, ok := where[v]; ok {
					if w[1] <= last {
						t.Fatalf("producer %d partition %d: %s stored at %d, before an earlier record at %d", g, p, v, w[1], last)
					}
					last = w[1]
				}
			}
		}
	}
	for ci := range consumers {
		for p := range partitions {
			got := readByConsumer[ci][p]
			if len(got) != len(logA[p]) {
				t.Fatalf("consumer %d read %d records of partition %d, the log has %d", ci, len(got), p, len(logA[p]))
			}
			for i, v := range got {
				if logA[p][i].value != v {
					t.Fatalf("consumer %d read %s at %d/%d, the log has %s", ci, v, p, i, logA[p][i].value)
				}
			}
		}
	}
	if msgs := checkGroupCommits(ops); len(msgs) > 0 {
		t.Fatalf("group commits went backwards:\n%s", strings.Join(msgs, "\n"))
	}
	grep := gh.check(ops, logA)
	groupLine := gh.summary(grep)
	if len(grep.bad) > 0 {
		t.Fatalf("consumer group (%s):\n%s", groupLine, strings.Join(grep.bad, "\n"))
	}

	// Linearizability of produce and fetch, per partition.
	pops := porcupineOps(ops)
	checkStart := time.Now()
	res, info := porcupine.CheckOperationsVerbose(logModel.ToModel(), pops, 5*time.Minute)
	t.Logf("history (%s): rounds=%d in %v; ops=%d (produce+fetch %d); records acked=%d unknown=%d (in %d batches) unknown-landed=%d; batches retried=%d; porcupine %s in %v; %s",
		mode.name, rounds, killTime.Round(time.Millisecond), len(ops), len(pops), nAcked, nUnknown, nUnknownBatches, nUnknownLanded, nRetried, res, time.Since(checkStart).Round(time.Millisecond), groupLine)
	switch res {
	case porcupine.Illegal:
		path := t.TempDir() + "/history.html"
		if err := porcupine.VisualizePath(logModel.ToModel(), info, path); err == nil {
			if dir := os.Getenv("VARVE_HISTORY_DIR"); dir != "" {
				if b, err := os.ReadFile(path); err == nil {
					_ = os.WriteFile(dir+"/history.html", b, 0o644)
				}
			}
		}
		t.Fatalf("the produce/fetch history is not linearizable (seed %d; set VARVE_HISTORY_DIR to keep the visualization)", seed)
	case porcupine.Unknown:
		t.Logf("porcupine timed out: linearizability neither proven nor refuted")
	}
}

// batchBases checks a produce answer against its request: one result per
// record on the record's partition, each partition's records at
// consecutive offsets. It returns the first offset per partition.
func batchBases(req *varvev1.ProduceRequest, res *varvev1.ProduceResponse) (map[int32]int64, string) {
	results := res.GetResults()
	if len(results) != len(req.Records) {
		return nil, fmt.Sprintf("%d results for %d records", len(results), len(req.Records))
	}
	bases := map[int32]int64{}
	next := map[int32]int64{}
	for i, r := range results {
		p := req.Records[i].GetPartition()
		if r.GetPartition() != p {
			return nil, fmt.Sprintf("record %d sent to partition %d, answered on %d", i, p, r.GetPartition())
		}
		if n, ok := next[p]; ok && r.GetOffset() != n {
			return nil, fmt.Sprintf("record %d of partition %d at offset %d, want %d (a batch is one block)", i, p, r.GetOffset(), n)
		}
		if _, ok := bases[p]; !ok {
			bases[p] = r.GetOffset()
		}
		next[p] = r.GetOffset() + 1
	}
	return bases, ""
}

func equalBases(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
