package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/sequencer"
	"github.com/varve-io/varve/tier"
)

// etcdWrites watches every key from a revision on and sorts the write
// revisions (one per transaction) by what they touched.
type etcdWrites struct {
	mu   sync.Mutex
	revs map[int64]map[string]int // revision → key family → keys
	last int64
}

func watchWrites(t *testing.T, endpoints []string) *etcdWrites {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := cli.Get(ctx, "/varve/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	w := &etcdWrites{revs: map[int64]map[string]int{}}
	wc := cli.Watch(ctx, "/varve/", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range wc {
			w.mu.Lock()
			for _, ev := range r.Events {
				rev := ev.Kv.ModRevision
				m := w.revs[rev]
				if m == nil {
					m = map[string]int{}
					w.revs[rev] = m
				}
				m[keyFamily(string(ev.Kv.Key))]++
			}
			w.last = r.Header.Revision
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cli.Close() })
	return w
}

// keyFamily names a key by its first one or two path elements:
// seq/records, partitions, index, guards, idem, ...
func keyFamily(k string) string {
	parts := strings.Split(strings.TrimPrefix(k, "/varve/"), "/")
	if parts[0] == "seq" && len(parts) > 1 {
		return "seq/" + parts[1]
	}
	return parts[0]
}

// counts returns, up to revision upto, the write transactions that
// touched each family and their total.
func (w *etcdWrites) counts(t *testing.T, upto int64) (byFamily map[string]int, total int) {
	t.Helper()
	if !testenv.Eventually(10*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.last >= upto }) {
		t.Fatalf("the watch never reached revision %d", upto)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	byFamily = map[string]int{}
	for rev, fams := range w.revs {
		if rev > upto {
			continue
		}
		total++
		for f := range fams {
			byFamily[f]++
		}
	}
	return byFamily, total
}

// ack is one record the SDK producer acknowledged.
type ack struct {
	key    string
	part   int32
	offset int64
}

// checkAcksAgainstRecords checks what the sequencer's records hold
// against the acknowledged records: per partition the committed blocks
// tile [0, n) with no gap or overlap, n is the number of records
// acknowledged there, and no two acknowledgements share an offset. So
// every acknowledged record is stored once (at its offset) and nothing
// else is.
func checkAcksAgainstRecords(t *testing.T, meta *metadata.Client, topic string, acks []ack) (records, batches int) {
	t.Helper()
	recs, err := seqlog.New(meta).Records(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ base, n int64 }
	spans := map[int32][]span{}
	for _, r := range recs {
		for _, c := range r.Commits {
			for i, a := range c.Appends {
				if a.Topic != topic || c.Results[i].Err != nil {
					continue
				}
				spans[a.Partition] = append(spans[a.Partition], span{c.Results[i].Base, a.Records})
			}
		}
	}
	acked := map[int32]map[int64]string{}
	for _, a := range acks {
		if acked[a.part] == nil {
			acked[a.part] = map[int64]string{}
		}
		if prev, dup := acked[a.part][a.offset]; dup {
			t.Fatalf("%s and %s both acknowledged at %d/%d", prev, a.key, a.part, a.offset)
		}
		acked[a.part][a.offset] = a.key
	}
	for p, ss := range spans {
		sort.Slice(ss, func(i, j int) bool { return ss[i].base < ss[j].base })
		next := int64(0)
		for _, s := range ss {
			if s.base != next {
				t.Fatalf("partition %d: a committed block starts at %d, want %d (gap or overlap)", p, s.base, next)
			}
			next += s.n
		}
		if int64(len(acked[p])) != next {
			t.Fatalf("partition %d: %d records committed, %d acknowledged", p, next, len(acked[p]))
		}
		for off := range acked[p] {
			if off < 0 || off >= next {
				t.Fatalf("partition %d: acknowledged offset %d outside the committed [0, %d)", p, off, next)
			}
		}
		records += int(next)
	}
	for p := range acked {
		if len(spans[p]) == 0 {
			t.Fatalf("partition %d: %d records acknowledged, none committed", p, len(acked[p]))
		}
	}
	return records, len(recs)
}

// metricValue reads one sample of a metric from a node's /metrics.
func metricValue(t *testing.T, addr, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(\{[^}]*\})? (\S+)$`).FindSubmatch(page)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[2]), 64)
	return v, err == nil
}

// TestSequencerCommitPath: two nodes with the ingest and sequence roles
// and commit_path sequencer, over real etcd and MinIO; the default
// (idempotent) SDK producer sends keyed records to a 1,000-partition topic
// through both. Every record is acknowledged, the sequencer's records
// hold each acknowledged record once at its offset (dense per
// partition), each producer's records keep their order, and etcd sees
// one transaction per batch and no per-partition key written.
func TestSequencerCommitPath(t *testing.T) {
	const (
		partitions       = 1000
		producersPerNode = 4
		perProducer      = 1000
		burst            = 100
		perNode          = producersPerNode * perProducer
	)
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	endpoints := testenv.StartEtcd(t)
	var nodes []*node.Node
	for i := range 2 {
		nodes = append(nodes, startNodeWith(t, node.RoleIngest, endpoints, st, func(cfg *node.Config) {
			cfg.Roles = []string{node.RoleIngest, node.RoleSequence}
			cfg.CommitPath = node.CommitSequencer
			cfg.NodeID = fmt.Sprintf("n%d", i)
			cfg.Linger = 20 * time.Millisecond
		}))
	}
	var leader *node.Node
	if !testenv.Eventually(30*time.Second, func() bool {
		for _, n := range nodes {
			if n.Sequencer().Leading() {
				leader = n
				return true
			}
		}
		return false
	}) {
		t.Fatal("no node became sequencer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const topic = "wide"
	if _, err := admin.New(nodes[0].Addr()).CreateTopic(ctx, topic, partitions, nil); err != nil {
		t.Fatal(err)
	}
	writes := watchWrites(t, endpoints)

	var (
		mu   sync.Mutex
		acks []ack
		errs []error
	)
	// Four producers per node send bursts of records and wait for each
	// burst's acknowledgements: many flushes, whose commits meet at the
	// sequencer.
	var wg sync.WaitGroup
	for i, n := range nodes {
		for pi := range producersPerNode {
			wg.Go(func() {
				p := sdk.New(n.Addr()).NewProducer(sdk.ProducerOptions{}) // the default: idempotent
				id := i*producersPerNode + pi
				for j := range perProducer {
					key := fmt.Sprintf("n%d-k%d", id, j)
					p.Produce(ctx, sdk.Record{Topic: topic, Partition: sdk.AnyPartition, Key: []byte(key), Value: []byte(key)},
						func(r sdk.Record, err error) {
							mu.Lock()
							defer mu.Unlock()
							if err != nil {
								errs = append(errs, fmt.Errorf("record %s: %w", key, err))
								return
							}
							acks = append(acks, ack{key: key, part: r.Partition, offset: r.Offset})
						})
					if (j+1)%burst == 0 {
						if err := p.Flush(ctx); err != nil {
							mu.Lock()
							errs = append(errs, fmt.Errorf("flush producer %d: %w", id, err))
							mu.Unlock()
						}
					}
				}
				if err := p.Close(ctx); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("close producer %d: %w", id, err))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d records failed; first: %v", len(errs), 2*perNode, errs[0])
	}
	if len(acks) != 2*perNode {
		t.Fatalf("%d acknowledgements for %d records", len(acks), 2*perNode)
	}
	stored, batches := checkAcksAgainstRecords(t, nodes[0].Meta(), topic, acks)
	if stored != 2*perNode {
		t.Fatalf("%d records committed, %d acknowledged", stored, 2*perNode)
	}
	// Per producer and partition, offsets grow with the send order.
	last := map[[2]int]struct {
		seq int
		off int64
	}{}
	sort.Slice(acks, func(i, j int) bool { return acks[i].offset < acks[j].offset })
	for _, a := range acks {
		var n, seq int
		fmt.Sscanf(a.key, "n%d-k%d", &n, &seq)
		k := [2]int{n, int(a.part)}
		if prev, ok := last[k]; ok && seq < prev.seq {
			t.Fatalf("partition %d: producer %d's record %d at %d, after its record %d at %d", a.part, n, seq, a.offset, prev.seq, prev.off)
		}
		last[k] = struct {
			seq int
			off int64
		}{seq, a.offset}
	}

	// etcd: one transaction per batch, and nothing per partition.
	stats, err := nodes[0].Meta().Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fams, total := writes.counts(t, stats.Revision)
	for _, f := range []string{"partitions", "index", "guards"} {
		if fams[f] != 0 {
			t.Fatalf("%d etcd transactions wrote %s/ keys: the direct path committed (%v)", fams[f], f, fams)
		}
	}
	var s sequencer.Stats
	for _, n := range nodes {
		st := n.Sequencer().Stats()
		s.Batches += st.Batches
		s.Commits += st.Commits
		s.BatchTxns += st.BatchTxns
	}
	if fams["seq/records"] != batches || int64(batches) != s.Batches {
		t.Fatalf("%d transactions wrote batch records, %d records stored, the sequencers counted %d batches", fams["seq/records"], batches, s.Batches)
	}
	// A batch transaction whose fence failed wrote nothing: it is sent
	// again only after a producer or topic key changed since the leader
	// read it (here: the producers' InitProducer and the topic's creation).
	if s.BatchTxns > s.Batches+2*producersPerNode+1 {
		t.Fatalf("%d batch transactions for %d batches", s.BatchTxns, s.Batches)
	}
	t.Logf("%d records, %d ingest commits in %d batches (%.1f commits/batch); batch transactions %d (%.2f per batch); every etcd write transaction in the run: %d (%.2f per batch: %v)",
		stored, s.Commits, s.Batches, float64(s.Commits)/float64(s.Batches), s.BatchTxns, float64(s.BatchTxns)/float64(s.Batches), total, float64(total)/float64(s.Batches), fams)

	// The leader's metrics.
	for name, want := range map[string]float64{"varve_sequencer_leader": 1, "varve_sequencer_batches_total": float64(leader.Sequencer().Stats().Batches)} {
		if v, ok := metricValue(t, leader.Addr(), name); !ok || v != want {
			t.Fatalf("%s on the leader: %v (found %v), want %v", name, v, ok, want)
		}
	}
	if v, ok := metricValue(t, leader.Addr(), "varve_sequencer_term"); !ok || v <= 0 {
		t.Fatalf("varve_sequencer_term on the leader: %v (found %v)", v, ok)
	}
	n, ok := metricValue(t, leader.Addr(), "varve_sequencer_batch_duration_seconds_count")
	if !ok || n < 1 {
		t.Fatalf("varve_sequencer_batch_duration_seconds_count on the leader: %v (found %v)", n, ok)
	}
	sum, _ := metricValue(t, leader.Addr(), "varve_sequencer_batch_duration_seconds_sum")
	t.Logf("batch transaction latency on the leader: mean %.2f ms over %.0f transactions", 1000*sum/n, n)
	for _, n := range nodes {
		if n != leader {
			if v, ok := metricValue(t, n.Addr(), "varve_sequencer_leader"); !ok || v != 0 {
				t.Fatalf("varve_sequencer_leader on the follower: %v (found %v), want 0", v, ok)
			}
		}
	}
}

// TestDirectNodeRefusedOnceSequenced: an ingest node left on commit_path
// direct in a cluster whose sequencer has led answers produce with
// FAILED_PRECONDITION saying what to set, and writes nothing to the log;
// the sequencer's nodes go on.
func TestDirectNodeRefusedOnceSequenced(t *testing.T) {
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	endpoints := testenv.StartEtcd(t)
	seqNode := startNodeWith(t, node.RoleIngest, endpoints, st, func(cfg *node.Config) {
		cfg.Roles = []string{node.RoleIngest, node.RoleSequence}
		cfg.CommitPath = node.CommitSequencer
	})
	direct := startNodeWith(t, node.RoleIngest, endpoints, st, func(cfg *node.Config) { cfg.CommitPath = node.CommitDirect })
	if !testenv.Eventually(30*time.Second, seqNode.Sequencer().Leading) {
		t.Fatal("the sequencer never led")
	}
	ctx := context.Background()
	sc, dc := newClients(seqNode.Addr()), newClients(direct.Addr())
	createTopic(t, sc, "t", 1)
	produce := func(c clients, v string) (*connect.Response[varvev1.ProduceResponse], error) {
		return c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "t",
			Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte(v)}}}}))
	}
	if r, err := produce(sc, "a"); err != nil || r.Msg.Results[0].Offset != 0 {
		t.Fatalf("produce through the sequencer: %v, %v", r, err)
	}
	_, err = produce(dc, "b")
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "set commit_path: sequencer") {
		t.Fatalf("produce through a direct node: %v; want FAILED_PRECONDITION saying to set commit_path: sequencer", err)
	}
	if r, err := produce(sc, "c"); err != nil || r.Msg.Results[0].Offset != 1 {
		t.Fatalf("produce through the sequencer after the refusal: %v, %v; want offset 1", r, err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, prefix := range []string{"/varve/partitions/", "/varve/index/"} {
		n, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if n.Count != 0 {
			t.Fatalf("%d keys under %s: the direct node committed", n.Count, prefix)
		}
	}
}

// tokenTransport sends a bearer token and/or the cluster secret.
type tokenTransport struct{ token, secret string }

func (tt tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if tt.token != "" {
		r.Header.Set("Authorization", "Bearer "+tt.token)
	}
	if tt.secret != "" {
		r.Header.Set(guard.SecretHeader, tt.secret)
	}
	return sdk.NewHTTPClient().Transport.RoundTrip(r)
}

// TestSequencerOverClusterSecret: with auth token, an ingest node commits
// through the other node's sequencer with the cluster secret, while no
// client — not even the bootstrap admin — may call the SequencerService.
func TestSequencerOverClusterSecret(t *testing.T) {
	const (
		bootstrap = "bootstrap-admin-token-for-tests"
		secret    = "the-shared-cluster-secret"
	)
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	endpoints := testenv.StartEtcd(t)
	var nodes []*node.Node
	for i := range 2 {
		nodes = append(nodes, startNodeWith(t, node.RoleIngest, endpoints, st, func(cfg *node.Config) {
			cfg.Roles = []string{node.RoleIngest, node.RoleSequence}
			cfg.CommitPath = node.CommitSequencer
			cfg.NodeID = fmt.Sprintf("n%d", i)
			cfg.Security.Auth = "token"
			cfg.Security.BootstrapToken = bootstrap
			cfg.Security.ClusterSecretFile = secretFile
		}))
	}
	var leader, follower *node.Node
	if !testenv.Eventually(30*time.Second, func() bool {
		for i, n := range nodes {
			if n.Sequencer().Leading() {
				leader, follower = n, nodes[1-i]
				return true
			}
		}
		return false
	}) {
		t.Fatal("no node became sequencer")
	}
	ctx := context.Background()
	a := admin.New(follower.Addr(), sdk.WithToken(bootstrap))
	defer a.Close()
	if _, err := a.CreateTopic(ctx, "t", 4, nil); err != nil {
		t.Fatal(err)
	}
	recs := []sdk.Record{{Topic: "t", Partition: 1, ExplicitPartition: true, Value: []byte("v")}}
	if _, err := a.Client().Produce(ctx, "t", recs); err != nil {
		t.Fatalf("produce through the follower (its commit goes to the leader with the cluster secret): %v", err)
	}
	if s := leader.Sequencer().Stats(); s.Commits != 1 {
		t.Fatalf("the leader answered %d commits, want the follower's one", s.Commits)
	}
	call := func(tt tokenTransport) error {
		c := varvev1connect.NewSequencerServiceClient(&http.Client{Transport: tt}, leader.Addr())
		_, err := c.Commit(ctx, connect.NewRequest(&varvev1.SequencerServiceCommitRequest{CommitId: "intruder",
			Blocks: []*varvev1.SequencerBlock{{Topic: "t", Partition: 0, Object: "x", Length: 1, Records: 1}}}))
		return err
	}
	for _, tc := range []struct {
		name string
		tt   tokenTransport
		want connect.Code
	}{
		{"no credentials", tokenTransport{}, connect.CodeUnauthenticated},
		{"wrong secret", tokenTransport{secret: "not-the-cluster-secret"}, connect.CodeUnauthenticated},
		{"bootstrap admin token", tokenTransport{token: bootstrap}, connect.CodePermissionDenied},
	} {
		if err := call(tc.tt); connect.CodeOf(err) != tc.want {
			t.Fatalf("SequencerService.Commit with %s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if s := leader.Sequencer().Stats(); s.Commits != 1 {
		t.Fatalf("the leader answered %d commits after the refused calls, want 1", s.Commits)
	}
}

// TestSequencerCampaignsReachably: a node listening on every address
// (0.0.0.0, as in containers) campaigns with a URL other nodes can dial,
// not 0.0.0.0.
func TestSequencerCampaignsReachably(t *testing.T) {
	n := startNode(t, func(c *node.Config) {
		c.Listen = "0.0.0.0:0"
		c.Roles = []string{node.RoleIngest, node.RoleSequence}
		c.CommitPath = node.CommitSequencer
	})
	if !testenv.Eventually(30*time.Second, n.Sequencer().Leading) {
		t.Fatal("the sequencer never led")
	}
	id, err := seqlog.New(n.Meta()).Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(id, "0.0.0.0") || strings.Contains(id, "[::]") {
		t.Fatalf("the sequencer campaigned as %s: not an address to dial", id)
	}
	resp, err := http.Get(id + "/healthz")
	if err != nil {
		t.Fatalf("the sequencer's URL %s: %v", id, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/healthz: %s", id, resp.Status)
	}
}
