package scan_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/scan"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// scanEnv is a real read path: embedded etcd, a filesystem store and an
// ingester that writes what the fetcher reads.
type scanEnv struct {
	dir   string
	store *tier.Recorder
	meta  *metadata.Client
	index *metadata.Cache
	f     *fetch.Fetcher
	r     *scan.Reader
	in    *ingest.Ingester
}

func newScanEnv(t testing.TB) *scanEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	fs, err := tier.NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	e := &scanEnv{dir: dir, store: tier.NewRecorder(fs)}
	e.meta, err = metadata.Connect(ctx, metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.meta.Close() })
	e.index, err = e.meta.NewCache(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.index.Close)
	// No shared block cache: every block read is a ranged GET.
	e.f = fetch.NewFetcher(e.store, e.meta, e.index, blockcache.NewMemory(1), nil, nil)
	e.r = scan.New(e.meta, e.index, e.f.Blocks(), nil)
	e.in, err = ingest.New(ingest.Config{Linger: time.Hour, FlushBytes: 64 << 20}, e.store, e.meta, e.index, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.in.Close(context.Background()) })
	return e
}

// produceFlushes writes flushes × perFlush records to every partition, one
// object per flush (so several blocks per partition), with null and empty
// keys and values, headers and timestamps that go back and forth.
func (e *scanEnv) produceFlushes(t testing.TB, topic string, partitions int32, flushes, perFlush int, baseTS int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.meta.CreateTopic(ctx, metadata.Topic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for f := range flushes {
		var recs []ingest.Record
		for p := range partitions {
			for i := range perFlush {
				r := segment.Record{
					Key:       fmt.Appendf(nil, "user-%d", n%7),
					Value:     fmt.Appendf(nil, `{"n":%d,"p":%d,"pad":"%s"}`, n, p, strings.Repeat("x", n%50)),
					Timestamp: baseTS + int64(f*1000+i*5) + int64(n%3)*7, // not sorted within a block
				}
				switch n % 11 {
				case 0:
					r.Key = nil
				case 1:
					r.Key = []byte{}
				case 2:
					r.Value = nil
				case 3:
					r.Value = []byte{}
				}
				if n%4 == 0 {
					r.Headers = []segment.Header{{Key: "trace", Value: fmt.Appendf(nil, "t%d", n)}, {Key: "null", Value: nil}, {Key: "trace", Value: []byte{}}}
				}
				recs = append(recs, ingest.Record{Partition: p, Record: r})
				n++
			}
		}
		done := make(chan error, 1)
		go func() { _, err := e.in.Produce(ctx, topic, recs); done <- err }()
		if !testenv.Eventually(10*time.Second, func() bool { _, n := e.in.Pending(); return n == int64(len(recs)) }) {
			t.Fatal("records never buffered")
		}
		if err := e.in.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// row is one record as a scan or a fetch sees it.
type row struct {
	Topic     string
	Partition int32
	Offset    int64
	Timestamp int64
	Key       []byte
	Value     []byte
	Headers   []segment.Header
}

func (r row) String() string {
	return fmt.Sprintf("%s/%d@%d ts=%d key=%s value=%s headers=%s", r.Topic, r.Partition, r.Offset, r.Timestamp, show(r.Key), show(r.Value), showHeaders(r.Headers))
}

func show(b []byte) string {
	if b == nil {
		return "<null>"
	}
	return fmt.Sprintf("%q", b)
}

func showHeaders(hs []segment.Header) string {
	var sb strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&sb, "[%s=%s]", h.Key, show(h.Value))
	}
	return sb.String()
}

// rowsOf reads every batch of rd, checking each against ScanSchema.
func rowsOf(t testing.TB, rd array.RecordReader) ([]row, error) {
	t.Helper()
	var out []row
	for rd.Next() {
		rec := rd.RecordBatch()
		if !rec.Schema().Equal(scan.RecordSchema) {
			t.Fatalf("batch schema %s, want %s", rec.Schema(), scan.RecordSchema)
		}
		out = append(out, batchRows(rec)...)
	}
	return out, rd.Err()
}

func batchRows(rec arrow.RecordBatch) []row {
	topic := rec.Column(0).(*array.String)
	part := rec.Column(1).(*array.Int32)
	off := rec.Column(2).(*array.Int64)
	ts := rec.Column(3).(*array.Timestamp)
	key := rec.Column(4).(*array.Binary)
	val := rec.Column(5).(*array.Binary)
	hl := rec.Column(6).(*array.List)
	hs := hl.ListValues().(*array.Struct)
	hk := hs.Field(0).(*array.String)
	hv := hs.Field(1).(*array.Binary)
	bytesAt := func(a *array.Binary, i int) []byte {
		if a.IsNull(i) {
			return nil
		}
		return append([]byte{}, a.Value(i)...)
	}
	var out []row
	for i := range int(rec.NumRows()) {
		// Strings alias the batch's buffers, which are recycled once it is
		// released: copy them.
		r := row{Topic: strings.Clone(topic.Value(i)), Partition: part.Value(i), Offset: off.Value(i), Timestamp: int64(ts.Value(i)),
			Key: bytesAt(key, i), Value: bytesAt(val, i)}
		start, end := hl.ValueOffsets(i)
		for j := int(start); j < int(end); j++ {
			r.Headers = append(r.Headers, segment.Header{Key: strings.Clone(hk.Value(j)), Value: bytesAt(hv, j)})
		}
		out = append(out, r)
	}
	return out
}

// fetchRange reads [from, to) of a partition with Fetch, small pages at a
// time, and keeps the records that pass the time and key filters.
func fetchRange(t testing.TB, f *fetch.Fetcher, topic string, p int32, from, to, fromTS, toTS int64, keys [][]byte) []row {
	t.Helper()
	var out []row
	off := from
	for off < to {
		res, err := f.Fetch(context.Background(), topic, p, off, 700, 0)
		if err != nil {
			t.Fatalf("fetch %s/%d@%d: %v", topic, p, off, err)
		}
		if len(res.Records) == 0 {
			break
		}
		for _, r := range res.Records {
			if r.Offset >= to {
				break
			}
			if r.Timestamp < fromTS || (toTS > 0 && r.Timestamp >= toTS) {
				continue
			}
			if len(keys) > 0 && (r.Key == nil || !containsKey(keys, r.Key)) {
				continue
			}
			out = append(out, row{Topic: topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp, Key: r.Key, Value: r.Value, Headers: r.Headers})
		}
		off = res.Next
	}
	return out
}

func containsKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

func sameRows(t *testing.T, got, want []row) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("scan returned %d records, fetch %d", len(got), len(want))
	}
	for i := range got {
		// String shows null and empty differently, so it compares them too.
		if got[i].String() != want[i].String() {
			t.Fatalf("record %d:\nscan  %s\nfetch %s", i, got[i], want[i])
		}
	}
}

func TestScanEqualsFetch(t *testing.T) {
	e := newScanEnv(t)
	const parts, flushes, perFlush = 3, 6, 120
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	e.produceFlushes(t, "events", parts, flushes, perFlush, base)
	end := int64(flushes * perFlush)

	cases := []struct {
		name               string
		partitions         []int32
		from, to           int64
		fromTS, toTS       int64
		keys               [][]byte
		batch, parallelism int
		inflight           int64
	}{
		{name: "everything"},
		{name: "everything, tiny batches, one block at a time", batch: 7, parallelism: 1, inflight: 1},
		{name: "offset range inside blocks", from: 130, to: 611},
		{name: "offset range past the end", from: 700, to: 10_000},
		{name: "empty offset range", from: 50, to: 50},
		{name: "one partition, reordered list", partitions: []int32{2, 0}, from: 5, to: 400},
		{name: "time range", fromTS: base + 1500, toTS: base + 3605},
		{name: "time range within one block", fromTS: base + 2100, toTS: base + 2200},
		{name: "time and offset range", from: 200, to: 500, fromTS: base + 1000},
		{name: "time range before the data", toTS: base - 1},
		{name: "keys", keys: [][]byte{[]byte("user-3"), []byte(""), []byte("nobody")}},
		{name: "keys and range", keys: [][]byte{[]byte("user-5")}, from: 100, to: 300, partitions: []int32{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer alloc.AssertSize(t, 0)
			e.store.Reset()
			sc, err := e.r.Scan(context.Background(), scan.Request{
				Topic: "events", Partitions: c.partitions, FromOffset: c.from, ToOffset: c.to,
				FromTime: c.fromTS, ToTime: c.toTS, Keys: c.keys,
				MaxBatchRecords: c.batch, Parallelism: c.parallelism, MaxInflightBytes: c.inflight, Alloc: alloc,
			})
			if err != nil {
				t.Fatal(err)
			}
			prog := sc.Progress()
			got, err := rowsOf(t, sc)
			sc.Release()
			if err != nil {
				t.Fatal(err)
			}
			// Only blocks that overlap the range were read: one GET each.
			if gets := int64(e.store.Count(tier.OpGet)); gets != prog.BlocksTotal {
				t.Errorf("%d GETs, want one per overlapping block (%d)", gets, prog.BlocksTotal)
			}
			ps := c.partitions
			if ps == nil {
				ps = []int32{0, 1, 2}
			}
			to := c.to
			if to == 0 {
				to = end
			}
			var want []row
			for _, p := range ps {
				want = append(want, fetchRange(t, e.f, "events", p, c.from, to, c.fromTS, c.toTS, c.keys)...)
			}
			sameRows(t, got, want)
			if c.name == "everything" && len(got) != parts*flushes*perFlush {
				t.Fatalf("scan of everything returned %d records", len(got))
			}
			if c.name == "time range within one block" && prog.BlocksTotal != parts {
				t.Fatalf("time range within one flush read %d blocks, want %d (one per partition)", prog.BlocksTotal, parts)
			}
		})
	}
}

func TestScanReleaseEarlyStopsAndFreesEverything(t *testing.T) {
	e := newScanEnv(t)
	e.produceFlushes(t, "big", 2, 8, 200, 1_700_000_000_000)
	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	sc, err := e.r.Scan(context.Background(), scan.Request{Topic: "big", MaxBatchRecords: 50, Alloc: alloc})
	if err != nil {
		t.Fatal(err)
	}
	if !sc.Next() || !sc.Next() {
		t.Fatalf("no batches: %v", sc.Err())
	}
	kept := sc.RecordBatch()
	kept.Retain()
	sc.Release()
	if kept.NumRows() != 50 {
		t.Fatalf("retained batch has %d rows", kept.NumRows())
	}
	kept.Release()
	alloc.AssertSize(t, 0)
}

func TestScanContextCanceled(t *testing.T) {
	e := newScanEnv(t)
	e.produceFlushes(t, "c", 1, 4, 100, 1_700_000_000_000)
	ctx, cancel := context.WithCancel(context.Background())
	sc, err := e.r.Scan(ctx, scan.Request{Topic: "c", MaxBatchRecords: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Release()
	if !sc.Next() {
		t.Fatal(sc.Err())
	}
	cancel()
	for sc.Next() {
	}
	if !errors.Is(sc.Err(), context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", sc.Err())
	}
}

func TestScanBadInput(t *testing.T) {
	e := newScanEnv(t)
	e.produceFlushes(t, "t", 2, 1, 10, 1_700_000_000_000)
	cases := []struct {
		name string
		req  scan.Request
		want error
		msg  string
	}{
		{"unknown topic", scan.Request{Topic: "nope"}, metadata.ErrTopicNotFound, "nope"},
		{"inverted offsets", scan.Request{Topic: "t", FromOffset: 9, ToOffset: 3}, metadata.ErrInvalidArgument, "inverted offset range: from 9 is after to 3"},
		{"inverted times", scan.Request{Topic: "t", FromTime: 2000, ToTime: 1000}, metadata.ErrInvalidArgument, "inverted time range"},
		{"negative offset", scan.Request{Topic: "t", FromOffset: -1}, metadata.ErrInvalidArgument, "negative"},
		{"negative time", scan.Request{Topic: "t", ToTime: -5}, metadata.ErrInvalidArgument, "negative"},
		{"partition out of range", scan.Request{Topic: "t", Partitions: []int32{0, 2}}, metadata.ErrPartitionOutOfRange, "got partition 2"},
		{"negative partition", scan.Request{Topic: "t", Partitions: []int32{-1}}, metadata.ErrPartitionOutOfRange, "got partition -1"},
		{"partition twice", scan.Request{Topic: "t", Partitions: []int32{1, 1}}, metadata.ErrInvalidArgument, "listed twice"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.store.Reset()
			sc, err := e.r.Scan(context.Background(), c.req)
			if err == nil {
				sc.Release()
				t.Fatal("scan accepted bad input")
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.msg)
			}
			if n := len(e.store.Calls()); n != 0 {
				t.Fatalf("bad input made %d store calls", n)
			}
		})
	}
}

func TestScanCorruptBlockIsDataLoss(t *testing.T) {
	e := newScanEnv(t)
	e.produceFlushes(t, "c", 2, 3, 50, 1_700_000_000_000)
	// Corrupt the second flush's object: blocks of both partitions.
	var keys []string
	for _, c := range e.store.Calls() {
		if c.Op == tier.OpPut {
			keys = append(keys, c.Key)
		}
	}
	if len(keys) != 3 {
		t.Fatalf("%d objects, want 3", len(keys))
	}
	bad := keys[1]
	path := filepath.Join(e.dir, "objects", filepath.FromSlash(bad))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 40; i < 60; i++ {
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	sc, err := e.r.Scan(context.Background(), scan.Request{Topic: "c", Alloc: alloc})
	if err != nil {
		t.Fatal(err)
	}
	got, err := rowsOf(t, sc)
	sc.Release()
	alloc.AssertSize(t, 0)
	if !errors.Is(err, blockcache.ErrDataLoss) || !strings.Contains(err.Error(), "object "+bad) || !strings.Contains(err.Error(), "offsets 50-99") {
		t.Fatalf("got %v, want data loss naming %s and offsets 50-99", err, bad)
	}
	// Everything before the corrupt block was delivered, nothing after it:
	// the first block of the object is partition 0's or partition 1's.
	want := 50
	if strings.Contains(err.Error(), "c/1 offsets") {
		want = 150 + 50
	}
	if len(got) != want || got[want-1].Offset != 49 {
		t.Fatalf("got %d records before the error, want %d", len(got), want)
	}
}

// peakAlloc is an Arrow allocator that remembers the most it ever held.
type peakAlloc struct {
	memory.Allocator
	mu        sync.Mutex
	cur, peak int64
	allocated int64
}

func (a *peakAlloc) add(n int64) {
	a.mu.Lock()
	a.cur += n
	if n > 0 {
		a.allocated += n
	}
	a.peak = max(a.peak, a.cur)
	a.mu.Unlock()
}

func (a *peakAlloc) Allocate(n int) []byte { a.add(int64(n)); return a.Allocator.Allocate(n) }
func (a *peakAlloc) Reallocate(n int, b []byte) []byte {
	a.add(int64(n - len(b)))
	return a.Allocator.Reallocate(n, b)
}
func (a *peakAlloc) Free(b []byte) { a.add(-int64(len(b))); a.Allocator.Free(b) }

// TestScanMemoryIsBounded: however long the range, the Arrow memory a scan
// holds stays near MaxInflightBytes while the consumer is slow.
func TestScanMemoryIsBounded(t *testing.T) {
	e := newScanEnv(t)
	e.produceFlushes(t, "long", 1, 24, 400, 1_700_000_000_000)
	alloc := &peakAlloc{Allocator: memory.NewGoAllocator()}
	const bound = 256 << 10
	sc, err := e.r.Scan(context.Background(), scan.Request{Topic: "long", Parallelism: 8, MaxInflightBytes: bound, Alloc: alloc})
	if err != nil {
		t.Fatal(err)
	}
	rows, produced := int64(0), int64(0)
	for sc.Next() {
		rows += sc.RecordBatch().NumRows()
		for _, c := range sc.RecordBatch().Columns() {
			produced += dataBytes(c.Data())
		}
		time.Sleep(2 * time.Millisecond) // a slow consumer: readers run ahead until the bound
	}
	sc.Release()
	if sc.Err() != nil || rows != 24*400 {
		t.Fatalf("%d rows: %v", rows, sc.Err())
	}
	// Buffers of released batches are recycled, so the allocator may see
	// less than the scan produced.
	t.Logf("Arrow bytes: peak %d, allocated over the scan %d, produced %d, bound %d", alloc.peak, alloc.allocated, produced, bound)
	if alloc.peak > bound || produced < 3*bound {
		t.Fatalf("peak %d bytes held (bound %d) while producing %d", alloc.peak, bound, produced)
	}
	if alloc.cur != 0 {
		t.Fatalf("%d bytes leaked", alloc.cur)
	}
}

// TestScanTopicDeletedMidScan: blocks gone with their topic end the scan
// with NotFound, not a retriable error.
func TestScanTopicDeletedMidScan(t *testing.T) {
	e := newScanEnv(t)
	e.produceFlushes(t, "gone", 1, 2, 10, 1_700_000_000_000)
	sc, err := e.r.Scan(context.Background(), scan.Request{Topic: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Release()
	if err := e.meta.DeleteTopic(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool { _, ok := e.index.Topic("gone"); return !ok }) {
		t.Fatal("the cache never saw the deletion")
	}
	for sc.Next() {
	}
	if !errors.Is(sc.Err(), metadata.ErrTopicNotFound) {
		t.Fatalf("err %v, want ErrTopicNotFound", sc.Err())
	}
}

// TestScanFromBlockCache: blocks a fetch node already holds decoded are
// scanned from its cache, without a GET, and give the same rows.
func TestScanFromBlockCache(t *testing.T) {
	e := newScanEnv(t)
	e.produceFlushes(t, "cached", 2, 3, 40, 1_700_000_000_000)
	f := fetch.NewFetcher(e.store, e.meta, e.index, blockcache.NewMemory(64<<20), nil, nil)
	var want []row
	for p := range int32(2) {
		want = append(want, fetchRange(t, f, "cached", p, 0, 120, 0, 0, nil)...)
	}
	e.store.Reset()
	sc, err := scan.New(e.meta, e.index, f.Blocks(), nil).Scan(context.Background(), scan.Request{Topic: "cached", FromOffset: 10, MaxBatchRecords: 16})
	if err != nil {
		t.Fatal(err)
	}
	got, err := rowsOf(t, sc)
	sc.Release()
	if err != nil {
		t.Fatal(err)
	}
	var wantFrom10 []row
	for _, r := range want {
		if r.Offset >= 10 {
			wantFrom10 = append(wantFrom10, r)
		}
	}
	sameRows(t, got, wantFrom10)
	for _, c := range e.store.Calls() {
		if c.Op == tier.OpGet {
			t.Fatalf("a scan of cached blocks read %s", c.Key)
		}
	}
}

// dataBytes is the length of an array's buffers, children included.
func dataBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}
