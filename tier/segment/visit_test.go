package segment

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
)

// visitSpecs builds blocks of varied records: null and empty keys and
// values, headers with null values, repeated and random bytes (so some
// blocks are stored raw, others zstd), and offset gaps when sparse.
func visitBlocks(t *testing.T, seed uint64, sparse bool) ([]byte, []BlockInfo, [][]Record) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	var bbs []*BlockBuilder
	var want [][]Record
	for p := range int32(4) {
		bb := NewBlockBuilder("visit", p)
		var recs []Record
		n := 1 + rng.IntN(300)
		for i := range n {
			r := Record{Timestamp: 1767225600000 + int64(rng.IntN(5000)) - 2500}
			switch rng.IntN(4) {
			case 0:
			case 1:
				r.Key = []byte{}
			default:
				r.Key = []byte("key-" + strconv.Itoa(rng.IntN(50)))
			}
			switch rng.IntN(5) {
			case 0:
			case 1:
				r.Value = []byte{}
			case 2:
				r.Value = make([]byte, rng.IntN(200))
				for j := range r.Value {
					r.Value[j] = byte(rng.Uint32())
				}
			default:
				r.Value = bytes.Repeat([]byte(`{"user":"u`+strconv.Itoa(i)+`"}`), 1+rng.IntN(5))
			}
			for range rng.IntN(3) {
				h := Header{Key: "h" + strconv.Itoa(rng.IntN(3))}
				if rng.IntN(3) > 0 {
					h.Value = []byte("v" + strconv.Itoa(rng.IntN(100)))
				}
				r.Headers = append(r.Headers, h)
			}
			if sparse && rng.IntN(3) == 0 {
				r.Gap = int64(rng.IntN(1000))
			}
			bb.Append(r)
			recs = append(recs, r)
		}
		bbs = append(bbs, bb)
		want = append(want, recs)
	}
	obj, infos, err := Build(bbs)
	if err != nil {
		t.Fatal(err)
	}
	return obj, infos, want
}

func TestVisitBlockEqualsDecodeBlock(t *testing.T) {
	for _, sparse := range []bool{false, true} {
		for seed := range uint64(20) {
			obj, infos, _ := visitBlocks(t, seed, sparse)
			for _, bi := range infos {
				b := obj[bi.Offset : bi.Offset+bi.Length]
				recs, err := DecodeBlock(b)
				if err != nil {
					t.Fatal(err)
				}
				base := int64(1000 * (seed + 1))
				offs := Offsets(base, recs)
				var got []Record
				var gotOffs []int64
				n, err := VisitBlock(b, base, func(v *RecordView) error {
					if v.Index != len(got) {
						t.Fatalf("index %d, want %d", v.Index, len(got))
					}
					r := Record{Timestamp: v.Timestamp, Key: clone(v.Key), Value: clone(v.Value)}
					v.EachHeader(func(k, val []byte) { r.Headers = append(r.Headers, Header{Key: string(k), Value: clone(val)}) })
					if len(r.Headers) != v.NumHeaders {
						t.Fatalf("%d headers, NumHeaders %d", len(r.Headers), v.NumHeaders)
					}
					got = append(got, r)
					gotOffs = append(gotOffs, v.Offset)
					return nil
				})
				if err != nil || n != len(recs) {
					t.Fatalf("VisitBlock: %d records, %v; want %d", n, err, len(recs))
				}
				for i := range recs {
					recs[i].Gap = 0
				}
				if d := diffRecords(recs, got); d != "" {
					t.Fatalf("sparse %v seed %d block %s/%d: %s", sparse, seed, bi.Topic, bi.Partition, d)
				}
				for i := range offs {
					if offs[i] != gotOffs[i] {
						t.Fatalf("record %d: offset %d, want %d", i, gotOffs[i], offs[i])
					}
				}
			}
		}
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// TestVisitBlockRejectsWhatDecodeBlockRejects flips every byte of blocks
// (a few positions each): VisitBlock fails exactly when DecodeBlock does.
func TestVisitBlockRejectsWhatDecodeBlockRejects(t *testing.T) {
	obj, infos, _ := visitBlocks(t, 99, true)
	for _, bi := range infos {
		orig := obj[bi.Offset : bi.Offset+bi.Length]
		for i := 0; i < len(orig); i += 1 + len(orig)/64 {
			b := append([]byte{}, orig...)
			b[i] ^= 0x5a
			_, derr := DecodeBlock(b)
			_, verr := VisitBlock(b, 0, func(*RecordView) error { return nil })
			if (derr == nil) != (verr == nil) {
				t.Fatalf("byte %d flipped: DecodeBlock %v, VisitBlock %v", i, derr, verr)
			}
			if verr != nil && !errors.Is(verr, ErrCorrupt) {
				t.Fatalf("byte %d flipped: %v does not wrap ErrCorrupt", i, verr)
			}
		}
		if _, err := VisitBlock(orig[:len(orig)-1], 0, func(*RecordView) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated block: %v", err)
		}
	}
	// An error from the callback stops the walk and comes back as is.
	stop := errors.New("stop")
	calls := 0
	_, err := VisitBlock(obj[infos[0].Offset:infos[0].Offset+infos[0].Length], 0, func(*RecordView) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("callback error: %v after %d calls", err, calls)
	}
}

func BenchmarkVisitBlock(b *testing.B) {
	t := &testing.T{}
	obj, infos, _ := visitBlocks(t, 1, false)
	var raw int64
	for _, bi := range infos {
		raw += bi.RawBytes
	}
	b.SetBytes(raw)
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			for _, bi := range infos {
				if _, err := DecodeBlock(obj[bi.Offset : bi.Offset+bi.Length]); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("visit", func(b *testing.B) {
		for b.Loop() {
			for _, bi := range infos {
				if _, err := VisitBlock(obj[bi.Offset:bi.Offset+bi.Length], 0, func(*RecordView) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
