package node_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
	"github.com/varve-io/varve/tier/segment/kafkabatch"
)

// h2cClients are API clients of one node over one HTTP/2 connection
// without TLS, for tests with thousands of concurrent long polls.
func h2cClients(addr string) clients {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: protocols, DialContext: (&net.Dialer{}).DialContext}}
	return clients{
		topics:  varvev1connect.NewTopicServiceClient(hc, addr),
		produce: varvev1connect.NewProduceServiceClient(hc, addr),
		fetch:   varvev1connect.NewFetchServiceClient(hc, addr),
	}
}

// storeTraffic is what a Recorder saw: PUTs and the bytes they wrote, GETs
// of whole objects and ranged GETs.
type storeTraffic struct {
	puts, whole, ranged int
	putBytes            int64
}

func trafficOf(rec *tier.Recorder) storeTraffic {
	var s storeTraffic
	for _, c := range rec.Calls() {
		switch {
		case c.Op == tier.OpPut:
			s.puts++
			s.putBytes += int64(c.Bytes)
		case c.Op == tier.OpGet && c.Off == 0 && c.Len < 0:
			s.whole++
		case c.Op == tier.OpGet:
			s.ranged++
		}
	}
	return s
}

func (s storeTraffic) gets() int { return s.whole + s.ranged }

// perGiB is n per GiB of the bytes PUT.
func (s storeTraffic) perGiB(n int) float64 { return float64(n) / (float64(s.putBytes) / (1 << 30)) }

// TestTailReadsOneGetPerObject: consumers on two and three fetch nodes tail
// every partition of 8- and 1,000-partition topics while a separate ingest
// node, which holds no object it wrote (writer_cache_bytes off), writes them (so no
// fetch node holds a fresh block at flush): the bucket sees one GET per
// object written, each of the whole object, at most 1.05 × the PUTs — not
// one ranged GET per block (1,000 per object at 1,000 partitions).
func TestTailReadsOneGetPerObject(t *testing.T) {
	for _, tc := range []struct {
		fetchNodes int
		partitions int32
		batches    int
	}{
		{2, 8, 12},
		{3, 8, 12},
		{2, 1000, 4},
		{3, 1000, 4},
	} {
		t.Run(fmt.Sprintf("fetch-nodes=%d/partitions=%d", tc.fetchNodes, tc.partitions), func(t *testing.T) {
			c := startCluster(t, tc.fetchNodes)
			tailWhileProducing(t, c.ingest, c.fetch, c.rec, tc.partitions, tc.batches)
			if s := trafficOf(c.rec); s.whole != s.puts || s.ranged != 0 {
				t.Fatalf("%d GETs (%d whole, %d ranged) for %d objects, want one whole GET each", s.gets(), s.whole, s.ranged, s.puts)
			}
		})
	}
}

// TestTailReadsFromAnIngestOnlyWriter: as the Terraform module deploys
// Varve, the ingest nodes (ingest,sequence) run apart from the fetch nodes.
// Two ingest nodes write a 1,000-partition topic (and an 8-partition one)
// while consumers on two fetch nodes tail every partition: each fetch node
// asks the writer of each fresh object for it once (GetObject), and the
// bucket sees no GET at all, where without the writers' memory it saw one
// per object (TestTailReadsOneGetPerObject). Then the second writer stops
// with objects not read yet: they are read from the bucket, once each,
// every record.
func TestTailReadsFromAnIngestOnlyWriter(t *testing.T) {
	for _, partitions := range []int32{8, 1000} {
		t.Run(fmt.Sprintf("partitions=%d", partitions), func(t *testing.T) {
			c := startClusterWith(t, 2, nil)
			second := startNodeWith(t, node.RoleIngest, c.endpoints, c.rec, func(cfg *node.Config) {
				cfg.NodeID = "ingest-2"
				cfg.Roles = []string{node.RoleIngest, node.RoleSequence}
			})
			for _, w := range []*node.Node{c.ingest, second} {
				tailWhileProducing(t, w, c.fetch, c.rec, partitions, 4)
				if s := trafficOf(c.rec); s.gets() != 0 {
					t.Fatalf("%d GETs (%d whole, %d ranged) for %d objects their ingest-only writer holds, want 0", s.gets(), s.whole, s.ranged, s.puts)
				}
			}

			topic := "writer-gone"
			createTopic(t, newClients(second.Addr()), topic, partitions)
			const objects, per = 3, 2
			produceBatches(t, second, topic, partitions, objects, per, 0)
			c.rec.Reset()
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := second.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}
			var ps []int32
			for p := range partitions {
				ps = append(ps, p)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := tailConsumeFrom(ctx, h2cClients(c.fetch[0].Addr()), topic, ps, 0, objects*per); err != nil {
				t.Fatal(err)
			}
			gets := wholeGets(t, c.rec)
			if len(gets) != objects {
				t.Fatalf("%d of the gone writer's %d objects read from the bucket: %v", len(gets), objects, gets)
			}
			for o, k := range gets {
				if k != 1 {
					t.Errorf("object %s: %d GETs, want 1", o, k)
				}
			}
		})
	}
}

// TestTailReadsFromTheWriter: with two and three nodes running both ingest
// and fetch at 1,000 partitions, the node that wrote an object owns it and
// serves it from the memory it cached its blocks in at flush: tailing
// consumers on every node cause no GET at all, and each other node asks
// the writer for each object once, whole (GetObject), not once per block
// (tailWhileProducing checks the calls).
func TestTailReadsFromTheWriter(t *testing.T) {
	for _, nodesN := range []int{2, 3} {
		t.Run(fmt.Sprintf("nodes=%d", nodesN), func(t *testing.T) {
			c := startCluster(t, 0)
			nodes := bothNodes(t, c, nodesN)
			tailWhileProducing(t, nodes[0], nodes, c.rec, 1000, 4)
			if s := trafficOf(c.rec); s.gets() != 0 {
				t.Fatalf("%d GETs (%d whole, %d ranged) for %d objects written by a fetch node, want 0", s.gets(), s.whole, s.ranged, s.puts)
			}
		})
	}
}

// TestTailReadsFromTheWriterAsBatches is TestTailReadsFromTheWriter with
// consumers that read record batches (FetchPartitions, as the SDK's do):
// the blocks of the writer's objects reach the other node as stored and
// are shipped as stored, every record intact, with no GET.
func TestTailReadsFromTheWriterAsBatches(t *testing.T) {
	c := startCluster(t, 0)
	nodes := bothNodes(t, c, 2)
	tailWhileProducingWith(t, nodes[0], nodes, c.rec, 1000, 4, tailConsumeBatches)
	if s := trafficOf(c.rec); s.gets() != 0 {
		t.Fatalf("%d GETs (%d whole, %d ranged) for %d objects written by a fetch node, want 0", s.gets(), s.whole, s.ranged, s.puts)
	}
}

// TestPeersTakeTheirPartitionsOnly: two ingest+fetch nodes; consumers on
// the reader tail a quarter of a 1,000-partition topic the other node
// writes.
// While the partitions it serves are new, the reader asks for whole
// objects; once they have settled (5 s), each GetObject answer brings the
// blocks of its quarter only, with no call per block, and every record is
// read; when the owner dies, the reader reads its unread objects from the
// bucket, once each.
func TestPeersTakeTheirPartitionsOnly(t *testing.T) {
	c := startCluster(t, 0)
	nodes := bothNodes(t, c, 2)
	reader, owner := nodes[0], nodes[1]
	const partitions, mine, per = 1000, 250, 3
	topic := "quarter"
	createTopic(t, newClients(owner.Addr()), topic, partitions)
	var ps []int32
	for p := range int32(mine) {
		ps = append(ps, p)
	}
	cl := h2cClients(reader.Addr())
	read := func(from, to int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := tailConsumeFrom(ctx, cl, topic, ps, from, to); err != nil {
			t.Fatal(err)
		}
	}
	c0, b0 := peerCalls(t, reader), peerObjectBlocks(t, reader)
	produceBatches(t, owner, topic, partitions, 1, per, 0)
	read(0, per)
	c1, b1 := peerCalls(t, reader), peerObjectBlocks(t, reader)
	if calls := c1.sub(c0); calls.objects != 1 || calls.blocks != 0 || b1-b0 != partitions {
		t.Fatalf("first object, partitions new: %v bringing %d blocks, want 1 GetObject of all %d", calls, b1-b0, partitions)
	}
	time.Sleep(6 * time.Second) // the reader's partitions settle (blockcache.hotSettle)
	const objects = 4
	produceBatches(t, owner, topic, partitions, objects, per, per)
	read(per, (1+objects)*per)
	c2, b2 := peerCalls(t, reader), peerObjectBlocks(t, reader)
	if calls := c2.sub(c1); calls.objects != objects || calls.blocks != 0 || b2-b1 != objects*mine {
		t.Fatalf("%d objects, partitions settled: %v bringing %d blocks, want %d GetObject of %d blocks each", objects, calls, b2-b1, objects, mine)
	}

	// The owner dies with objects acknowledged and not read yet: the
	// reader's asks for its partitions fail, and it reads each object
	// from the bucket itself, once, with every record.
	readAfterOwnerDies(t, c, reader, owner, topic, partitions, 2, per, (1+objects)*per, func() {
		read((1+objects)*per, (3+objects)*per)
	})
}

var peerObjectBlocksRE = regexp.MustCompile(`(?m)^varve_cache_peer_object_blocks_total(?:\{[^}]*\})? (\S+)$`)

// peerObjectBlocks reads from a node's /metrics how many blocks other
// nodes' GetObject answers brought it.
func peerObjectBlocks(t *testing.T, n *node.Node) int64 {
	t.Helper()
	m := peerObjectBlocksRE.FindSubmatch(metricsPage(t, n.Addr()))
	if m == nil {
		t.Fatalf("%s: no varve_cache_peer_object_blocks_total in /metrics", n.Addr())
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return int64(v)
}

// bothNodes starts n nodes with the ingest and fetch roles, both-0 to
// both-<n-1>, and waits until they see each other as fetch nodes.
func bothNodes(t *testing.T, c *cluster, n int) []*node.Node {
	t.Helper()
	var nodes []*node.Node
	for i := range n {
		nodes = append(nodes, startNodeWith(t, node.RoleFetch, c.endpoints, c.rec, func(cfg *node.Config) {
			cfg.NodeID = fmt.Sprintf("both-%d", i)
			cfg.Roles = []string{node.RoleIngest, node.RoleFetch, node.RoleSequence}
		}))
	}
	c.waitMembers(t, nodes)
	return nodes
}

// TestTailReadsSurviveTheOwnerKilled: two ingest+fetch nodes; consumers on
// the first read what the second wrote, asking it for each object whole.
// The second is shut down with objects of its own still unread (its lease
// still live, so the first still takes it for their owner): the first's
// call fails, it suspects the owner and reads each object itself, whole,
// once, and every record is read.
func TestTailReadsSurviveTheOwnerKilled(t *testing.T) {
	c := startCluster(t, 0)
	nodes := bothNodes(t, c, 2)
	reader, owner := nodes[0], nodes[1]
	const partitions, per, first, second = 200, 3, 2, 3
	topic := "owner-killed"
	createTopic(t, newClients(owner.Addr()), topic, partitions)
	consumeAll := func(from, to int64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		const consumers = 16
		errs := make(chan error, consumers)
		cl := h2cClients(reader.Addr())
		for w := range int32(consumers) {
			var ps []int32
			for p := w; p < partitions; p += consumers {
				ps = append(ps, p)
			}
			wg.Go(func() {
				if err := tailConsumeFrom(ctx, cl, topic, ps, from, to); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	before := peerCalls(t, reader)
	produceBatches(t, owner, topic, partitions, first, per, 0)
	consumeAll(0, first*per)
	mid := peerCalls(t, reader)
	if got := mid.sub(before); got.objects == 0 || got.objects > first || got.blocks != 0 {
		t.Fatalf("reading %d objects of a live owner: %v, want 1 to %d GetObject calls and no GetBlock", first, got, first)
	}
	// Written, acknowledged, and not read yet when their owner dies.
	readAfterOwnerDies(t, c, reader, owner, topic, partitions, second, per, first*per, func() {
		consumeAll(first*per, (first+second)*per)
	})
}

// readAfterOwnerDies produces n objects through owner (per records a
// partition each, numbered from from), shuts owner down while its lease is
// still live, and runs read, which reads them through reader. Then it
// checks the fallback: the reader asked the dead owner (1 to n GetObject,
// no GetBlock) and read each object from the bucket, whole, once.
func readAfterOwnerDies(t *testing.T, c *cluster, reader, owner *node.Node, topic string, partitions int32, n, per, from int, read func()) {
	t.Helper()
	produceBatches(t, owner, topic, partitions, n, per, from)
	before := peerCalls(t, reader)
	c.rec.Reset()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner.KeepRegistrations() // dead, not drained: its lease outlives it
	if err := owner.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	if len(reader.BlockOwners().Peers()) != 2 {
		t.Fatalf("the reader already dropped the dead owner (%v): the test needs its lease live", reader.BlockOwners().Peers())
	}
	read()
	got := peerCalls(t, reader).sub(before)
	gets := wholeGets(t, c.rec)
	t.Logf("after the owner died: %v; GETs per object %v", got, gets)
	if got.objects == 0 {
		t.Fatalf("the reader never asked the dead owner (%v): the fallback was not exercised", got)
	}
	if got.objects > int64(n) || got.blocks != 0 {
		t.Fatalf("calls to the dead owner: %v, want at most one GetObject per object (%d) and no GetBlock", got, n)
	}
	if len(gets) != n {
		t.Fatalf("the reader read %d of the dead owner's %d objects from the bucket", len(gets), n)
	}
	for o, k := range gets {
		if k != 1 {
			t.Errorf("object %s: %d GETs, want 1", o, k)
		}
	}
}

// internalCalls counts a node's calls to other nodes' BlockService.
type internalCalls struct{ blocks, objects int64 }

func (a internalCalls) sub(b internalCalls) internalCalls {
	return internalCalls{a.blocks - b.blocks, a.objects - b.objects}
}

func (a internalCalls) String() string {
	return fmt.Sprintf("%d GetBlock, %d GetObject", a.blocks, a.objects)
}

var peerCallsRE = regexp.MustCompile(`(?m)^varve_cache_peer_calls_total\{[^}]*rpc="(\w+)"[^}]*\} (\S+)$`)

// peerCalls reads a node's calls to other nodes' BlockService from its
// /metrics (varve_cache_peer_calls_total by rpc).
func peerCalls(t *testing.T, n *node.Node) internalCalls {
	t.Helper()
	page := metricsPage(t, n.Addr())
	var c internalCalls
	ms := peerCallsRE.FindAllSubmatch(page, -1)
	if len(ms) == 0 {
		t.Fatalf("%s: no varve_cache_peer_calls_total in /metrics", n.Addr())
	}
	for _, m := range ms {
		v, err := strconv.ParseFloat(string(m[2]), 64)
		if err != nil {
			t.Fatal(err)
		}
		switch string(m[1]) {
		case "GetBlock":
			c.blocks += int64(v)
		case "GetObject":
			c.objects += int64(v)
		}
	}
	return c
}

// tailConsumeBatches is tailConsume through FetchPartitions with record
// batches, as the SDK's consumers read: one long poll for all of ps per
// round, every record of the stored batches checked.
func tailConsumeBatches(ctx context.Context, c clients, topic string, ps []int32, to int64) error {
	next := make(map[int32]int64, len(ps))
	for slices.ContainsFunc(ps, func(p int32) bool { return next[p] < to }) {
		req := &varvev1.FetchPartitionsRequest{Topic: topic, RecordBatches: true, MaxWaitMs: 100}
		for _, p := range ps {
			if next[p] < to {
				req.Partitions = append(req.Partitions, &varvev1.FetchPartition{Partition: p, Offset: next[p]})
			}
		}
		resp, err := c.fetch.FetchPartitions(ctx, connect.NewRequest(req))
		if connect.CodeOf(err) == connect.CodeUnavailable && ctx.Err() == nil {
			continue
		}
		if err != nil {
			return fmt.Errorf("fetch partitions of %s: %w", topic, err)
		}
		for _, r := range resp.Msg.GetPartitions() {
			p := r.GetPartition()
			if e := r.GetError(); e != nil {
				if connect.Code(e.GetCode()) == connect.CodeUnavailable {
					continue
				}
				return fmt.Errorf("fetch %s/%d at %d: %v", topic, p, next[p], e)
			}
			var bad error
			err := segment.VisitBatches(r.GetRecordBatches(), next[p], func(off int64, kr *kafkabatch.Record) {
				if bad == nil && (off != next[p] || string(kr.Value) != fmt.Sprintf("%d-%d", p, off)) {
					bad = fmt.Errorf("fetch %s/%d: got offset %d value %q, want offset %d", topic, p, off, kr.Value, next[p])
				}
				next[p] = off + 1
			})
			if err == nil {
				err = bad
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// tailConsume reads the partitions ps of topic from offset 0 up to
// (excluding) to, checking every record, as one consumer of many
// partitions does: a short long poll on each partition in turn. It retries
// what UNAVAILABLE answers (thousands of partitions at once load this
// 2-core machine's etcd past its request timeout).
func tailConsume(ctx context.Context, c clients, topic string, ps []int32, to int64) error {
	return tailConsumeFrom(ctx, c, topic, ps, 0, to)
}

// tailConsumeFrom is tailConsume from offset from.
func tailConsumeFrom(ctx context.Context, c clients, topic string, ps []int32, from, to int64) error {
	next := make([]int64, len(ps))
	for i := range next {
		next[i] = from
	}
	for done := 0; done < len(ps); {
		done = 0
		for i, p := range ps {
			if next[i] >= to {
				done++
				continue
			}
			resp, err := c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: p, Offset: next[i], MaxBytes: 1 << 20, MaxWaitMs: 100}))
			if connect.CodeOf(err) == connect.CodeUnavailable && ctx.Err() == nil {
				continue
			}
			if err != nil {
				return fmt.Errorf("fetch %s/%d at %d: %w", topic, p, next[i], err)
			}
			for _, r := range resp.Msg.Records {
				if r.Offset != next[i] || string(r.Value) != fmt.Sprintf("%d-%d", p, next[i]) {
					return fmt.Errorf("fetch %s/%d: got offset %d value %q, want offset %d", topic, p, r.Offset, r.Value, next[i])
				}
				next[i]++
			}
		}
	}
	return nil
}

// tailWhileProducing starts a consumer on every fetch node for every
// partition of a new topic, produces batches (one object each) through
// writer, waits until every consumer has read every record, then checks
// the bucket's GETs against its PUTs, and each fetch node's calls to the
// others: at most one per object it read (GetObject), not one per block.
func tailWhileProducing(t *testing.T, writer *node.Node, fetch []*node.Node, rec *tier.Recorder, partitions int32, batches int) {
	t.Helper()
	tailWhileProducingWith(t, writer, fetch, rec, partitions, batches, tailConsume)
}

// tailWhileProducingWith is tailWhileProducing with consumers that read
// through consume.
// tailTopics numbers the topics of tailWhileProducingWith, so that a test
// may tail several on one cluster.
var tailTopics atomic.Int64

func tailWhileProducingWith(t *testing.T, writer *node.Node, fetch []*node.Node, rec *tier.Recorder, partitions int32, batches int,
	consume func(ctx context.Context, c clients, topic string, ps []int32, to int64) error) {
	t.Helper()
	const per = 3
	topic := fmt.Sprintf("tail%d-%d", partitions, tailTopics.Add(1))
	createTopic(t, newClients(writer.Addr()), topic, partitions)
	rec.Reset()
	before := make([]internalCalls, len(fetch))
	for i, n := range fetch {
		before[i] = peerCalls(t, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	const consumers = 32 // per fetch node, each reading every 32nd partition
	errs := make(chan error, len(fetch)*consumers)
	for _, n := range fetch {
		cl := h2cClients(n.Addr())
		for w := range int32(consumers) {
			var ps []int32
			for p := w; p < partitions; p += consumers {
				ps = append(ps, p)
			}
			wg.Go(func() {
				if err := consume(ctx, cl, topic, ps, int64(batches*per)); err != nil {
					errs <- err
				}
			})
		}
	}
	produceBatches(t, writer, topic, partitions, batches, per, 0)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	s := trafficOf(rec)
	if s.puts != batches {
		t.Fatalf("%d produces made %d objects", batches, s.puts)
	}
	t.Logf("%d partitions, %d fetch nodes: %d PUTs (%d bytes), %d GETs (%d whole objects, %d ranged): %.0f PUTs/GiB, %.0f GETs/GiB, GETs/PUTs %.3f",
		partitions, len(fetch), s.puts, s.putBytes, s.gets(), s.whole, s.ranged, s.perGiB(s.puts), s.perGiB(s.gets()), float64(s.gets())/float64(s.puts))
	if float64(s.gets()) > 1.05*float64(s.puts) {
		t.Fatalf("tail reads made %d GETs (%d whole, %d ranged) for %d PUTs, want at most 1.05 × the PUTs", s.gets(), s.whole, s.ranged, s.puts)
	}
	// Every fetch node reads every object (a block of each partition):
	// at most one call to another node per object.
	for i, n := range fetch {
		calls := peerCalls(t, n).sub(before[i])
		t.Logf("%s: %v for %d objects of %d blocks (%.2f calls per object)", n.BlockOwners().Self(), calls, s.puts, partitions,
			float64(calls.blocks+calls.objects)/float64(s.puts))
		if calls.blocks+calls.objects > int64(s.puts) {
			t.Errorf("%s made %v to other nodes reading %d objects, want at most one per object", n.BlockOwners().Self(), calls, s.puts)
		}
	}
}

// TestCompactedBlocksReadByRange: once compaction has replaced the fresh
// objects of a topic by per-partition L1 objects, consumers on two fetch
// nodes read the L1 blocks with one ranged GET per block for the cluster,
// never an L1 object whole.
func TestCompactedBlocksReadByRange(t *testing.T) {
	c := startCluster(t, 2)
	compactor := startNodeWith(t, node.RoleCompact, c.endpoints, c.rec, func(cfg *node.Config) {
		cfg.CompactionInterval = 50 * time.Millisecond
		cfg.CompactionMinEntries = 5
	})
	const partitions, batches, per = 4, 12, 20
	ctx := context.Background()
	admin := varvev1connect.NewAdminServiceClient(http.DefaultClient, compactor.Addr())
	// Paused while producing, so that every partition is compacted whole.
	if _, err := admin.PauseCompaction(ctx, connect.NewRequest(&varvev1.PauseCompactionRequest{})); err != nil {
		t.Fatal(err)
	}
	createTopic(t, newClients(c.ingest.Addr()), "l1", partitions)
	produceBatches(t, c.ingest, "l1", partitions, batches, per, 0)
	if _, err := admin.ResumeCompaction(ctx, connect.NewRequest(&varvev1.ResumeCompactionRequest{})); err != nil {
		t.Fatal(err)
	}
	status := func() *varvev1.CompactionStatusResponse {
		resp, err := admin.CompactionStatus(ctx, connect.NewRequest(&varvev1.CompactionStatusRequest{Topic: "l1"}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	if !testenv.Eventually(60*time.Second, func() bool {
		s := status()
		return s.GetBacklogEntries() == 0 && s.GetIndexEntries() == partitions
	}) {
		t.Fatalf("not compacted: %v", status())
	}
	c.rec.Reset()
	var wg sync.WaitGroup
	errs := make(chan error, len(c.fetch)*partitions)
	for _, n := range c.fetch {
		cl := newClients(n.Addr())
		for p := range int32(partitions) {
			wg.Go(func() {
				if err := consume(ctx, cl, "l1", p, 0, batches*per, 300); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	blocks := map[string]int{}
	objects := map[string]bool{}
	for _, call := range c.rec.Calls() {
		if call.Op != tier.OpGet {
			continue
		}
		if _, fresh := tier.FlushKeyNode(call.Key); fresh {
			t.Errorf("GET of fresh object %s bytes %d+%d after compaction", call.Key, call.Off, call.Len)
			continue
		}
		if call.Len < 0 {
			t.Errorf("GET of L1 object %s whole", call.Key)
		}
		blocks[fmt.Sprintf("%s@%d+%d", call.Key, call.Off, call.Len)]++
		objects[call.Key] = true
	}
	// Compaction may put small partitions into one shared object
	// (l1/_shared/…): each partition's block is still its own ranged GET.
	if len(blocks) < partitions {
		t.Fatalf("%d ranged GETs of %d L1 objects for %d partitions: %v", len(blocks), len(objects), partitions, blocks)
	}
	for b, n := range blocks {
		if n != 1 {
			t.Errorf("L1 block %s: %d GETs, want 1", b, n)
		}
	}
	t.Logf("%d L1 objects, %d ranged GETs", len(objects), len(blocks))
}
