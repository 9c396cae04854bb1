package kafka_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
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
