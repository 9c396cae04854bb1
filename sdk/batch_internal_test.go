package sdk

import (
	"bytes"
	"math/rand"
	"slices"
	"testing"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/tier/segment"
)

// TestSortByPartition: records come out grouped by partition in
// ascending order, each partition's records in their original order, for
// partitions counted (a narrow range) and merge-sorted (a wide one).
func TestSortByPartition(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, spread := range []int32{1, 8, 1000, 1 << 30} {
		for _, n := range []int{0, 1, 2, 100, 1000} {
			batch := make([]*pendingRecord, n)
			parts := make([]int32, n)
			for i := range batch {
				batch[i] = &pendingRecord{size: i}
				parts[i] = rng.Int31n(spread)
			}
			type pair struct {
				p int32
				i int
			}
			want := make([]pair, n)
			for i := range want {
				want[i] = pair{parts[i], i}
			}
			slices.SortStableFunc(want, func(a, b pair) int { return int(a.p - b.p) })
			sortByPartition(batch, parts)
			for i := range want {
				if parts[i] != want[i].p || batch[i].size != want[i].i {
					t.Fatalf("spread %d, %d records: position %d has partition %d record %d, want %d and %d",
						spread, n, i, parts[i], batch[i].size, want[i].p, want[i].i)
				}
			}
		}
	}
}

// TestDecodeFetchedAllocs: decoding a fetch allocates per batch, not per
// record (the records, their headers and header keys share allocations),
// and gives back what was produced.
func TestDecodeFetchedAllocs(t *testing.T) {
	batch, parts := benchPending("json")
	for i := range parts {
		parts[i] = 0
	}
	var req varvev1.ProduceRequest
	if err := batchRequest(&req, batch, parts, nil); err != nil {
		t.Fatal(err)
	}
	fetched := req.Batches[0].RecordBatches
	recs, err := decodeFetched("bench", 0, fetched, 5)
	if err != nil || len(recs) != len(batch)-5 {
		t.Fatalf("%d records, want %d: %v", len(recs), len(batch)-5, err)
	}
	for i, r := range recs {
		w := &batch[i+5].rec
		if r.Offset != int64(i+5) || !bytes.Equal(r.Key, w.Key) || !bytes.Equal(r.Value, w.Value) || r.Timestamp.UnixMilli() != w.Timestamp.UnixMilli() ||
			len(r.Headers) != 1 || r.Headers[0].Key != w.Headers[0].Key || !bytes.Equal(r.Headers[0].Value, w.Headers[0].Value) {
			t.Fatalf("record %d: %+v, want %+v", i, r, w)
		}
	}
	n := testenv.AllocsPerRun(5, func() {
		if _, err := decodeFetched("bench", 0, fetched, 0); err != nil {
			t.Fatal(err)
		}
	})
	if n > 50 {
		t.Fatalf("%.0f allocations to decode %d records", n, len(batch))
	}
}

// TestIncompressibleSkip: a sender whose request zstd could not shrink
// sends its next requests uncompressed without trying, then tries again;
// compressible requests are always compressed. Every request is valid.
func TestIncompressibleSkip(t *testing.T) {
	codecs := func(req *varvev1.ProduceRequest) (zstd, none int) {
		for _, e := range req.Batches {
			info, err := segment.ValidateBatches(e.RecordBatches, segment.BatchLimits{Strict: true, Produced: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range info.Batches {
				if b.Compression == segment.CompressionZstd {
					zstd++
				} else {
					none++
				}
			}
		}
		return zstd, none
	}
	var cs compressState
	batch, parts := benchPending("random")
	for _, p := range batch {
		// 3% of each value compressible: zstd shrinks the batches a little.
		clear(p.rec.Value[:30])
	}
	for i := range 2 * (incompressibleSkip + 1) {
		var req varvev1.ProduceRequest
		if err := batchRequest(&req, batch, parts, &cs); err != nil {
			t.Fatal(err)
		}
		tried := i%(incompressibleSkip+1) == 0
		if z, n := codecs(&req); tried && n != 0 || !tried && z != 0 {
			t.Fatalf("request %d: %d batches compressed, %d not", i, z, n)
		}
		// Tried at requests 0 and 8, which set skip to 7 again.
		if want := incompressibleSkip - i%(incompressibleSkip+1); cs.skip != want {
			t.Fatalf("after request %d: skip %d, want %d", i, cs.skip, want)
		}
	}
	cs = compressState{}
	batch, parts = benchPending("json")
	for i := range 3 {
		var req varvev1.ProduceRequest
		if err := batchRequest(&req, batch, parts, &cs); err != nil {
			t.Fatal(err)
		}
		if z, n := codecs(&req); n != 0 || z == 0 || cs.skip != 0 {
			t.Fatalf("json request %d: %d batches compressed, %d not, skip %d", i, z, n, cs.skip)
		}
	}
}
