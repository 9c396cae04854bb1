package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/murmur2"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/tier"
)

// TestIdempotentProducerOverThousandPartitions: the default (idempotent)
// SDK producer sends keyed records to a 1,000-partition topic through two
// ingest nodes on real etcd and MinIO. Its batches span hundreds of
// partitions, past etcd's 128 operations per transaction: every record is
// acknowledged, at the partition murmur2 of its key gives, and each
// partition's log holds exactly the acknowledged records, densely, in the
// order each producer sent them.
func TestIdempotentProducerOverThousandPartitions(t *testing.T) {
	idempotentOverThousandPartitions(t, node.CommitDirect)
}

// TestIdempotentProducerOverThousandPartitionsSequenced is the same through
// the sequencer (both nodes candidates): what the fetch path reads back
// comes from the sequencer's batch records.
func TestIdempotentProducerOverThousandPartitionsSequenced(t *testing.T) {
	idempotentOverThousandPartitions(t, node.CommitSequencer)
}

func idempotentOverThousandPartitions(t *testing.T, commitPath string) {
	const (
		partitions = 1000
		perNode    = 4000
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
			cfg.Roles = []string{node.RoleIngest, node.RoleFetch, node.RoleSequence}
			cfg.CommitPath = commitPath
			cfg.NodeID = fmt.Sprintf("n%d", i)
			cfg.Linger = 20 * time.Millisecond
		}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	adm := admin.New(nodes[0].Addr())
	const topic = "wide"
	if _, err := adm.CreateTopic(ctx, topic, partitions, nil); err != nil {
		t.Fatal(err)
	}

	type ack struct {
		key    string
		part   int32
		offset int64
	}
	var (
		mu   sync.Mutex
		acks []ack
		errs []error
	)
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := sdk.New(n.Addr())
			p := c.NewProducer(sdk.ProducerOptions{}) // the default: idempotent
			for j := range perNode {
				key := fmt.Sprintf("n%d-k%d", i, j)
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
			}
			if err := p.Close(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("close producer on node %d: %w", i, err))
				mu.Unlock()
			}
			if id, _ := p.Identity(); id <= 0 {
				mu.Lock()
				errs = append(errs, fmt.Errorf("producer on node %d is not idempotent (id %d)", i, id))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d records failed; first: %v", len(errs), 2*perNode, errs[0])
	}
	if len(acks) != 2*perNode {
		t.Fatalf("%d acknowledgements for %d records", len(acks), 2*perNode)
	}

	want := map[int32]map[int64]string{} // partition → offset → key
	for _, a := range acks {
		if p := murmur2.Partition([]byte(a.key), partitions); a.part != p {
			t.Fatalf("record %s went to partition %d; murmur2 gives %d", a.key, a.part, p)
		}
		if want[a.part] == nil {
			want[a.part] = map[int64]string{}
		}
		if prev, dup := want[a.part][a.offset]; dup {
			t.Fatalf("%s and %s both acknowledged at %d/%d", prev, a.key, a.part, a.offset)
		}
		want[a.part][a.offset] = a.key
	}
	if len(want) < partitions*9/10 {
		t.Fatalf("records reached only %d of %d partitions", len(want), partitions)
	}
	// Read every partition back from the other node than most writes.
	reader := sdk.New(nodes[1].Addr())
	for p := range int32(partitions) {
		exp := want[p]
		res, err := reader.Fetch(ctx, topic, p, 0, 1<<20, 0)
		if err != nil {
			t.Fatalf("fetch partition %d: %v", p, err)
		}
		if int64(len(exp)) != res.HighWatermark || len(res.Records) != len(exp) {
			t.Fatalf("partition %d: high watermark %d, %d records read, %d acknowledged", p, res.HighWatermark, len(res.Records), len(exp))
		}
		last := map[string]int{} // per producer (node), the last sequence number seen
		for i, r := range res.Records {
			if r.Offset != int64(i) || exp[r.Offset] != string(r.Value) {
				t.Fatalf("partition %d offset %d: got %q at %d, acknowledged %q", p, i, r.Value, r.Offset, exp[int64(i)])
			}
			var node, seq int
			fmt.Sscanf(string(r.Value), "n%d-k%d", &node, &seq)
			if prev, ok := last[fmt.Sprint(node)]; ok && seq <= prev {
				t.Fatalf("partition %d: producer %d's record %d stored after its record %d", p, node, seq, prev)
			}
			last[fmt.Sprint(node)] = seq
		}
	}
}
