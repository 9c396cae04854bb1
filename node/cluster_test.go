package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

// startRole starts a node with roles (comma-separated) on an existing etcd
// and store.
func startRole(t *testing.T, role string, endpoints []string, st tier.Store) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Roles = strings.Split(role, ",")
	cfg.EtcdEndpoints = endpoints
	cfg.Store = "fs:unused" // the store is given below
	cfg.Linger = 5 * time.Millisecond
	n, err := node.New(context.Background(), cfg, node.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	return n
}

// TestReadYourWritesAcrossNodes: a record acknowledged by an ingest node is
// readable at once from a separate fetch node, whose watched index may not
// have seen the commit yet (it then asks etcd).
func TestReadYourWritesAcrossNodes(t *testing.T) {
	base := startNode(t, nil) // provides etcd and the store
	endpoints := base.Meta().Endpoints()
	fs, err := tier.NewFS(filepath.Join(base.dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	writer := newClients(startRole(t, node.RoleIngest+","+node.RoleSequence, endpoints, fs).Addr())
	reader := newClients(startRole(t, node.RoleFetch, endpoints, fs).Addr())
	ctx := context.Background()
	createTopic(t, writer, "ryw", 2)
	for i := range 40 {
		v := fmt.Appendf(nil, "r%d", i)
		resp, err := writer.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "ryw", Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(int32(i % 2)), Record: &varvev1.Record{Value: v}}}}))
		if err != nil {
			t.Fatal(err)
		}
		r := resp.Msg.Results[0]
		f, err := reader.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "ryw", Partition: r.Partition, Offset: r.Offset}))
		if err != nil {
			t.Fatalf("fetch %d/%d right after its ack: %v", r.Partition, r.Offset, err)
		}
		if len(f.Msg.Records) == 0 || f.Msg.Records[0].Offset != r.Offset || string(f.Msg.Records[0].Value) != string(v) {
			t.Fatalf("fetch %d/%d right after its ack: %v", r.Partition, r.Offset, f.Msg)
		}
		if f.Msg.HighWatermark <= r.Offset {
			t.Fatalf("high watermark %d does not cover the record at %d", f.Msg.HighWatermark, r.Offset)
		}
	}
}

// TestDrainAnswersLongPolls: a long-poll waiting when the node drains gets
// an empty answer, not an error a consumer would give up on.
func TestDrainAnswersLongPolls(t *testing.T) {
	dir := t.TempDir()
	st, err := tier.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := startNode(t, nil)
	n := startRole(t, node.RoleFetch, base.Meta().Endpoints(), st)
	c := newClients(n.Addr())
	ctx := context.Background()
	createTopic(t, c, "idle", 1)
	type answer struct {
		resp *connect.Response[varvev1.FetchResponse]
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		r, err := c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "idle", Partition: 0, Offset: 0, MaxWaitMs: 30000}))
		got <- answer{r, err}
	}()
	// Drain only once the long-poll is parked on the node.
	if !testenv.Eventually(10*time.Second, func() bool {
		resp, err := http.Get(n.Addr() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		page, _ := io.ReadAll(resp.Body)
		return regexp.MustCompile(`(?m)^varve_fetch_waiting(\{[^}]*\})? 1$`).Match(page)
	}) {
		t.Fatal("the long-poll never parked on the node (varve_fetch_waiting)")
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.err != nil || len(a.resp.Msg.Records) != 0 || a.resp.Msg.NextOffset != 0 {
		t.Fatalf("long-poll during drain: %v %v", a.resp, a.err)
	}
}
