package node_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata/seqlog"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

// TestReadyzFollowsSequencerLeader: an ingest node on commit_path
// sequencer without the sequence role is not ready while no sequencer
// leads (503 saying so), nor while the elected leader cannot be reached;
// it is ready once a node with the sequence role leads, and not ready
// again once that node stops. A node without the ingest role and an
// ingest node on commit_path direct stay ready throughout.
func TestReadyzFollowsSequencerLeader(t *testing.T) {
	const bound = 30 * time.Second
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	endpoints := testenv.StartEtcd(t)
	probe := func(cfg *node.Config) { cfg.StoreProbeInterval = 200 * time.Millisecond }
	ingest := startNodeWith(t, node.RoleIngest, endpoints, st, func(cfg *node.Config) {
		probe(cfg)
		cfg.CommitPath = node.CommitSequencer
	})
	fetchOnly := startNodeWith(t, node.RoleFetch, endpoints, st, func(cfg *node.Config) {
		probe(cfg)
		cfg.CommitPath = node.CommitSequencer
	})
	direct := startNodeWith(t, node.RoleIngest, endpoints, st, func(cfg *node.Config) {
		probe(cfg)
		cfg.CommitPath = node.CommitDirect
	})
	wait := func(what string, n *node.Node, want int, body string) {
		t.Helper()
		var code int
		var got string
		if !testenv.EventuallyEvery(bound, 20*time.Millisecond, func() bool {
			code, got = readyz(t, n.Addr())
			return code == want && strings.Contains(got, body)
		}) {
			t.Fatalf("%s: /readyz %d %q after %v, want %d with %q", what, code, got, bound, want, body)
		}
		t.Logf("%s: /readyz %d %s", what, code, got)
	}
	others := func(what string) {
		t.Helper()
		wait(what+", fetch-only node", fetchOnly, http.StatusOK, "ready")
		wait(what+", direct ingest node", direct, http.StatusOK, "ready")
	}

	wait("no sequencer", ingest, http.StatusServiceUnavailable, "no sequencer elected")
	others("no sequencer")

	// A leader that cannot be reached: elected under an address where
	// nothing listens (as a killed node's term lasts its lease).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	term, err := seqlog.New(ingest.Meta()).Campaign(ctx, dead, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wait("unreachable leader", ingest, http.StatusServiceUnavailable, "sequencer leader "+dead+" unreachable")
	others("unreachable leader")
	if err := term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	wait("leader resigned", ingest, http.StatusServiceUnavailable, "no sequencer elected")

	seq := startNodeWith(t, node.RoleSequence, endpoints, st, func(cfg *node.Config) {
		probe(cfg)
		cfg.CommitPath = node.CommitSequencer
	})
	if !testenv.Eventually(bound, seq.Sequencer().Leading) {
		t.Fatal("the sequence node never led")
	}
	wait("a sequencer leads", ingest, http.StatusOK, "ready")
	others("a sequencer leads")

	sctx, scancel := context.WithTimeout(context.Background(), bound)
	defer scancel()
	if err := seq.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	wait("the sequence node stopped", ingest, http.StatusServiceUnavailable, "no sequencer elected")
	others("the sequence node stopped")
}
