package kafka_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// startDev starts a varve dev (every role, embedded etcd, fs store) with
// its Kafka listener on a free port; cfg overrides node settings.
func startDev(t testing.TB, cfg node.Config) *node.Dev {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if cfg.Linger == 0 {
		cfg.Linger = 20 * time.Millisecond
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("VARVE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d, err := node.StartDev(ctx, node.DevConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Node: cfg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(context.Background()) })
	if d.KafkaAddr() == "" {
		t.Fatal("varve dev opened no Kafka listener")
	}
	return d
}

// createTopic creates a topic through etcd directly.
func createTopic(t testing.TB, d *node.Dev, name string, partitions int32) {
	t.Helper()
	if _, err := d.Meta().CreateTopic(context.Background(), metadata.Topic{Name: name, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
}

// newClient is a franz-go client of d's Kafka listener.
func newClient(t testing.TB, d *node.Dev, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(d.KafkaAddr()), kgo.RequestTimeoutOverhead(10 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// nodeConfig is the node settings of the tests.
func nodeConfig() node.Config { return node.Config{} }

// startCluster starts n nodes with every role (ingest, fetch, sequence,
// compact) and a Kafka listener each, on one embedded etcd and one fs
// store; mutate (may be nil) changes each node's config.
func startCluster(t testing.TB, n int, mutate func(*node.Config)) []*node.Node {
	t.Helper()
	endpoints := testenv.StartEtcd(t)
	st, err := tier.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*node.Node
	for i := range n {
		cfg := node.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.KafkaListen = "127.0.0.1:0"
		cfg.NodeID = fmt.Sprintf("n%d", i)
		cfg.Roles = []string{node.RoleIngest, node.RoleFetch, node.RoleSequence, node.RoleCompact}
		cfg.EtcdEndpoints = endpoints
		cfg.Store = "fs:unused" // the store is given below
		cfg.Linger = 20 * time.Millisecond
		if mutate != nil {
			mutate(&cfg)
		}
		nd, err := node.New(context.Background(), cfg, node.Options{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.Shutdown(context.Background()) })
		nodes = append(nodes, nd)
	}
	return nodes
}

// seeds are the Kafka addresses of nodes.
func seeds(nodes ...*node.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.KafkaAddr())
	}
	return out
}
