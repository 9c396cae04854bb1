package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

// TestTieredWriterKilled: Varve as the Terraform module deploys it, two
// ingest nodes (ingest,sequence) and a fetch node, over real etcd and
// MinIO. The fetch node reads fresh objects from the ingest node that wrote
// them, with no GET. One writer is killed (kill -9) holding acknowledged
// records nobody has read yet: the fetch node reads them from the bucket.
// Records produced through the survivor afterwards are read from it, with
// no GET again. Every acknowledged record is read exactly once, at dense
// offsets, and nothing that was not produced.
func TestTieredWriterKilled(t *testing.T) {
	c := newCluster(t)
	writers := []*serveNode{
		c.startServeRoles("writer-0", loopbackListen(t), "ingest,sequence", "--linger", "5ms"),
		c.startServeRoles("writer-1", loopbackListen(t), "ingest,sequence", "--linger", "5ms"),
	}
	reader := c.startServeRoles("reader", loopbackListen(t), "fetch")
	w := []*api{newAPI(writers[0].addr), newAPI(writers[1].addr)}
	f := newAPI(reader.addr)
	const topic, partitions = "tiered", 8
	w[0].createTopic(t, topic, partitions)

	produced := map[string]bool{} // every value sent; true once acknowledged
	n := 0
	// produce sends batches of 8 records (one per partition) through
	// writer i until want batches are acknowledged, each attempt with new
	// values (never a retry of the same ones, so a failed attempt's records
	// appear at most once).
	produce := func(i, want int) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for acked := 0; acked < want; {
			if time.Now().After(deadline) {
				t.Fatalf("writer %d: %d of %d batches acknowledged in a minute", i, acked, want)
			}
			req := &varvev1.ProduceRequest{Topic: topic}
			var vals []string
			for p := range int32(partitions) {
				v := fmt.Sprintf("w%d-%d", i, n)
				n++
				vals = append(vals, v)
				produced[v] = false
				req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: []byte(v)}})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := w[i].produce.Produce(ctx, connect.NewRequest(req))
			cancel()
			if err != nil {
				t.Logf("writer %d: produce: %v (values not acknowledged)", i, err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for _, v := range vals {
				produced[v] = true
			}
			acked++
		}
	}
	// readAll reads every partition through the fetch node and checks the
	// log against what was produced.
	readAll := func(step string) {
		t.Helper()
		hwm := f.highWatermarks(t, topic)
		seen := map[string]int{}
		for p := range int32(partitions) {
			for _, r := range f.readPartition(t, topic, p, hwm[p]) {
				seen[r.value]++
			}
		}
		for v, k := range seen {
			ack, ok := produced[v]
			switch {
			case !ok:
				t.Fatalf("%s: read %q, which was never produced", step, v)
			case k > 1:
				t.Fatalf("%s: read %q %d times", step, v, k)
			case !ack:
				t.Logf("%s: %q was read though its produce failed (committed before the node died)", step, v)
			}
		}
		for v, ack := range produced {
			if ack && seen[v] != 1 {
				t.Fatalf("%s: acknowledged record %q read %d times", step, v, seen[v])
			}
		}
	}
	gets := func() int64 { return metricSum(t, reader.addr, "varve_fetch_object_gets_total") }

	produce(0, 20)
	produce(1, 20)
	readAll("both writers up")
	if g := gets(); g != 0 {
		t.Fatalf("the fetch node made %d GETs reading objects their writers hold, want 0", g)
	}

	// The victim is the sequencer's leader: the survivor takes over
	// while the fetch node reads what the victim left.
	victim := leaderOf(t, c, writers)
	survivor := 1 - victim
	produce(victim, 10)
	writers[victim].kill9()
	before := gets()
	readAll("the leader killed")
	g := gets() - before
	t.Logf("after %s (the sequencer's leader) was killed: %d GETs for its 10 unread objects", writers[victim].id, g)
	if g < 1 {
		t.Fatalf("the fetch node read the killed writer's unread objects with %d GETs: they were not read from the bucket", g)
	}

	produce(survivor, 20) // once it leads the sequencer
	before = gets()
	readAll("the survivor alone")
	if g := gets() - before; g != 0 {
		t.Fatalf("the fetch node made %d GETs reading objects the surviving writer holds, want 0", g)
	}
}

// leaderOf returns the index of the node of nodes that leads the
// sequencer.
func leaderOf(t *testing.T, c *cluster, nodes []*serveNode) int {
	t.Helper()
	meta, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: c.etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	leader := -1
	if !testenv.Eventually(30*time.Second, func() bool {
		id, err := seqlog.New(meta).Leader(context.Background())
		for i, n := range nodes {
			if err == nil && n.addr == id {
				leader = i
			}
		}
		return leader >= 0
	}) {
		t.Fatal("no node leads the sequencer")
	}
	return leader
}

// metricSum adds the samples of a counter on a node's /metrics.
func metricSum(t *testing.T, addr, name string) int64 {
	t.Helper()
	code, body := httpGet(t, addr+"/metrics")
	if code != 200 {
		t.Fatalf("%s/metrics: %d", addr, code)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:\{[^}]*\})? (\S+)$`)
	var sum int64
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", name, m[0], err)
		}
		sum += int64(v)
	}
	return sum
}
