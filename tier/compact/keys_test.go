package compact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/scan"
	"github.com/varve-io/varve/tier/segment"
)

// kv is one produced record of a compacted-topic test, as the model sees it.
type kv struct {
	off       int64
	key, val  []byte
	ts        int64
	tombstone bool
}

// clock is a settable Config.Now.
type clock struct{ ms atomic.Int64 }

func (c *clock) now() time.Time { return time.UnixMilli(c.ms.Load()) }

// produceKV sends recs as one batch (one level-0 entry) to partition 0
// and appends them, with their offsets, to the model.
func produceKV(t *testing.T, e *env, topic string, model *[]kv, recs []kv) {
	t.Helper()
	in := make([]ingest.Record, len(recs))
	for i, r := range recs {
		in[i] = ingest.Record{Partition: 0, Record: segment.Record{Key: r.key, Value: r.val, Timestamp: r.ts}}
	}
	res := e.produce(t, topic, in)
	for i := range recs {
		recs[i].off = res[i].Offset
		recs[i].tombstone = recs[i].val == nil
		*model = append(*model, recs[i])
	}
}

// expected is what compaction of the whole model at now keeps: records
// without a key, the newest record of each key, and tombstones no older
// than deleteRetention.
func expected(model []kv, nowMs, deleteRetention int64) []kv {
	latest := map[string]int64{}
	for _, r := range model {
		if r.key != nil {
			latest[string(r.key)] = r.off
		}
	}
	var out []kv
	for _, r := range model {
		if r.key != nil && (latest[string(r.key)] != r.off || (r.tombstone && r.ts < nowMs-deleteRetention)) {
			continue
		}
		out = append(out, r)
	}
	return out
}

func sameKV(t *testing.T, what string, want []kv, got []fetch.Record) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.off != g.Offset || string(w.key) != string(g.Key) || string(w.val) != string(g.Value) || (w.val == nil) != (g.Value == nil) || w.ts != g.Timestamp {
			t.Fatalf("%s: record %d is %d %q=%q@%d, want %d %q=%q@%d", what, i, g.Offset, g.Key, g.Value, g.Timestamp, w.off, w.key, w.val, w.ts)
		}
	}
}

// A compacted topic keeps the newest record per key at its offset, in
// order; keeps tombstones for delete_retention_ms, then drops them; keeps
// records without a key; and Fetch skips the offsets that are gone.
func TestCompactedTopic(t *testing.T) {
	e := newEnv(t)
	const deleteRetention = 60_000
	e.topic(t, metadata.Topic{Name: "kv", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, DeleteRetentionMs: deleteRetention})
	clk := &clock{}
	t0 := int64(1_800_000_000_000)
	clk.ms.Store(t0)
	c := newCompactor(t, e, "c", Config{MinEntries: 4, TargetBytes: 2 << 10, BlockBytes: 1 << 10, Now: clk.now})

	rng := rand.New(rand.NewPCG(1, 2))
	var model []kv
	batch := func(n int, tsBase int64) {
		recs := make([]kv, n)
		for i := range recs {
			k := rng.IntN(12)
			recs[i] = kv{ts: tsBase + int64(i)}
			switch {
			case k == 11:
				recs[i].key = nil // no key: always kept
				recs[i].val = fmt.Appendf(nil, "nokey-%d", len(model)+i)
			default:
				recs[i].key = fmt.Appendf(nil, "k%d", k)
				if rng.IntN(5) == 0 {
					recs[i].val = nil // tombstone
				} else {
					recs[i].val = fmt.Appendf(nil, "v%d-%d", k, len(model)+i)
				}
			}
		}
		produceKV(t, e, "kv", &model, recs)
	}
	for range 12 {
		batch(25, t0-1000)
	}
	hw := model[len(model)-1].off + 1
	e.waitCache(t)
	st, err := c.RunOnce(context.Background())
	if err != nil || st.Jobs == 0 || st.RecordsOut >= st.RecordsIn {
		t.Fatalf("first pass: %+v %v", st, err)
	}
	e.waitCache(t) // the fetcher reads the watched index
	want := expected(model, clk.ms.Load(), deleteRetention)
	f := e.fetcher()
	got := fetchAll(t, f, "kv", 0, 0)
	sameKV(t, "after the first pass", want, got)
	tombstones := 0
	for _, r := range want {
		if r.tombstone {
			tombstones++
		}
	}
	if tombstones == 0 {
		t.Fatal("the test data kept no tombstone; change the seed")
	}
	// Entries cover the whole log: each ends where the next starts.
	es := e.entries(t, "kv", 0)
	for i := range es {
		if i > 0 && es[i-1].End() != es[i].Base || es[i].Level != 1 {
			t.Fatalf("entries do not tile the log: %+v", es)
		}
	}
	if es[0].Base != 0 || es[len(es)-1].End() != hw {
		t.Fatalf("entries cover [%d,%d), want [0,%d)", es[0].Base, es[len(es)-1].End(), hw)
	}
	// A fetch from any offset returns the next kept record, with its
	// offset, and next_offset past it.
	for off := int64(0); off < hw; off++ {
		res, err := f.Fetch(context.Background(), "kv", 0, off, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for i < len(want) && want[i].off < off {
			i++
		}
		if i == len(want) {
			if len(res.Records) != 0 || res.Next != hw {
				t.Fatalf("fetch at %d past the last kept record: %+v", off, res)
			}
			continue
		}
		// next_offset is past the record and not past the next kept one
		// (it may skip the dropped offsets between).
		limit := hw
		if i+1 < len(want) {
			limit = want[i+1].off
		}
		if len(res.Records) != 1 || res.Records[0].Offset != want[i].off || res.Next <= want[i].off || res.Next > limit {
			t.Fatalf("fetch at %d: %d records, first at %v, next %d; want offset %d and next up to %d", off, len(res.Records), res.Records, res.Next, want[i].off, limit)
		}
	}

	// Later: more updates, and the tombstones of the first pass expire.
	clk.ms.Add(2 * deleteRetention)
	for range 4 {
		batch(25, clk.ms.Load()-10)
	}
	e.waitCache(t)
	if _, err := c.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitCache(t)
	want = expected(model, clk.ms.Load(), deleteRetention)
	sameKV(t, "after the second pass", want, fetchAll(t, e.fetcher(), "kv", 0, 0))
	for _, r := range want {
		if r.tombstone && r.ts < clk.ms.Load()-deleteRetention {
			t.Fatalf("expired tombstone kept: %+v", r)
		}
	}
}

// Records younger than min_compaction_lag_ms are not compacted: the head
// stays as produced.
func TestMinCompactionLag(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "lag", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, MinCompactionLagMs: 10_000})
	clk := &clock{}
	now := int64(1_800_000_000_000)
	clk.ms.Store(now)
	c := newCompactor(t, e, "c", Config{MinEntries: 3, Now: clk.now})
	var model []kv
	for b := range 8 {
		ts := now - 60_000 // old enough
		if b >= 4 {
			ts = now - 1000 // too young
		}
		produceKV(t, e, "lag", &model, []kv{{key: []byte("same"), val: fmt.Appendf(nil, "v%d", b), ts: ts}})
	}
	e.waitCache(t)
	if _, err := c.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitCache(t)
	// The old half collapses to its newest record; the young half stays.
	got := fetchAll(t, e.fetcher(), "lag", 0, 0)
	var offs []int64
	for _, r := range got {
		offs = append(offs, r.Offset)
	}
	if fmt.Sprint(offs) != "[3 4 5 6 7]" {
		t.Fatalf("offsets after compaction with a lag: %v", offs)
	}
	levels := ""
	for _, en := range e.entries(t, "lag", 0) {
		levels += fmt.Sprint(en.Level)
	}
	if levels != "10000" {
		t.Fatalf("levels %s, want one compacted entry and four untouched", levels)
	}
}

// When the end of a pass keeps nothing, the previous output entry grows
// over it; when a whole pass keeps nothing, the log start moves past it.
func TestCompactedRangesWithoutRecords(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "tail", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, DeleteRetentionMs: 1})
	e.topic(t, metadata.Topic{Name: "gone", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, DeleteRetentionMs: 1})
	clk := &clock{}
	now := int64(1_800_000_000_000)
	clk.ms.Store(now)
	c := newCompactor(t, e, "c", Config{MinEntries: 3, TargetBytes: 100, Now: clk.now})
	var tail, gone []kv
	produceKV(t, e, "tail", &tail, []kv{{key: []byte("a"), val: []byte("1"), ts: now - 5000}, {key: []byte("b"), val: []byte("2"), ts: now - 5000}})
	for range 4 {
		produceKV(t, e, "tail", &tail, []kv{{key: []byte("x"), val: nil, ts: now - 5000}, {key: []byte("x"), val: nil, ts: now - 5000}})
		produceKV(t, e, "gone", &gone, []kv{{key: []byte("x"), val: []byte("v"), ts: now - 5000}, {key: []byte("x"), val: nil, ts: now - 5000}})
	}
	e.waitCache(t)
	if _, err := c.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitCache(t)
	got := fetchAll(t, e.fetcher(), "tail", 0, 0)
	sameKV(t, "tail", tail[:2], got)
	es := e.entries(t, "tail", 0)
	if len(es) != 1 || es[0].Base != 0 || es[0].End() != 10 || es[0].Records != 2 {
		t.Fatalf("tail entries: %+v", es)
	}
	if res, err := e.fetcher().Fetch(context.Background(), "tail", 0, 2, 1<<20, 0); err != nil || len(res.Records) != 0 || res.Next != 10 || res.HighWatermark != 10 {
		t.Fatalf("fetch in the dropped tail: %+v %v", res, err)
	}

	if es := e.entries(t, "gone", 0); len(es) != 0 {
		t.Fatalf("gone: %d entries left", len(es))
	}
	states, err := e.meta.PartitionStates(context.Background(), "gone")
	if err != nil || states[0].Start != 8 || states[0].Next != 8 {
		t.Fatalf("gone: partition state %+v %v", states[0], err)
	}
	e.waitCache(t)
	if _, err := e.fetcher().Fetch(context.Background(), "gone", 0, 0, 1<<20, 0); !errors.Is(err, fetch.ErrOffsetOutOfRange) {
		t.Fatalf("fetch before the moved log start: %v", err)
	}
	// New records after it are served as usual.
	produceKV(t, e, "gone", &gone, []kv{{key: []byte("y"), val: []byte("new"), ts: now}})
	sameKV(t, "gone, then new", gone[8:], fetchAll(t, e.fetcher(), "gone", 0, 8))
}

// A scan of a compacted topic returns what Fetch returns, record for
// record, over the whole log and over ranges that start and end inside
// removed offsets.
func TestScanEqualsFetchAfterCompaction(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "sc", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, DeleteRetentionMs: 1})
	clk := &clock{}
	now := int64(1_800_000_000_000)
	clk.ms.Store(now)
	c := newCompactor(t, e, "c", Config{MinEntries: 3, TargetBytes: 4 << 10, BlockBytes: 512, Now: clk.now})
	rng := rand.New(rand.NewPCG(3, 4))
	var model []kv
	for b := range 10 {
		recs := make([]kv, 30)
		for i := range recs {
			k := rng.IntN(15)
			recs[i] = kv{key: fmt.Appendf(nil, "k%d", k), val: fmt.Appendf(nil, "v%d-%d", b, i), ts: now - 5000 + int64(b)}
			if k == 0 {
				recs[i].val = nil
			}
		}
		produceKV(t, e, "sc", &model, recs)
	}
	e.waitCache(t)
	if _, err := c.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.waitCache(t)
	f := e.fetcher()
	hw := model[len(model)-1].off + 1
	for _, r := range [][2]int64{{0, hw}, {1, hw - 1}, {37, 205}, {150, 151}} {
		var want []fetch.Record
		for _, rec := range fetchAll(t, f, "sc", 0, r[0]) {
			if rec.Offset < r[1] {
				want = append(want, rec)
			}
		}
		sc, err := e.scans(f).Scan(context.Background(), scan.Request{Topic: "sc", FromOffset: r[0], ToOffset: r[1]})
		if err != nil {
			t.Fatal(err)
		}
		var got []fetch.Record
		for sc.Next() {
			b := sc.RecordBatch()
			cols := map[string]int{}
			for i, fl := range b.Schema().Fields() {
				cols[fl.Name] = i
			}
			offs := b.Column(cols["offset"]).(*array.Int64)
			keys := b.Column(cols["key"]).(*array.Binary)
			vals := b.Column(cols["value"]).(*array.Binary)
			ts := b.Column(cols["timestamp"]).(*array.Timestamp)
			for i := range int(b.NumRows()) {
				rec := fetch.Record{Offset: offs.Value(i)}
				rec.Timestamp = int64(ts.Value(i))
				if !keys.IsNull(i) {
					rec.Key = bytes.Clone(keys.Value(i))
				}
				if !vals.IsNull(i) {
					rec.Value = bytes.Clone(vals.Value(i))
				}
				got = append(got, rec)
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		sc.Release()
		sameRecords(t, fmt.Sprintf("scan [%d,%d)", r[0], r[1]), want, got)
	}
}
