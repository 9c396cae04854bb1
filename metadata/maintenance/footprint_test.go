package maintenance_test

import (
	"context"
	"testing"

	"github.com/varve-io/varve/metadata"
)

// TestFootprint: the footprint counts every key under /varve/ and grows by
// exactly what a commit writes, across pages of 1000 keys.
func TestFootprint(t *testing.T) {
	ctx := context.Background()
	c := connect(t)
	empty, err := c.Footprint(ctx)
	if err != nil || empty.Keys != 0 || empty.Bytes != 0 {
		t.Fatalf("empty footprint %+v, %v", empty, err)
	}
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "fp", Partitions: 1200}); err != nil {
		t.Fatal(err)
	}
	var apps []metadata.Append
	for p := range int32(1200) {
		apps = append(apps, metadata.Append{Topic: "fp", Partition: p, Object: "o", Off: 8, Len: 10, Records: 1})
	}
	if _, err := c.Commit(ctx, "fp-commit", apps); err != nil {
		t.Fatal(err)
	}
	f, err := c.Footprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The topic key, 1200 partition and 1200 index keys (and guards): pages
	// of 1000.
	if f.Keys != st.Keys || f.Keys < 2401 || f.Bytes < f.Keys*20 {
		t.Fatalf("footprint %+v, stats %+v", f, st)
	}
}
