package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/tier"
)

// TestSequencerProducerReadsIndependentOfPartitions: through a node with
// commit_path sequencer, one idempotent producer sends a record to each
// of 1,000 partitions, one Produce request each. Every request touches a
// partition the ingest node has no state of, so the node asks the
// sequencer (ReadProducer) each time; the leader answers from the
// producer identity it holds, reading etcd a handful of times in all, not
// once per partition.
func TestSequencerProducerReadsIndependentOfPartitions(t *testing.T) {
	const partitions = 1000
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, node.RoleIngest, testenv.StartEtcd(t), st, func(cfg *node.Config) {
		cfg.Roles = []string{node.RoleIngest, node.RoleSequence}
		cfg.CommitPath = node.CommitSequencer
	})
	if !testenv.Eventually(30*time.Second, n.Sequencer().Leading) {
		t.Fatal("the node never became sequencer")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const topic = "wide"
	if _, err := admin.New(n.Addr()).CreateTopic(ctx, topic, partitions, nil); err != nil {
		t.Fatal(err)
	}
	// Each record is a request of its own (larger than MaxBatchBytes, sent
	// at once).
	p := sdk.New(n.Addr()).NewProducer(sdk.ProducerOptions{Linger: -1, MaxBatchBytes: 1})
	defer p.Close(context.Background())
	var (
		mu   sync.Mutex
		errs []error
	)
	produce := func(part int32) {
		p.Produce(ctx, sdk.Record{Topic: topic, Partition: part, ExplicitPartition: true, Value: []byte(fmt.Sprint(part))}, func(_ sdk.Record, err error) {
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("partition %d: %w", part, err))
				mu.Unlock()
			}
		})
	}
	// The first commit makes the leader read the producer's identity.
	produce(0)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	metric := func(name string) float64 {
		t.Helper()
		v, ok := metricValue(t, n.Addr(), name)
		if !ok {
			t.Fatalf("no %s on /metrics", name)
		}
		return v
	}
	asked0, reads0 := metric("varve_ingest_producer_state_reads_total"), metric("varve_sequencer_producer_reads_total")
	for part := int32(1); part < partitions; part++ {
		produce(part)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("%d records failed; first: %v", len(errs), errs[0])
	}
	asked, reads := metric("varve_ingest_producer_state_reads_total")-asked0, metric("varve_sequencer_producer_reads_total")-reads0
	t.Logf("%d partitions: the ingest node asked the sequencer for the producer's states %.0f times; the leader read etcd %.0f times", partitions-1, asked, reads)
	if asked < partitions/2 {
		t.Fatalf("the ingest node asked the sequencer %.0f times for %d new partitions: the test did not exercise ReadProducer", asked, partitions-1)
	}
	if reads > 2 {
		t.Fatalf("the leader read the producer from etcd %.0f times for %d partitions, want at most 2", reads, partitions-1)
	}
	if s := n.Sequencer().Stats(); float64(s.ProducerReads) != metric("varve_sequencer_producer_reads_total") {
		t.Fatalf("Stats().ProducerReads %d, varve_sequencer_producer_reads_total %v", s.ProducerReads, metric("varve_sequencer_producer_reads_total"))
	}
}
