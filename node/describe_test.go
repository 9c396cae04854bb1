package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"testing"
	"time"

	"connectrpc.com/connect"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata/seqlog"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

// figures is one partition's line of a description.
type figures struct{ start, next, bytes, segments int64 }

func describeFigures(t *testing.T, addr, topic string) map[int32]figures {
	t.Helper()
	c := varvev1connect.NewTopicServiceClient(http.DefaultClient, addr)
	resp, err := c.DescribeTopic(context.Background(), connect.NewRequest(&varvev1.DescribeTopicRequest{Name: topic}))
	if err != nil {
		t.Fatalf("describe %s through %s: %v", topic, addr, err)
	}
	out := map[int32]figures{}
	for _, p := range resp.Msg.GetPartitions() {
		out[p.GetPartition()] = figures{p.GetLogStartOffset(), p.GetNextOffset(), p.GetBytes(), p.GetSegments()}
	}
	return out
}

// storedFigures counts, straight from etcd, what a partition stores: its
// index keys and the blocks of the sequencer's records that no index key
// covers and that end after the log start (as the read path serves
// them), with the log start and the offset they end at.
func storedFigures(t *testing.T, endpoints []string, meta *seqlog.Log, topic string, partitions int32) map[int32]figures {
	t.Helper()
	ctx := context.Background()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	type block struct{ base, end, len int64 }
	keyed := map[int32][]block{}
	for p := range partitions {
		resp, err := cli.Get(ctx, fmt.Sprintf("/varve/index/%s/%d/", topic, p), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			var e struct {
				Len  int64 `json:"len"`
				N    int64 `json:"n"`
				Span int64 `json:"span"`
			}
			if err := json.Unmarshal(kv.Value, &e); err != nil {
				t.Fatal(err)
			}
			var base int64
			if _, err := fmt.Sscanf(string(kv.Key)[len(fmt.Sprintf("/varve/index/%s/%d/", topic, p)):], "%d", &base); err != nil {
				t.Fatalf("index key %s: %v", kv.Key, err)
			}
			n := max(e.N, e.Span)
			keyed[p] = append(keyed[p], block{base, base + n, e.Len})
		}
	}
	starts := map[int32]int64{}
	resp, err := cli.Get(ctx, fmt.Sprintf("/varve/partitions/%s/", topic), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		var st struct {
			Start int64 `json:"start"`
		}
		var p int32
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Sscanf(string(kv.Key)[len(fmt.Sprintf("/varve/partitions/%s/", topic)):], "%d", &p); err != nil {
			t.Fatalf("partition key %s: %v", kv.Key, err)
		}
		starts[p] = st.Start
	}
	out := map[int32]figures{}
	for p, start := range starts {
		out[p] = figures{start: start, next: start}
	}
	for p, bs := range keyed {
		f := out[p]
		for _, b := range bs {
			f.bytes += b.len
			f.segments++
			f.next = max(f.next, b.end)
		}
		out[p] = f
	}
	recs, err := meta.Records(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		for _, c := range r.Commits {
			for i, a := range c.Appends {
				if a.Topic != topic || c.Results[i].Err != nil {
					continue
				}
				base, end := c.Results[i].Base, c.Results[i].Base+a.Records
				f := out[a.Partition]
				f.next = max(f.next, end)
				covered := false
				for _, k := range keyed[a.Partition] {
					if k.base < end && base < k.end {
						covered = true
					}
				}
				if !covered && end > f.start { // below the log start: expired
					f.bytes += a.Len
					f.segments++
				}
				out[a.Partition] = f
			}
		}
	}
	return out
}

// TestDescribeCountsSequencedPartitions: on the sequencer commit path no
// partition key is written, yet a topic's description gives every
// partition's true high watermark, bytes and blocks — through a node
// with a watched index (fetch role) and through one without (compact
// role, read from etcd) — for partitions only in the sequencer's records,
// compacted into index keys, and both (compacted, then produced to
// again), and for a partition never produced to.
func TestDescribeCountsSequencedPartitions(t *testing.T) {
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	endpoints := testenv.StartEtcd(t)
	n := startNodeWith(t, node.RoleIngest, endpoints, st, func(cfg *node.Config) {
		cfg.Roles = []string{node.RoleIngest, node.RoleFetch, node.RoleSequence}
		cfg.CommitPath = node.CommitSequencer
	})
	compactor := startNodeWith(t, node.RoleCompact, endpoints, st, func(cfg *node.Config) {
		cfg.RetentionCheckInterval = time.Second
		cfg.CompactionInterval = 50 * time.Millisecond
		cfg.CompactionMinEntries = 2
	})
	ctx := context.Background()
	adm := varvev1connect.NewAdminServiceClient(http.DefaultClient, compactor.Addr())
	if _, err := adm.PauseCompaction(ctx, connect.NewRequest(&varvev1.PauseCompactionRequest{})); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(30*time.Second, n.Sequencer().Leading) {
		t.Fatal("the sequencer never led")
	}
	c := newClients(n.Addr())
	const topic = "described"
	createTopic(t, c, topic, 4)
	// produce sends one request (one flush: one block per partition
	// named) with count records to each of parts.
	produce := func(count int, parts ...int32) {
		t.Helper()
		req := &varvev1.ProduceRequest{Topic: topic}
		for _, p := range parts {
			for i := range count {
				req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p),
					Record: &varvev1.Record{Value: fmt.Appendf(nil, "value %d of partition %d, padded to some bytes", i, p)}})
			}
		}
		if _, err := c.produce.Produce(ctx, connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
	}
	produce(5, 0, 1, 2)
	produce(7, 0, 1)
	produce(3, 1)
	log := seqlog.New(n.Meta())
	check := func(stage string, want map[int32]figures) {
		t.Helper()
		for _, at := range []struct{ name, addr string }{{"the fetch node (watched index)", n.Addr()}, {"the compact node (etcd)", compactor.Addr()}} {
			got := describeFigures(t, at.addr, topic)
			for p := range int32(4) {
				if got[p] != want[p] {
					t.Errorf("%s, partition %d through %s: {start next bytes segments} = %v, want %v", stage, p, at.name, got[p], want[p])
				}
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("%s: %v", stage, want)
	}

	// (a) Only in the sequencer's records.
	want := storedFigures(t, endpoints, log, topic, 4)
	for p, w := range map[int32]figures{0: {next: 12, segments: 2}, 1: {next: 15, segments: 3}, 2: {next: 5, segments: 1}} {
		if want[p].next != w.next || want[p].segments != w.segments || want[p].bytes <= 0 {
			t.Fatalf("partition %d stores %v; the test expects %d records in %d blocks", p, want[p], w.next, w.segments)
		}
	}
	check("records only", want)

	// (b) Compacted into index keys.
	if _, err := adm.ResumeCompaction(ctx, connect.NewRequest(&varvev1.ResumeCompactionRequest{})); err != nil {
		t.Fatal(err)
	}
	status := func() *varvev1.CompactionStatusResponse {
		resp, err := adm.CompactionStatus(ctx, connect.NewRequest(&varvev1.CompactionStatusRequest{Topic: topic}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	// Partition 2's one block is below compaction_min_entries: it stays
	// in its record.
	if !testenv.Eventually(30*time.Second, func() bool { s := status(); return s.GetBacklogEntries() == 1 && s.GetIndexEntries() == 3 }) {
		t.Fatalf("not compacted: %v", status())
	}
	if _, err := adm.PauseCompaction(ctx, connect.NewRequest(&varvev1.PauseCompactionRequest{})); err != nil {
		t.Fatal(err)
	}
	want = storedFigures(t, endpoints, log, topic, 4)
	if want[0].segments != 1 || want[1].segments != 1 || want[0].next != 12 || want[1].next != 15 {
		t.Fatalf("after compaction partitions 0 and 1 store %v and %v; the test expects one block each", want[0], want[1])
	}
	check("compacted", want)

	// (c) Both: compacted blocks and records after them.
	produce(4, 0, 3)
	want = storedFigures(t, endpoints, log, topic, 4)
	if want[0].segments != 2 || want[0].next != 16 || want[3].segments != 1 || want[3].next != 4 {
		t.Fatalf("after compaction and a produce partitions 0 and 3 store %v and %v", want[0], want[3])
	}
	check("compacted and records", want)

	// (d) Retention moves the log start: with retention_bytes 100 an
	// entry expires while dropping it leaves at least 100 bytes (Kafka's
	// rule), so partition 0 loses its compacted block and keeps its
	// record block; the others keep their one block.
	if _, err := c.topics.UpdateTopic(ctx, connect.NewRequest(&varvev1.UpdateTopicRequest{Name: topic, RetentionBytes: proto.Int64(100)})); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(30*time.Second, func() bool { return storedFigures(t, endpoints, log, topic, 4)[0].start == 12 }) {
		t.Fatalf("retention never moved partition 0's log start to 12: %v", storedFigures(t, endpoints, log, topic, 4))
	}
	want = storedFigures(t, endpoints, log, topic, 4)
	if want[0].segments != 1 || want[0].next != 16 || want[1].start != 0 || want[3].start != 0 {
		t.Fatalf("after retention partitions 0 and 3 store %v and %v", want[0], want[3])
	}
	check("after retention", want)
}

// TestDescribeDirectPathUnchanged: on the direct commit path a
// description gives the figures of the partition keys, as before.
func TestDescribeDirectPathUnchanged(t *testing.T) {
	n := startNode(t, func(cfg *node.Config) {
		cfg.CommitPath = node.CommitDirect
		cfg.Roles = []string{node.RoleIngest, node.RoleFetch}
	})
	ctx := context.Background()
	createTopic(t, n.c, "direct", 3)
	for i := range 3 {
		req := &varvev1.ProduceRequest{Topic: "direct"}
		for p := range int32(i + 1) {
			req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: fmt.Appendf(nil, "v%d", i)}})
		}
		if _, err := n.c.produce.Produce(ctx, connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: n.Meta().Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/varve/partitions/direct/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]figures{}
	for _, kv := range resp.Kvs {
		var st struct{ Next, Start, Bytes, Segments int64 }
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			t.Fatal(err)
		}
		var p int32
		fmt.Sscanf(string(kv.Key), "/varve/partitions/direct/%d", &p)
		want[p] = figures{st.Start, st.Next, st.Bytes, st.Segments}
	}
	if len(want) != 3 || want[0].segments != 3 || want[2].segments != 1 || want[0].next != 3 {
		t.Fatalf("partition keys %v", want)
	}
	got := describeFigures(t, n.Addr(), "direct")
	ps := make([]int, 0, 3)
	for p := range got {
		ps = append(ps, int(p))
	}
	sort.Ints(ps)
	for _, p := range ps {
		if got[int32(p)] != want[int32(p)] {
			t.Errorf("partition %d: described %v, partition key %v", p, got[int32(p)], want[int32(p)])
		}
	}
}
