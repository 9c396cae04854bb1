package compact

import (
	"context"
	"fmt"
	"testing"

	"github.com/varve-io/varve/metadata"
)

// A topic's cleanup policy switched in place (UpdateTopic): compaction
// follows the policy of each pass. delete -> compact keeps the newest record
// of each key and every record without a key; compact -> delete keeps every
// record the key pass kept, at its offset, and merges the gapped entries
// with new dense ones without losing or shifting any.
func TestCleanupPolicySwitch(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.topic(t, metadata.Topic{Name: "sw", Partitions: 1})
	c := newCompactor(t, e, "c", Config{MinEntries: 4, TargetBytes: 2 << 10, BlockBytes: 1 << 10})
	var model []kv
	batch := func(n int) {
		recs := make([]kv, n)
		for i := range recs {
			recs[i] = kv{ts: 1_800_000_000_000 + int64(len(model)+i), val: fmt.Appendf(nil, "v%d", len(model)+i)}
			if (len(model)+i)%7 != 0 {
				recs[i].key = fmt.Appendf(nil, "k%d", (len(model)+i)%5)
			}
		}
		produceKV(t, e, "sw", &model, recs)
	}
	for range 8 {
		batch(20)
	}
	e.waitCache(t)
	if _, err := c.RunOnce(ctx); err != nil { // dense: nothing dropped
		t.Fatal(err)
	}
	e.waitCache(t)
	sameKV(t, "delete policy, dense pass", model, fetchAll(t, e.fetcher(), "sw", 0, 0))

	if _, err := e.meta.UpdateTopic(ctx, "sw", func(tp *metadata.Topic) error { tp.CleanupPolicy = metadata.CleanupCompact; return nil }); err != nil {
		t.Fatal(err)
	}
	for range 6 {
		batch(20)
	}
	e.waitCache(t)
	st, err := c.RunOnce(ctx)
	if err != nil || st.RecordsOut >= st.RecordsIn {
		t.Fatalf("key pass after the switch to compact: %+v %v", st, err)
	}
	e.waitCache(t)
	kept := expected(model, 1_900_000_000_000, metadata.DefaultDeleteRetentionMs)
	sameKV(t, "after the switch to compact", kept, fetchAll(t, e.fetcher(), "sw", 0, 0))

	if _, err := e.meta.UpdateTopic(ctx, "sw", func(tp *metadata.Topic) error { tp.CleanupPolicy = metadata.CleanupDelete; return nil }); err != nil {
		t.Fatal(err)
	}
	before := len(model)
	for range 8 {
		batch(20)
	}
	e.waitCache(t)
	if _, err := c.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitCache(t)
	want := append(append([]kv(nil), kept...), model[before:]...)
	sameKV(t, "after the switch back to delete", want, fetchAll(t, e.fetcher(), "sw", 0, 0))
	es := e.entries(t, "sw", 0)
	for i := 1; i < len(es); i++ {
		if es[i-1].End() != es[i].Base {
			t.Fatalf("entries do not tile the log after the switches: %+v", es)
		}
	}
}
