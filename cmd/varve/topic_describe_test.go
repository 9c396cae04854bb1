package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// TestTopicDescribeFigures: `varve topic describe` on `varve dev` (commit
// path sequencer, so no partition key is written) shows each partition's
// next offset, the bytes it stores and its blocks, in the table and in
// JSON, as produced: one block per produce request a partition was named
// in, a partition never produced to all zero.
func TestTopicDescribeFigures(t *testing.T) {
	ctx := context.Background()
	addr := startDev(t)
	c := sdk.New(addr)
	defer c.Close()
	if _, err := admin.NewFromClient(c).CreateTopic(ctx, "figures", 3, nil); err != nil {
		t.Fatal(err)
	}
	// Partition 0 gets 2 requests of 4 records, partition 1 one of 4.
	for round := range 2 {
		var recs []sdk.Record
		for p := range int32(2 - round) {
			for i := range 4 {
				recs = append(recs, sdk.Record{Partition: p, ExplicitPartition: true, Value: fmt.Appendf(nil, "record %d of round %d", i, round)})
			}
		}
		if _, err := c.Produce(ctx, "figures", recs); err != nil {
			t.Fatal(err)
		}
	}
	out, _, err := runCLI(t, "topic", "describe", "figures", "--addr", addr, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Partitions []struct {
			Partition  int32
			NextOffset string
			Bytes      string
			Segments   string
		}
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("describe --format json: %v\n%s", err, out)
	}
	if len(d.Partitions) != 3 {
		t.Fatalf("describe --format json gives %d partitions:\n%s", len(d.Partitions), out)
	}
	p0, p1, p2 := d.Partitions[0], d.Partitions[1], d.Partitions[2]
	if p0.NextOffset != "8" || p0.Segments != "2" || p0.Bytes == "" || p0.Bytes == "0" ||
		p1.NextOffset != "4" || p1.Segments != "1" || p1.Bytes == "" || p1.Bytes == "0" ||
		p2.NextOffset != "0" || p2.Segments != "0" || p2.Bytes != "0" {
		t.Fatalf("describe --format json:\n%s\nwant partition 0 at 8 in 2 blocks, 1 at 4 in 1 block, 2 empty, with bytes", out)
	}
	table, _, err := runCLI(t, "topic", "describe", "figures", "--addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) == 5 {
			rows[f[0]] = strings.Join(f[1:], " ")
		}
	}
	for p, want := range map[string]string{"0": "0 8 " + p0.Bytes + " 2", "1": "0 4 " + p1.Bytes + " 1", "2": "0 0 0 0"} {
		if rows[p] != want {
			t.Fatalf("describe, partition %s: %q, want %q (LOG START, NEXT OFFSET, BYTES, SEGMENTS):\n%s", p, rows[p], want, table)
		}
	}
}
