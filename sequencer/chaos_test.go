package sequencer

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

var chaosSeed = flag.Uint64("sequencer.seed", uint64(time.Now().UnixNano()), "seed of TestRepeatedFailovers")

// TestRepeatedFailovers: three candidates, each with its own etcd client
// (as separate processes), a 1 s election lease and a checkpoint every 4
// batches, while three committers (one an idempotent producer) commit.
// The leader is crashed four times, in turn: killed (its etcd client
// closed, no resign: its lease runs out) after writing a batch and before
// answering; its term taken over just before it writes (the write must be
// fenced); killed just before writing; killed after writing again. Each
// killed node restarts as a candidate. Offsets stay dense, each commit is in exactly one record,
// answered as recorded.
func TestRepeatedFailovers(t *testing.T) {
	t.Logf("seed %d (replay with -sequencer.seed)", *chaosSeed)
	ctx := context.Background()
	eps := testenv.StartEtcd(t)
	meta := dialEtcd(t, eps)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 20}); err != nil {
		t.Fatal(err)
	}
	pid, err := meta.InitProducer(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := &chaos{t: t, eps: eps, crashAt: map[uint64]int{6: 0, 13: 1, 20: 2, 27: 0}}
	ch.cl = newCluster(t, meta)
	for i := range 3 {
		ch.startNode(fmt.Sprintf("n%d", i))
	}
	led, answers := commitAllSeeded(t, ch.cl.client(), pid.ID, 20, 3, 25, *chaosSeed)
	ch.wg.Wait()
	ch.mu.Lock()
	crashes, left := ch.crashes, len(ch.crashAt)
	ch.mu.Unlock()
	if crashes != 4 || left != 0 {
		t.Fatalf("%d crashes, %d planned ones left: want 4 and 0", crashes, left)
	}
	led.check(t)
	checkRecords(t, meta, answers, Stats{Checkpoints: 1}, -1)
}

func dialEtcd(tb testing.TB, eps []string) *metadata.Client {
	c, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: eps})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// chaos crashes the leader at given batches (mode 0 killed after the
// write, 1 fenced before it, 2 killed before it) and restarts it.
type chaos struct {
	t       *testing.T
	eps     []string
	cl      *cluster
	mu      sync.Mutex
	crashAt map[uint64]int
	crashes int
	wg      sync.WaitGroup
}

func (ch *chaos) startNode(name string) {
	own := dialEtcd(ch.t, ch.eps)
	cfg := Config{ID: name, TTL: time.Second, CheckpointEvery: 4}
	hook := func(before bool) func(*seqlog.Term, uint64) error {
		return func(term *seqlog.Term, batch uint64) error {
			ch.mu.Lock()
			mode, ok := ch.crashAt[batch]
			if !ok || (mode == 0) == before {
				ch.mu.Unlock()
				return nil
			}
			delete(ch.crashAt, batch)
			ch.crashes++
			ch.mu.Unlock()
			return ch.crash(name, own, term, mode)
		}
	}
	cfg.beforeAppend, cfg.afterAppend = hook(true), hook(false)
	ch.cl.startWith(own, cfg)
}

func (ch *chaos) crash(name string, own *metadata.Client, term *seqlog.Term, mode int) error {
	switch mode {
	case 1: // another node takes over first; this write must be fenced
		_ = term.Resign(context.Background())
		testenv.Eventually(30*time.Second, func() bool {
			for _, n := range []string{"n0", "n1", "n2"} {
				if s := ch.cl.node(n); n != name && s != nil && s.Leading() {
					return true
				}
			}
			return false
		})
		return nil
	}
	own.Close() // kill -9: no resign, the lease runs out
	ch.cl.kill(name)
	ch.wg.Add(1)
	go func() {
		defer ch.wg.Done()
		ch.startNode(name)
	}()
	return errCrash
}
