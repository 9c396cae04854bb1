package node_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/placement"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/tier"
)

// placementCluster starts three ingest nodes with the sequence role (n0,
// n1, n2) on one etcd and one recorded MinIO bucket, with mutate applied
// to each node's settings, and a topic of 8 partitions.
func placementCluster(t *testing.T, mutate func(*node.Config)) ([]*node.Node, *tier.Recorder) {
	t.Helper()
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	rec := tier.NewRecorder(st)
	endpoints := testenv.StartEtcd(t)
	var nodes []*node.Node
	for i := range 3 {
		nodes = append(nodes, startNodeWith(t, node.RoleIngest, endpoints, rec, func(cfg *node.Config) {
			cfg.Roles = []string{node.RoleIngest, node.RoleSequence}
			cfg.NodeID = fmt.Sprintf("n%d", i)
			cfg.Linger = 50 * time.Millisecond
			if mutate != nil {
				mutate(cfg)
			}
		}))
	}
	if _, err := admin.New(nodes[0].Addr()).CreateTopic(t.Context(), "placed", 8, nil); err != nil {
		t.Fatal(err)
	}
	return nodes, rec
}

// produceFromEveryNode runs one default (idempotent) producer per node,
// each a client of that node alone, sending a record every 2 ms until
// stop is closed; it returns their acknowledgements and failures once all
// are closed.
func produceFromEveryNode(t *testing.T, nodes []*node.Node, stop <-chan struct{}) (acks []ack, failed int) {
	t.Helper()
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		errs atomic.Int64
	)
	ctx := t.Context()
	for i, n := range nodes {
		wg.Go(func() {
			c := sdk.New(n.Addr())
			defer c.Close()
			p := c.NewProducer(sdk.ProducerOptions{})
			for j := 0; ; j++ {
				select {
				case <-stop:
					if err := p.Close(ctx); err != nil {
						t.Errorf("close producer %d: %v", i, err)
					}
					return
				case <-time.After(2 * time.Millisecond):
				}
				key := fmt.Sprintf("p%d-%d", i, j)
				p.Produce(ctx, sdk.Record{Topic: "placed", Partition: sdk.AnyPartition, Key: []byte(key), Value: []byte(key)},
					func(r sdk.Record, err error) {
						if err != nil {
							errs.Add(1)
							t.Logf("record %s: %v", key, err)
							return
						}
						mu.Lock()
						acks = append(acks, ack{key: key, part: r.Partition, offset: r.Offset})
						mu.Unlock()
					})
			}
		})
	}
	wg.Wait()
	return acks, int(errs.Load())
}

// writers returns the nodes that wrote the flush objects the recorder saw.
func writers(rec *tier.Recorder) map[string]int {
	out := map[string]int{}
	for _, c := range rec.Calls() {
		if c.Op != tier.OpPut || c.Err != nil {
			continue
		}
		if n, ok := tier.FlushKeyNode(c.Key); ok {
			out[n]++
		}
	}
	return out
}

// TestProducersArePlacedOnOneWriter: three ingest nodes, a producer on
// each, a produce rate far below a writer's (writer_bytes_per_second):
// the sequencer asks for one writer, the nodes name it (the lowest node
// id) to the producers, and the SDK moves them there. Then only that node
// writes objects, and every record is acknowledged and committed once.
func TestProducersArePlacedOnOneWriter(t *testing.T) {
	nodes, rec := placementCluster(t, nil)
	stop := make(chan struct{})
	var acks []ack
	var failed int
	done := make(chan struct{})
	go func() { acks, failed = produceFromEveryNode(t, nodes, stop); close(done) }()
	// Placed: n0 alone wrote 5 objects since any other node last wrote.
	placed := testenv.EventuallyEvery(30*time.Second, 20*time.Millisecond, func() bool {
		w := writers(rec)
		if len(w) > 1 || len(w) == 1 && w["n0"] == 0 {
			rec.Reset()
			return false
		}
		return w["n0"] >= 5
	})
	// Then 10 more objects.
	rec.Reset()
	testenv.EventuallyEvery(30*time.Second, 20*time.Millisecond, func() bool { return writers(rec)["n0"] >= 10 })
	close(stop)
	<-done
	if !placed {
		t.Fatalf("the producers were not all placed on n0 within 30 s: objects by node %v", writers(rec))
	}
	if w := writers(rec); len(w) != 1 || w["n0"] == 0 {
		t.Fatalf("after placement, objects were written by %v, want n0 alone", w)
	}
	if failed > 0 {
		t.Fatalf("%d records failed", failed)
	}
	if stored, _ := checkAcksAgainstRecords(t, nodes[0].Meta(), "placed", acks); stored != len(acks) {
		t.Fatalf("%d records committed, %d acknowledged", stored, len(acks))
	}
	// An idempotent producer's first call, InitProducer, already names
	// its writer; a request without a client key names none.
	pc := varvev1connect.NewProduceServiceClient(http.DefaultClient, nodes[1].Addr())
	for _, key := range []string{"client-a", "client-b", ""} {
		req := connect.NewRequest(&varvev1.InitProducerRequest{})
		if key != "" {
			req.Header().Set(placement.ClientHeader, key)
		}
		res, err := pc.InitProducer(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		want := nodes[0].Addr()
		if key == "" {
			want = ""
		}
		if got := res.Header().Get(placement.ToHeader); got != want {
			t.Fatalf("InitProducer on n1 with client key %q named %q, want %q", key, got, want)
		}
	}
	// n1 named n0 to its producer, and sees one writer.
	_, m := scrape(t, nodes[1].Addr())
	if !regexp.MustCompile(`(?m)^varve_produce_placed_total(\{[^}]*\})? [1-9]`).MatchString(m) ||
		!regexp.MustCompile(`(?m)^varve_produce_writers(\{[^}]*\})? 1$`).MatchString(m) {
		t.Fatalf("n1's placement metrics: want answers placed and one writer, got\n%s", grepLines(m, "varve_produce_"))
	}
	t.Logf("%d records, every one committed once; n0 wrote every object after placement", len(acks))
}

// TestPlacementOff: with writer_bytes_per_second off every node keeps the
// producers that reach it, and each writes objects of its own (with
// placement, n1 and n2 would write none after their producers' first
// call).
func TestPlacementOff(t *testing.T) {
	nodes, rec := placementCluster(t, func(cfg *node.Config) { cfg.WriterBytesPerSecond = node.OffBytes })
	stop := make(chan struct{})
	done := make(chan struct{})
	var acks []ack
	var failed int
	go func() { acks, failed = produceFromEveryNode(t, nodes, stop); close(done) }()
	spread := testenv.EventuallyEvery(30*time.Second, 20*time.Millisecond, func() bool {
		w := writers(rec)
		return w["n0"] >= 5 && w["n1"] >= 5 && w["n2"] >= 5
	})
	close(stop)
	<-done
	if !spread {
		t.Fatalf("with placement off, objects by node %v, want 5 or more by each", writers(rec))
	}
	if failed > 0 || len(acks) == 0 {
		t.Fatalf("%d records failed, %d acknowledged", failed, len(acks))
	}
	if n, err := nodes[0].Meta().Writers(t.Context()); err != nil || n != 0 {
		t.Fatalf("placement/writers = %d (%v) with placement off, want none", n, err)
	}
}
