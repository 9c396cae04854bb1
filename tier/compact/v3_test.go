package compact

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// commitOld writes recs (by partition) as one object of version 1 blocks,
// the way ingest nodes wrote segments before block version 3, commits
// it and returns each partition's base offset.
func commitOld(t testing.TB, e *env, topic string, recs map[int32][]segment.Record) map[int32]int64 {
	t.Helper()
	ctx := context.Background()
	var bbs []*segment.BlockBuilder
	for p := range int32(len(recs) + 16) {
		if len(recs[p]) == 0 {
			continue
		}
		b := segment.NewBlockBuilder(topic, p)
		for _, r := range recs[p] {
			b.Append(r)
		}
		bbs = append(bbs, b)
	}
	obj, infos, err := segment.Build(bbs)
	if err != nil {
		t.Fatal(err)
	}
	for _, bi := range infos {
		if v := obj[bi.Offset+2]; v != segment.BlockVersion {
			t.Fatalf("old block of version %d", v)
		}
	}
	key := tier.FlushKey("", "old", uint64(time.Now().UnixNano()), time.Now())
	if err := e.rec.PutIfAbsent(ctx, key, obj); err != nil {
		t.Fatal(err)
	}
	var apps []metadata.Append
	for _, bi := range infos {
		apps = append(apps, metadata.Append{Topic: topic, Partition: bi.Partition, Object: key, Off: bi.Offset, Len: bi.Length,
			Records: bi.Records, MinTS: bi.MinTimestamp, MaxTS: bi.MaxTimestamp, RawBytes: bi.RawBytes})
	}
	res, err := e.meta.Commit(ctx, "old-"+key, apps)
	if err != nil {
		t.Fatal(err)
	}
	bases := map[int32]int64{}
	for i, r := range res {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		bases[apps[i].Partition] = r.Base
	}
	if err := e.settle(topic); err != nil {
		t.Fatal(err)
	}
	return bases
}

// fillOld is fill with old (version 1) segments.
func fillOld(t testing.TB, e *env, topic string, parts, batches, n int, seq []int64) {
	t.Helper()
	for range batches {
		recs := map[int32][]segment.Record{}
		for i := range n {
			p := int32(i % parts)
			v := fmt.Appendf(nil, "p%d-%d-%s", p, seq[p], strings.Repeat("y", int(seq[p]%50)))
			var hs []segment.Header
			if seq[p]%3 == 0 {
				hs = []segment.Header{{Key: "h", Value: []byte(strconv.Itoa(int(seq[p])))}, {Key: "n", Value: nil}}
			}
			var k []byte
			if seq[p]%5 != 0 {
				k = fmt.Appendf(nil, "k%d", seq[p]%7)
			}
			recs[p] = append(recs[p], segment.Record{Key: k, Value: v, Headers: hs, Timestamp: 1_700_000_000_000 + seq[p]})
			seq[p]++
		}
		commitOld(t, e, topic, recs)
	}
}

// compactedBlocks reads back every object compaction PUT (levels 1 and
// 2) from the store, verifies it whole, and counts its blocks by block
// version.
func compactedBlocks(t testing.TB, e *env) (versions map[byte]int, objects map[int]int) {
	t.Helper()
	versions, objects = map[byte]int{}, map[int]int{}
	for _, c := range e.rec.Calls() {
		if c.Op != tier.OpPut || c.Err != nil {
			continue
		}
		level := 0
		switch {
		case strings.HasPrefix(c.Key, "l1/"):
			level = 1
		case strings.HasPrefix(c.Key, "l2/"):
			level = 2
		default:
			continue
		}
		obj, err := e.rec.GetRange(context.Background(), c.Key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		infos, _, err := segment.Decode(obj)
		if err != nil {
			t.Fatalf("%s: %v", c.Key, err)
		}
		for _, bi := range infos {
			versions[obj[bi.Offset+2]]++
		}
		objects[level]++
	}
	return versions, objects
}

// Every block compaction writes is a version 3 block (Kafka record
// batches), whatever its input: version 3 blocks from ingest, version 1
// blocks from before, or both; through level 1 and level 2, with every
// record, offset, key, value, header and timestamp kept.
func TestCompactionWritesBatchBlocks(t *testing.T) {
	for _, input := range []string{"v3", "v1", "mixed"} {
		t.Run(input, func(t *testing.T) {
			e := newEnv(t)
			const parts = 2
			e.topic(t, metadata.Topic{Name: "b", Partitions: parts})
			seq := make([]int64, parts)
			write := func(batches, n int) {
				for i := range batches {
					if input == "v1" || input == "mixed" && i%2 == 1 {
						fillOld(t, e, "b", parts, 1, n, seq)
					} else {
						fill(t, e, "b", parts, 1, n, seq)
					}
				}
			}
			write(24, 60)
			c := newCompactor(t, e, "c1", Config{MinEntries: 6, TargetBytes: 64 << 10, BlockBytes: 8 << 10, MergeObjects: 3})
			e.rec.Reset()
			for range 3 {
				runUntilIdle(t, e, c)
				write(8, 40)
			}
			runUntilIdle(t, e, c)
			versions, objects := compactedBlocks(t, e)
			t.Logf("blocks written by version %v, objects by level %v", versions, objects)
			if len(versions) != 1 || versions[segment.BatchesBlockVersion] == 0 || objects[1] == 0 || objects[2] == 0 {
				t.Fatalf("compaction wrote blocks by version %v and objects by level %v, want only version 3 at levels 1 and 2", versions, objects)
			}
			f := e.fetcher()
			for p := range int32(parts) {
				got := fetchAll(t, f, "b", p, 0)
				if int64(len(got)) != seq[p] {
					t.Fatalf("partition %d: %d records, want %d", p, len(got), seq[p])
				}
				for i, r := range got {
					n := int64(i)
					if r.Offset != n || !strings.HasPrefix(string(r.Value), fmt.Sprintf("p%d-%d-", p, n)) || r.Timestamp != 1_700_000_000_000+n {
						t.Fatalf("partition %d record %d: offset %d value %q ts %d", p, i, r.Offset, r.Value, r.Timestamp)
					}
					if n%3 == 0 && (len(r.Headers) == 0 || string(r.Headers[0].Value) != strconv.Itoa(i)) {
						t.Fatalf("partition %d record %d: headers %v", p, i, r.Headers)
					}
				}
				// The same through stored batches, as the SDK fetches.
				for off := int64(0); off < seq[p]; {
					br, err := f.FetchBatches(context.Background(), "b", p, off, 32<<10, 0)
					if err != nil {
						t.Fatal(err)
					}
					recs, offs, err := segment.DecodeBatches(br.Batches, off)
					if err != nil || len(recs) == 0 || br.Next <= off {
						t.Fatalf("partition %d: batches at %d: %d records, next %d, %v", p, off, len(recs), br.Next, err)
					}
					for j := range recs {
						if offs[j] != off+int64(j) || string(recs[j].Value) != string(got[off+int64(j)].Value) || recs[j].Timestamp != got[off+int64(j)].Timestamp {
							t.Fatalf("partition %d: batches at %d: record %d at %d %q", p, off, j, offs[j], recs[j].Value)
						}
					}
					off += int64(len(recs))
				}
				levels := map[int]int{}
				for _, en := range e.entries(t, "b", p) {
					levels[en.Level]++
				}
				if levels[0] != 0 {
					t.Fatalf("partition %d: entries per level %v", p, levels)
				}
			}
		})
	}
}

// A compacted topic whose log holds old blocks (version 1 from ingest,
// version 2 from an earlier compaction) and version 3 blocks is
// compacted into version 3 blocks only, every kept record at its offset.
func TestCompactedTopicOldBlocksWriteBatchBlocks(t *testing.T) {
	e := newEnv(t)
	const deleteRetention = 60_000
	e.topic(t, metadata.Topic{Name: "kv", Partitions: 1, CleanupPolicy: metadata.CleanupCompact, DeleteRetentionMs: deleteRetention})
	clk := &clock{}
	t0 := int64(1_800_000_000_000)
	clk.ms.Store(t0)
	rng := rand.New(rand.NewPCG(3, 4))
	var model []kv
	gen := func(n int) []kv {
		recs := make([]kv, n)
		for i := range recs {
			k := rng.IntN(12)
			recs[i] = kv{ts: t0 - 1000 + int64(len(model)+i)}
			switch {
			case k == 11:
				recs[i].val = fmt.Appendf(nil, "nokey-%d", len(model)+i)
			default:
				recs[i].key = fmt.Appendf(nil, "k%d", k)
				if rng.IntN(5) != 0 {
					recs[i].val = fmt.Appendf(nil, "v%d-%d", k, len(model)+i)
				}
			}
		}
		return recs
	}
	old := func(recs []kv) {
		srecs := make([]segment.Record, len(recs))
		for i, r := range recs {
			srecs[i] = segment.Record{Key: r.key, Value: r.val, Timestamp: r.ts}
		}
		base := commitOld(t, e, "kv", map[int32][]segment.Record{0: srecs})[0]
		for i := range recs {
			recs[i].off, recs[i].tombstone = base+int64(i), recs[i].val == nil
			model = append(model, recs[i])
		}
	}
	for i := range 12 {
		if i%3 == 0 {
			produceKV(t, e, "kv", &model, gen(25))
		} else {
			old(gen(25))
		}
	}
	// An earlier compaction's version 2 block: the second entry without
	// its even offsets.
	e.waitCache(t)
	es := e.entries(t, "kv", 0)
	sparse := es[1]
	b := segment.NewBlockBuilder("kv", 0)
	var kept []kv
	prev := sparse.Base - 1
	for _, r := range model {
		if r.off >= sparse.Base && r.off < sparse.End() && r.off%2 == 1 {
			b.Append(segment.Record{Key: r.key, Value: r.val, Timestamp: r.ts, Gap: r.off - prev - 1})
			prev = r.off
			kept = append(kept, r)
		}
	}
	obj, infos, err := segment.Build([]*segment.BlockBuilder{b})
	if err != nil || obj[infos[0].Offset+2] != segment.SparseBlockVersion {
		t.Fatalf("sparse block: %v", err)
	}
	key := tier.CompactedKey(1, "kv", 0, sparse.Base, sparse.End(), "old")
	if err := e.rec.PutIfAbsent(context.Background(), key, obj); err != nil {
		t.Fatal(err)
	}
	bi := infos[0]
	ne := metadata.IndexEntry{Topic: "kv", Partition: 0, Base: sparse.Base, Object: key, Off: bi.Offset, Len: bi.Length, Records: bi.Records,
		MinTS: bi.MinTimestamp, MaxTS: bi.MaxTimestamp, RawBytes: bi.RawBytes, Level: 1, Span: sparse.End() - sparse.Base}
	if err := compaction.New(e.meta).SwapIndex(context.Background(), compaction.Swap{Topic: "kv", Partition: 0, Old: []metadata.IndexEntry{sparse}, New: []metadata.IndexEntry{ne}}); err != nil {
		t.Fatal(err)
	}
	var m2 []kv
	for _, r := range model {
		if r.off < sparse.Base || r.off >= sparse.End() || r.off%2 == 1 {
			m2 = append(m2, r)
		}
	}
	model = m2
	hw := model[len(model)-1].off + 1
	e.waitCache(t)
	sameKV(t, "before compaction", model, fetchAll(t, e.fetcher(), "kv", 0, 0))

	c := newCompactor(t, e, "c", Config{MinEntries: 4, TargetBytes: 2 << 10, BlockBytes: 1 << 10, Now: clk.now})
	e.rec.Reset()
	e.waitCache(t)
	st, err := c.RunOnce(context.Background())
	if err != nil || st.Jobs == 0 || st.RecordsOut >= st.RecordsIn {
		t.Fatalf("pass: %+v %v", st, err)
	}
	e.waitCache(t)
	versions, _ := compactedBlocks(t, e)
	if len(versions) != 1 || versions[segment.BatchesBlockVersion] == 0 {
		t.Fatalf("compaction wrote blocks by version %v, want only version 3", versions)
	}
	for _, en := range e.entries(t, "kv", 0) {
		if en.Level != 1 || en.Object == key {
			t.Fatalf("entry %+v not compacted", en)
		}
	}
	want := expected(model, clk.ms.Load(), deleteRetention)
	f := e.fetcher()
	sameKV(t, "after compaction", want, fetchAll(t, f, "kv", 0, 0))
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
			if len(res.Records) != 0 {
				t.Fatalf("fetch at %d past the last kept record: %+v", off, res)
			}
			continue
		}
		if len(res.Records) != 1 || res.Records[0].Offset != want[i].off || string(res.Records[0].Value) != string(want[i].val) {
			t.Fatalf("fetch at %d: %v, want offset %d", off, res.Records, want[i].off)
		}
		// The stored batches, decoded as the SDK does (whole batches,
		// records below the offset skipped): the kept records from off on,
		// at their offsets.
		br, err := f.FetchBatches(context.Background(), "kv", 0, off, 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		recs, offs, err := segment.DecodeBatches(br.Batches, off)
		if err != nil || len(recs) == 0 {
			t.Fatalf("batches at %d: %d records, %v", off, len(recs), err)
		}
		for j := range recs {
			w := want[i+j]
			if offs[j] != w.off || string(recs[j].Key) != string(w.key) || string(recs[j].Value) != string(w.val) || (recs[j].Value == nil) != (w.val == nil) || recs[j].Timestamp != w.ts {
				t.Fatalf("batches at %d: record %d is %d %q=%q, want %d %q=%q", off, j, offs[j], recs[j].Key, recs[j].Value, w.off, w.key, w.val)
			}
		}
	}

	// A second pass with new keys only keeps every record of the first
	// pass's output: its batches are copied, byte for byte but baseOffset.
	first := batchBodies(t, e)
	e.rec.Reset()
	for range 4 {
		recs := gen(10)
		for i := range recs {
			recs[i].key = fmt.Appendf(nil, "new%d", rng.IntN(1000))
		}
		produceKV(t, e, "kv", &model, recs)
	}
	e.waitCache(t)
	if st, err := c.RunOnce(context.Background()); err != nil || st.Jobs == 0 {
		t.Fatalf("second pass: %+v %v", st, err)
	}
	second := batchBodies(t, e)
	for body := range first {
		if !second[body] {
			t.Fatalf("a batch of the first pass (of %d) was not copied by the second (%d batches)", len(first), len(second))
		}
	}
	e.waitCache(t)
	sameKV(t, "after the second pass", expected(model, clk.ms.Load(), deleteRetention), fetchAll(t, e.fetcher(), "kv", 0, 0))
}

// A job whose version 3 input holds far more uncompressed bytes than its
// index entries say (their raw bytes are the stored batches) still fits
// one swap: the output blocks grow as the input turns out larger.
func TestCompressedInputFitsOneSwap(t *testing.T) {
	e := newEnv(t)
	e.topic(t, metadata.Topic{Name: "z", Partitions: 1})
	seq := make([]int64, 1)
	var recs []segment.Record
	for range 60 {
		recs = recs[:0]
		for range 20 {
			recs = append(recs, segment.Record{Value: fmt.Appendf(nil, "%d-%s", seq[0], strings.Repeat("z", 2000)), Timestamp: 1_700_000_000_000 + seq[0]})
			seq[0]++
		}
		in := make([]ingest.Record, len(recs))
		for i := range recs {
			in[i] = ingest.Record{Record: recs[i]}
		}
		e.produce(t, "z", in)
	}
	var raw, stored int64
	for _, en := range e.entries(t, "z", 0) {
		raw += en.RawBytes
		stored += en.Len
	}
	t.Logf("input: %d entries, %d raw bytes by the index, %d stored, %d uncompressed", len(e.entries(t, "z", 0)), raw, stored, seq[0]*2000)
	c := newCompactor(t, e, "c", Config{MinEntries: 4, TargetBytes: 1 << 20, BlockBytes: 1 << 10})
	st := runUntilIdle(t, e, c)
	es := e.entries(t, "z", 0)
	t.Logf("stats %+v, %d entries after", st, len(es))
	if st.Jobs != 1 || len(es) > compaction.MaxSwapEntries || es[0].Level != 1 {
		t.Fatalf("stats %+v, %d entries", st, len(es))
	}
	got := fetchAll(t, e.fetcher(), "z", 0, 0)
	if int64(len(got)) != seq[0] {
		t.Fatalf("%d records, want %d", len(got), seq[0])
	}
	for i, r := range got {
		if r.Offset != int64(i) || !strings.HasPrefix(string(r.Value), fmt.Sprintf("%d-z", i)) {
			t.Fatalf("record %d: %d %.10q", i, r.Offset, r.Value)
		}
	}
}

// batchBodies returns the batches of every object compaction PUT since
// the recorder's last reset, without their baseOffset.
func batchBodies(t *testing.T, e *env) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, c := range e.rec.Calls() {
		if c.Op != tier.OpPut || c.Err != nil || !strings.HasPrefix(c.Key, "l1/") {
			continue
		}
		obj, err := e.rec.GetRange(context.Background(), c.Key, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		infos, _, err := segment.Decode(obj)
		if err != nil {
			t.Fatal(err)
		}
		for _, bi := range infos {
			bs, ok, err := segment.StoredBatches(obj[bi.Offset : bi.Offset+bi.Length])
			if err != nil || !ok {
				t.Fatalf("%s: %v %v", c.Key, ok, err)
			}
			for _, b := range bs {
				out[string(b.Bytes[8:])] = true
			}
		}
	}
	return out
}
