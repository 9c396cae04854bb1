package gc_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/tier"
)

// childEnv makes the test binary act as a Varve ingest node that is killed
// with SIGKILL between a segment PUT and its commit (see crashChild).
const childEnv = "VARVE_GC_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(testenv.Main(m))
}

// childSpec is what the parent test passes to the crashing child.
type childSpec struct {
	Etcd  []string
	S3    tier.S3Config
	Topic string
}

// holdingStore passes calls through until armed; then the next PUT stores
// its object, reports the key on stdout and never returns, so the node
// never commits it. The parent kills the process there.
type holdingStore struct {
	tier.Store
	armed atomic.Bool
	out   *bufio.Writer
}

func (h *holdingStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	err := h.Store.PutIfAbsent(ctx, key, data)
	if err == nil && h.armed.Load() {
		fmt.Fprintf(h.out, "stored %s\n", key)
		h.out.Flush()
		select {} // held until SIGKILL
	}
	return err
}

// crashChild runs an ingest node on the parent's etcd and bucket, commits a
// first batch, then produces a second whose PUT it holds forever.
func crashChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 2
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &spec); err != nil {
		return fail(err)
	}
	ctx := context.Background()
	s3, err := tier.NewS3(ctx, spec.S3)
	if err != nil {
		return fail(err)
	}
	out := bufio.NewWriter(os.Stdout)
	store := &holdingStore{Store: s3, out: out}
	cfg := node.DefaultConfig()
	cfg.Roles = []string{node.RoleIngest, node.RoleSequence}
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = spec.Etcd
	cfg.Store = "s3://" + spec.S3.Bucket
	cfg.Linger = 5 * time.Millisecond
	n, err := node.New(ctx, cfg, node.Options{Store: store})
	if err != nil {
		return fail(err)
	}
	c := sdk.New(n.Addr())
	if _, err := c.Produce(ctx, spec.Topic, batch("acked", 10, time.Time{})); err != nil {
		return fail(err)
	}
	fmt.Fprintln(out, "committed")
	out.Flush()
	store.armed.Store(true)
	_, err = c.Produce(ctx, spec.Topic, batch("lost", 10, time.Time{}))
	return fail(fmt.Errorf("the held produce returned: %v", err))
}

// batch makes n records for partition 0 with values prefix-i and timestamp
// ts (zero: the node's clock).
func batch(prefix string, n int, ts time.Time) []sdk.Record {
	recs := make([]sdk.Record, n)
	for i := range recs {
		recs[i] = sdk.Record{Value: fmt.Appendf(nil, "%s-%d", prefix, i), Timestamp: ts}
	}
	return recs
}

func valuesOf(recs []sdk.Record) string {
	var b strings.Builder
	for i, r := range recs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.Write(r.Value)
	}
	return b.String()
}
