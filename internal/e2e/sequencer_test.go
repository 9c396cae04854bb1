package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
	"github.com/varve-io/varve/sdk"
)

// TestSequencerFailover: two `varve serve` processes with the ingest and
// sequence roles and --commit-path sequencer; the default (idempotent)
// SDK producers send keyed records to a 1,000-partition topic through
// both (each knowing both addresses). The sequencer's process is killed
// with SIGKILL mid-stream: the other node takes over and the producers go
// on. What the sequencer records hold is then checked against the
// acknowledgements: each acknowledged record at its own offset, every
// partition's committed offsets dense, nothing committed twice (the
// records stored are the acknowledged ones, plus at most those whose
// delivery failed).
//
// Twice: nodes sealing every 10 ms with producers that flush every 50
// records, and nodes sealing every 100 ms (the default) with producers
// that never flush, so that they hold their batches for the node's next
// seal (internal/flushtick) when the leader dies.
//
// And once with three nodes, killing the node the producers were placed
// on (docs/metadata.md, "Producer placement": at this rate every producer
// is moved to one writer, the lowest node id, seq-0): the producers go
// back to their own addresses and on.
func TestSequencerFailover(t *testing.T) {
	for _, v := range []struct {
		name, linger string
		burst        int // records between Flush calls; 0: none, a record a millisecond
		nodes        int
		killWriter   bool // kill seq-0, where the producers were placed, not the leader
	}{
		{"linger 10ms, flushes", "10ms", 50, 2, false},
		{"linger 100ms, batches held for the seal", "100ms", 0, 2, false},
		{"three nodes, the producers' writer killed", "100ms", 0, 3, true},
	} {
		t.Run(v.name, func(t *testing.T) { testSequencerFailover(t, v.linger, v.burst, v.nodes, v.killWriter) })
	}
}

func testSequencerFailover(t *testing.T, linger string, burst, n int, killWriter bool) {
	const (
		topic      = "seqfail"
		partitions = 1000
		producers  = 4
	)
	c := newCluster(t)
	nodes := make([]*serveNode, n)
	for k := range nodes {
		i := k
		if killWriter {
			// The last started first: it likely leads, so that the
			// writer killed (seq-0) is not the leader too.
			i = n - 1 - k
		}
		nodes[i] = c.startServe(fmt.Sprintf("seq-%d", i), loopbackListen(t),
			"--roles", "sequence", "--commit-path", "sequencer", "--linger", linger)
	}
	meta, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: c.etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	log := seqlog.New(meta)
	leaderOf := func() *serveNode {
		id, err := log.Leader(context.Background())
		if err != nil {
			return nil
		}
		for _, n := range nodes {
			if n.addr == id {
				return n
			}
		}
		t.Fatalf("the sequencer campaigned as %q, not a node's API URL", id)
		return nil
	}
	var leader *serveNode
	if !testenv.Eventually(30*time.Second, func() bool { leader = leaderOf(); return leader != nil }) {
		t.Fatal("no sequencer elected")
	}
	victim := leader
	if killWriter {
		victim = nodes[0] // the lowest node id: the one writer
	}
	other := nodes[0]
	if other == victim {
		other = nodes[1]
	}
	newAPI(other.addr).createTopic(t, topic, partitions)

	type ack struct {
		key    string
		part   int32
		offset int64
	}
	var (
		mu     sync.Mutex
		acks   []ack
		failed []error
		acked  atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for pi := range producers {
		addrs := nodes[pi%n].addr + "," + nodes[(pi+1)%n].addr
		wg.Go(func() {
			p := sdk.New(addrs).NewProducer(sdk.ProducerOptions{}) // the default: idempotent
			for j := 0; !stop.Load(); j++ {
				key := fmt.Sprintf("p%d-k%d", pi, j)
				p.Produce(ctx, sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Key: []byte(key), Value: []byte(key)},
					func(r sdk.Record, err error) {
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							failed = append(failed, fmt.Errorf("record %s: %w", key, err))
							return
						}
						acks = append(acks, ack{key, r.Partition, r.Offset})
						acked.Add(1)
					})
				switch {
				case burst == 0:
					time.Sleep(time.Millisecond)
				case (j+1)%burst == 0:
					_ = p.Flush(ctx) // failures are counted by the callbacks
				}
			}
			_ = p.Close(ctx)
		})
	}
	waitAcked := func(n int64, why string) {
		t.Helper()
		if !testenv.Eventually(90*time.Second, func() bool { return acked.Load() >= n }) {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%s: %d records acknowledged, want %d (%d failed; first: %v)", why, acked.Load(), n, len(failed), first(failed))
		}
	}
	waitAcked(2000, "before the kill")
	if killWriter {
		// One writer recorded (the first leader does at once), and
		// acknowledgements since: every producer on seq-0.
		if !testenv.Eventually(30*time.Second, func() bool { n, err := meta.Writers(ctx); return err == nil && n == 1 }) {
			t.Fatal("no writers recorded in placement/writers")
		}
		waitAcked(acked.Load()+2000, "after placement")
	}
	victim.kill9()
	killedAt, killTime := acked.Load(), time.Now()
	if !testenv.Eventually(60*time.Second, func() bool { l := leaderOf(); return l != nil && l != victim }) {
		other.fatalf("no live node leads the sequencer after %s was killed", victim.id)
	}
	takeover := time.Since(killTime)
	waitAcked(killedAt+1, "after the failover")
	resumed := time.Since(killTime)
	waitAcked(killedAt+2000, "after the failover")
	stop.Store(true)
	wg.Wait()

	// Against the sequencer's records.
	recs, err := log.Records(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ base, n int64 }
	spans := map[int32][]span{}
	terms := map[int64]bool{}
	for _, r := range recs {
		terms[r.Term] = true
		for _, cm := range r.Commits {
			for i, a := range cm.Appends {
				if a.Topic == topic && cm.Results[i].Err == nil {
					spans[a.Partition] = append(spans[a.Partition], span{cm.Results[i].Base, a.Records})
				}
			}
		}
	}
	if len(terms) < 2 && victim == leader {
		t.Fatalf("records of %d term(s): the failover did not happen under load", len(terms))
	}
	byPart := map[int32]map[int64]string{}
	for _, a := range acks {
		if byPart[a.part] == nil {
			byPart[a.part] = map[int64]string{}
		}
		if prev, dup := byPart[a.part][a.offset]; dup {
			t.Fatalf("%s and %s both acknowledged at %d/%d", prev, a.key, a.part, a.offset)
		}
		byPart[a.part][a.offset] = a.key
	}
	stored := 0
	for p, ss := range spans {
		sort.Slice(ss, func(i, j int) bool { return ss[i].base < ss[j].base })
		next := int64(0)
		for _, s := range ss {
			if s.base != next {
				t.Fatalf("partition %d: a committed block starts at %d, want %d (gap or overlap)", p, s.base, next)
			}
			next += s.n
		}
		for off := range byPart[p] {
			if off >= next {
				t.Fatalf("partition %d: acknowledged offset %d not committed (committed [0, %d))", p, off, next)
			}
		}
		stored += int(next)
	}
	for p, offs := range byPart {
		if len(spans[p]) == 0 {
			t.Fatalf("partition %d: %d records acknowledged, none committed", p, len(offs))
		}
	}
	if stored < len(acks) || stored > len(acks)+len(failed) {
		t.Fatalf("%d records committed for %d acknowledged and %d failed: a record was committed twice or lost", stored, len(acks), len(failed))
	}
	t.Logf("%d records acknowledged (%d when %s, the leader %v, was killed), %d failed, %d committed, %d batches over %d terms; a live leader %v after the kill, acknowledgements resumed after %v",
		len(acks), killedAt, victim.id, victim == leader, len(failed), stored, len(recs), len(terms), takeover.Round(time.Millisecond), resumed.Round(time.Millisecond))
}

// TestSequencerResignsOnShutdown: a sequencer stopped with SIGTERM
// answers its own node's last commits, then resigns before it exits: the
// other node leads at once, not after the 5 s lease.
func TestSequencerResignsOnShutdown(t *testing.T) {
	c := newCluster(t)
	nodes := make([]*serveNode, 2)
	for i := range nodes {
		nodes[i] = c.startServe(fmt.Sprintf("seqstop-%d", i), loopbackListen(t),
			"--roles", "sequence", "--commit-path", "sequencer", "--linger", "10ms")
	}
	meta, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: c.etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	log := seqlog.New(meta)
	var leader, other *serveNode
	if !testenv.Eventually(30*time.Second, func() bool {
		id, err := log.Leader(context.Background())
		for i, n := range nodes {
			if err == nil && n.addr == id {
				leader, other = n, nodes[1-i]
				return true
			}
		}
		return false
	}) {
		t.Fatal("no sequencer elected")
	}
	newAPI(leader.addr).createTopic(t, "stop", 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := sdk.New(leader.addr).NewProducer(sdk.ProducerOptions{})
	var errs atomic.Int64
	for i := range 200 {
		p.Produce(ctx, sdk.Record{Topic: "stop", Partition: sdk.AnyPartition, Key: fmt.Appendf(nil, "k%d", i)}, func(_ sdk.Record, err error) {
			if err != nil {
				errs.Add(1)
			}
		})
	}
	if err := p.Close(ctx); err != nil || errs.Load() != 0 {
		t.Fatalf("produce through the leader: %v, %d failed", err, errs.Load())
	}
	leader.stopGracefully(30 * time.Second)
	id, err := log.Leader(context.Background())
	if err != nil || id != other.addr {
		t.Fatalf("right after the leader exited the sequencer is %q (%v), want %s: it did not resign", id, err, other.addr)
	}
}

func first(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}
