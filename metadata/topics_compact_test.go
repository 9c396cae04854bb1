package metadata_test

import (
	"context"
	"errors"
	"testing"

	"github.com/varve-io/varve/metadata"
)

func TestCompactedTopicSettings(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	for _, tp := range []metadata.Topic{
		{Name: "neg-dr", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, DeleteRetentionMs: -1},
		{Name: "neg-lag", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, MinCompactionLagMs: -5},
	} {
		if _, err := c.CreateTopic(ctx, tp); !errors.Is(err, metadata.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", tp.Name, err)
		}
		if _, err := c.GetTopic(ctx, tp.Name); !errors.Is(err, metadata.ErrTopicNotFound) {
			t.Errorf("%s was created: %v", tp.Name, err)
		}
	}
	got, err := c.CreateTopic(ctx, metadata.Topic{Name: "kv", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, MinCompactionLagMs: 500})
	if err != nil || got.DeleteRetentionMs != metadata.DefaultDeleteRetentionMs || got.MinCompactionLagMs != 500 {
		t.Fatalf("compacted topic: %+v %v", got, err)
	}
	if got, _ := c.CreateTopic(ctx, metadata.Topic{Name: "del", Partitions: 1}); got.DeleteRetentionMs != 0 {
		t.Fatalf("a delete topic got delete_retention_ms %d", got.DeleteRetentionMs)
	}
}
