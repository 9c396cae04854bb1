package node_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
)

// A compact-only node (no ingest, no fetch) compacts what an ingest node
// wrote; the admin API pauses, resumes and reports the backlog; fetches
// return the same records after compaction.
func TestCompactRole(t *testing.T) {
	base := startNode(t, nil)
	ctx := context.Background()
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Roles = []string{node.RoleCompact}
	cfg.EtcdEndpoints = base.Meta().Endpoints()
	cfg.Store = "fs:unused"
	cfg.CompactionInterval = 50 * time.Millisecond
	cfg.CompactionMinEntries = 5
	compactor, err := node.New(ctx, cfg, node.Options{Store: base.rec})
	if err != nil {
		t.Fatal(err)
	}
	defer compactor.Shutdown(ctx)
	admin := varvev1connect.NewAdminServiceClient(http.DefaultClient, compactor.Addr())
	if _, err := admin.PauseCompaction(ctx, connect.NewRequest(&varvev1.PauseCompactionRequest{})); err != nil {
		t.Fatal(err)
	}

	createTopic(t, base.c, "cr", 2)
	for i := range 12 {
		var recs []*varvev1.ProduceRecord
		for j := range 10 {
			recs = append(recs, &varvev1.ProduceRecord{Partition: proto.Int32(int32(j % 2)), Record: &varvev1.Record{Value: fmt.Appendf(nil, "v%d-%d", i, j)}})
		}
		if _, err := base.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "cr", Records: recs})); err != nil {
			t.Fatal(err)
		}
	}
	fetchAll := func(p int32) []string {
		var out []string
		for off := int64(0); off < 60; {
			resp, err := base.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "cr", Partition: p, Offset: off, MaxBytes: 1 << 20}))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.Msg.GetRecords() {
				out = append(out, fmt.Sprintf("%d:%s", r.GetOffset(), r.GetValue()))
			}
			off = resp.Msg.GetNextOffset()
		}
		return out
	}
	before := [][]string{fetchAll(0), fetchAll(1)}
	status := func() *varvev1.CompactionStatusResponse {
		resp, err := admin.CompactionStatus(ctx, connect.NewRequest(&varvev1.CompactionStatusRequest{Topic: "cr"}))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Msg
	}
	if s := status(); !s.GetPaused() || s.GetBacklogEntries() != 24 || s.GetIndexEntries() != 24 || len(s.GetPartitions()) != 2 {
		t.Fatalf("status while paused: %v", s)
	}
	if _, err := admin.ResumeCompaction(ctx, connect.NewRequest(&varvev1.ResumeCompactionRequest{})); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(20*time.Second, func() bool { s := status(); return s.GetBacklogEntries() == 0 && s.GetIndexEntries() == 2 }) {
		t.Fatalf("not compacted: %v", status())
	}
	for p := range int32(2) {
		if got := fetchAll(p); fmt.Sprint(got) != fmt.Sprint(before[p]) {
			t.Fatalf("partition %d after compaction:\n%v\nwant\n%v", p, got, before[p])
		}
	}
	// Progress and backlog are metrics.
	resp, err := http.Get(compactor.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`varve_compaction_bytes_total{io="read"`, `varve_compaction_runs_total{`, "varve_compaction_backlog_bytes", "varve_compaction_backlog_entries", "varve_compaction_paused"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics has no %s:\n%s", m, grepLines(string(body), "varve_compaction"))
		}
	}
	// Bad input: an unknown topic.
	if _, err := admin.CompactionStatus(ctx, connect.NewRequest(&varvev1.CompactionStatusRequest{Topic: "nope"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("status of an unknown topic: %v", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
