package metadata_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/varve-io/varve/metadata"
)

// TestUpdateTopic: concurrent updates of different settings all land (the
// ModRevision comparison retries instead of overwriting), immutable fields
// and shrinking partitions are refused, and a refused update changes
// nothing.
func TestUpdateTopic(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	orig, err := c.CreateTopic(ctx, metadata.Topic{Name: "up", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := c.UpdateTopic(ctx, "up", func(tp *metadata.Topic) error {
				switch i % 4 {
				case 0:
					tp.RetentionMs = 1000
				case 1:
					tp.RetentionBytes = 5000
				case 2:
					tp.MaxRecordBytes = 777
				case 3:
					tp.Schema = &metadata.TopicSchema{Format: metadata.SchemaJSON, Fields: `[{"name":"a","type":"int32"}]`}
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, err := c.GetTopic(ctx, "up")
	if err != nil {
		t.Fatal(err)
	}
	if got.RetentionMs != 1000 || got.RetentionBytes != 5000 || got.MaxRecordBytes != 777 || got.Schema == nil || got.ID != orig.ID || got.CreatedMs != orig.CreatedMs {
		t.Fatalf("after concurrent updates: %+v", got)
	}
	for _, bad := range []struct {
		name string
		fn   func(*metadata.Topic) error
		want error
	}{
		{"shrink", func(tp *metadata.Topic) error { tp.Partitions = 1; return nil }, metadata.ErrInvalidArgument},
		{"id", func(tp *metadata.Topic) error { tp.ID = "x"; return nil }, metadata.ErrInvalidArgument},
		{"cleanup", func(tp *metadata.Topic) error { tp.CleanupPolicy = "shred"; return nil }, metadata.ErrInvalidArgument},
		{"delete retention", func(tp *metadata.Topic) error { tp.DeleteRetentionMs = -5; return nil }, metadata.ErrInvalidArgument},
		{"too many partitions", func(tp *metadata.Topic) error { tp.Partitions = metadata.MaxPartitions + 1; return nil }, metadata.ErrInvalidArgument},
		{"bad retention", func(tp *metadata.Topic) error { tp.RetentionMs = -7; return nil }, metadata.ErrInvalidArgument},
		{"refused by the caller", func(*metadata.Topic) error { return metadata.ErrInvalidArgument }, metadata.ErrInvalidArgument},
	} {
		if _, err := c.UpdateTopic(ctx, "up", bad.fn); !errors.Is(err, bad.want) {
			t.Fatalf("%s: %v, want %v", bad.name, err, bad.want)
		}
	}
	if again, _ := c.GetTopic(ctx, "up"); again.Partitions != 2 || again.RetentionMs != 1000 || again.ID != orig.ID {
		t.Fatalf("refused updates changed the topic: %+v", again)
	}
	if _, err := c.UpdateTopic(ctx, "nope", func(*metadata.Topic) error { return nil }); !errors.Is(err, metadata.ErrTopicNotFound) {
		t.Fatalf("unknown topic: %v", err)
	}
	// The cleanup policy switches in place; a compacted topic gets the
	// default tombstone retention, and the switch back keeps it.
	compact, err := c.UpdateTopic(ctx, "up", func(tp *metadata.Topic) error { tp.CleanupPolicy = metadata.CleanupCompact; return nil })
	if err != nil || compact.CleanupPolicy != metadata.CleanupCompact || compact.DeleteRetentionMs != metadata.DefaultDeleteRetentionMs || compact.ID != orig.ID {
		t.Fatalf("to compact: %+v, %v", compact, err)
	}
	back, err := c.UpdateTopic(ctx, "up", func(tp *metadata.Topic) error {
		tp.CleanupPolicy, tp.MinCompactionLagMs = metadata.CleanupDelete, 2500
		return nil
	})
	if err != nil || back.CleanupPolicy != metadata.CleanupDelete || back.MinCompactionLagMs != 2500 || back.ID != orig.ID {
		t.Fatalf("back to delete: %+v, %v", back, err)
	}
	grown, err := c.UpdateTopic(ctx, "up", func(tp *metadata.Topic) error { tp.Partitions = 5; return nil })
	if err != nil || grown.Partitions != 5 {
		t.Fatalf("grow: %+v, %v", grown, err)
	}
}
