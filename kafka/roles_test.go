package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
)

// TestTieredRoles: with an ingest-only node and a fetch-only node (the
// Terraform module's tiers), a producer bootstrapped through the fetch
// node is sent to the ingest node by Metadata, and a consumer
// bootstrapped through the ingest node is sent to the fetch node by
// Fetch's preferred read replica; both see every record at its offset,
// and ListOffsets answers on either.
func TestTieredRoles(t *testing.T) {
	nodes := startCluster(t, 2, func(c *node.Config) {
		if c.NodeID == "n0" {
			c.Roles = []string{node.RoleIngest, node.RoleSequence}
		} else {
			c.Roles = []string{node.RoleFetch, node.RoleCompact}
		}
	})
	ingest, fetchNode := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := ingest.Meta().CreateTopic(ctx, metadata.Topic{Name: "tiered", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	pr, err := kgo.NewClient(kgo.SeedBrokers(fetchNode.KafkaAddr()), kgo.DefaultProduceTopic("tiered"))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	acked := map[string]int64{}
	for i := range 200 {
		r := &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "v%d", i)}
		if err := pr.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce through the fetch node's bootstrap: %v", err)
		}
		acked[string(r.Value)] = int64(r.Partition)<<32 | r.Offset
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(ingest.KafkaAddr()), kgo.ConsumeTopics("tiered"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := 0
	for got < len(acked) {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume through the ingest node's bootstrap after %d: %v", got, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if at, ok := acked[string(r.Value)]; !ok || at != int64(r.Partition)<<32|r.Offset {
				t.Fatalf("record %s at %d/%d, acknowledged at %d/%d", r.Value, r.Partition, r.Offset, at>>32, at&0xffffffff)
			}
			got++
		})
	}
	for _, n := range nodes {
		adm, err := kgo.NewClient(kgo.SeedBrokers(n.KafkaAddr()))
		if err != nil {
			t.Fatal(err)
		}
		ends, err := kadm.NewClient(adm).ListEndOffsets(ctx, "tiered")
		adm.Close()
		if err != nil {
			t.Fatal(err)
		}
		sum := int64(0)
		ends.Each(func(o kadm.ListedOffset) {
			if o.Err != nil {
				t.Fatalf("end offset of %d through %s: %v", o.Partition, n.KafkaAddr(), o.Err)
			}
			sum += o.Offset
		})
		if sum != int64(len(acked)) {
			t.Fatalf("end offsets through %s sum to %d, want %d", n.KafkaAddr(), sum, len(acked))
		}
		// By time: the ingest node asks a fetch node (BlockService).
		adm, err = kgo.NewClient(kgo.SeedBrokers(n.KafkaAddr()))
		if err != nil {
			t.Fatal(err)
		}
		at, err := kadm.NewClient(adm).ListOffsetsAfterMilli(ctx, 1, "tiered")
		adm.Close()
		if err != nil {
			t.Fatal(err)
		}
		at.Each(func(o kadm.ListedOffset) {
			if o.Err != nil || o.Offset != 0 {
				t.Fatalf("offset after time 1 of %d through %s: %d, %v; want 0", o.Partition, n.KafkaAddr(), o.Offset, o.Err)
			}
		})
	}
}
