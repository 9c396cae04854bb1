package segment

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"
)

func manyPartitions(topics, partitions, perBlock int) []blockSpec {
	var specs []blockSpec
	ts := int64(1_700_000_000_000)
	for t := range topics {
		for p := range partitions {
			s := blockSpec{topic: fmt.Sprintf("topic-%d", t), partition: int32(p)}
			for i := range perBlock {
				ts++
				s.recs = append(s.recs, Record{Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("value %d/%d/%d", t, p, i)), Timestamp: ts})
			}
			specs = append(specs, s)
		}
	}
	return specs
}

func roundTripCases() []struct {
	name  string
	specs []blockSpec
} {
	rng := rand.New(rand.NewSource(1))
	binKey := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }

	var many []Record
	for i := range 100_000 {
		many = append(many, Record{Key: []byte(fmt.Sprintf("key-%d", i%977)), Value: []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", i%50))), Timestamp: 1_700_000_000_000 + int64(i/10)})
	}
	var binRecs []Record
	for i := range 200 {
		binRecs = append(binRecs, Record{Key: binKey(i % 40), Value: binKey(i * 7 % 300), Timestamp: int64(i)})
	}
	binRecs = append(binRecs, Record{Key: []byte{0}, Value: []byte{0xff, 0, 0x80}, Timestamp: 5})
	var random []Record
	for range 50 {
		random = append(random, Record{Key: binKey(16), Value: binKey(4000), Timestamp: 1})
	}

	return []struct {
		name  string
		specs []blockSpec
	}{
		{"one record", []blockSpec{{"t", 0, []Record{{Key: []byte("k"), Value: []byte("v"), Timestamp: 1}}}}},
		{"null and empty key and value", []blockSpec{{"t", 1, []Record{
			{},
			{Key: []byte{}, Value: []byte{}},
			{Key: nil, Value: []byte{}},
			{Key: []byte{}, Value: nil},
			{Key: []byte("k"), Value: nil},
			{Key: nil, Value: []byte("v")},
		}}}},
		{"headers with null values", []blockSpec{{"t", 2, []Record{
			{Value: []byte("v"), Headers: []Header{{Key: "a", Value: nil}, {Key: "b", Value: []byte{}}, {Key: "c", Value: []byte("x")}}},
			{Headers: []Header{{Key: "a", Value: []byte("1")}, {Key: "a", Value: []byte("2")}, {Key: "", Value: nil}}},
			{Headers: []Header{{Key: strings.Repeat("h", 300), Value: bytes.Repeat([]byte{1}, 70000)}}},
			{Key: []byte("no headers")},
		}}}},
		{"negative and huge timestamps", []blockSpec{{"t", 3, []Record{
			{Timestamp: 0}, {Timestamp: -1}, {Timestamp: math.MaxInt64}, {Timestamp: math.MinInt64},
			{Timestamp: 1 << 62}, {Timestamp: -(1 << 62)}, {Timestamp: 1_772_323_200_000},
		}}}},
		{"min timestamp first", []blockSpec{{"t", 3, []Record{{Timestamp: math.MinInt64}, {Timestamp: math.MaxInt64}}}}},
		{"unsorted timestamps", []blockSpec{{"t", 4, []Record{
			{Timestamp: 1000}, {Timestamp: 5}, {Timestamp: 2000}, {Timestamp: 999}, {Timestamp: 1000}, {Timestamp: -3},
		}}}},
		{"100k records", []blockSpec{{"t", 5, many}}},
		{"binary keys", []blockSpec{{"bin", 6, binRecs}}},
		{"incompressible", []blockSpec{{"rnd", 0, random}}},
		{"1 partition", manyPartitions(1, 1, 3)},
		{"100 partitions", manyPartitions(1, 100, 5)},
		{"1000 partitions over 4 topics", manyPartitions(4, 250, 2)},
		{"same partition twice", []blockSpec{
			{"t", 0, []Record{{Value: []byte("a"), Timestamp: 1}}},
			{"u", 9, []Record{{Value: []byte("b"), Timestamp: 2}}},
			{"t", 0, []Record{{Value: []byte("c"), Timestamp: 3}}},
		}},
		{"max partition and long topic", []blockSpec{{strings.Repeat("T", MaxTopicLen), math.MaxInt32, []Record{{Value: []byte("x")}}}}},
		{"json flush", jsonSpecs(7, 16, 1<<20)},
		{"sparse: gaps between records", []blockSpec{{"c", 0, []Record{
			{Key: []byte("a"), Value: []byte("1"), Timestamp: 10},
			{Key: []byte("b"), Value: nil, Timestamp: 11, Gap: 4},
			{Key: []byte("c"), Value: []byte("3"), Timestamp: 9},
			{Key: []byte("a"), Value: []byte("4"), Timestamp: 12, Gap: 1 << 40},
		}}}},
		{"sparse: only the first record has a gap", []blockSpec{{"c", 0, []Record{{Key: []byte("k"), Gap: 7}, {Key: []byte("l")}}}}},
		{"sparse: largest gap", []blockSpec{{"c", 0, []Record{{Key: []byte("k"), Gap: math.MaxInt64 - 1}}}}},
		{"sparse and dense blocks of one partition", []blockSpec{
			{"c", 0, []Record{{Key: []byte("k"), Value: []byte("1")}, {Key: []byte("k"), Value: []byte("2"), Gap: 1}}},
			{"c", 0, []Record{{Key: []byte("k"), Value: []byte("3")}}},
		}},
		{"sparse: json, every other record kept", func() []blockSpec {
			specs := jsonSpecs(8, 1, 256<<10)
			var kept []Record
			for i, r := range specs[0].recs {
				if i%2 == 1 {
					r.Gap = 1
					kept = append(kept, r)
				}
			}
			specs[0].recs = kept
			return specs
		}()},
	}
}

func TestOffsets(t *testing.T) {
	recs := []Record{{Gap: 2}, {}, {Gap: 5}, {}}
	if got := Offsets(100, recs); fmt.Sprint(got) != "[102 103 109 110]" {
		t.Fatalf("Offsets = %v", got)
	}
	if got := Offsets(7, make([]Record, 3)); fmt.Sprint(got) != "[7 8 9]" {
		t.Fatalf("dense Offsets = %v", got)
	}
}

// A dense block is version 1 and a sparse one version 2; the builder
// picks by itself.
func TestBlockVersionFollowsGaps(t *testing.T) {
	for _, tc := range []struct {
		recs []Record
		want byte
	}{
		{[]Record{{Key: []byte("a")}, {Key: []byte("b")}}, BlockVersion},
		{[]Record{{Key: []byte("a")}, {Key: []byte("b"), Gap: 1}}, SparseBlockVersion},
	} {
		b := NewBlockBuilder("t", 0)
		for _, r := range tc.recs {
			b.Append(r)
		}
		obj, infos, err := Build([]*BlockBuilder{b})
		if err != nil {
			t.Fatal(err)
		}
		if v := obj[infos[0].Offset+2]; v != tc.want || b.Sparse() != (tc.want == SparseBlockVersion) {
			t.Fatalf("block version %d (sparse %v), want %d", v, b.Sparse(), tc.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			bs := builders(tc.specs)
			obj, infos, err := Build(bs)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if len(infos) != len(tc.specs) {
				t.Fatalf("%d infos for %d blocks", len(infos), len(tc.specs))
			}
			for i, s := range tc.specs {
				bi := infos[i]
				want := BlockInfo{Topic: s.topic, Partition: s.partition, Offset: bi.Offset, Length: bi.Length,
					Records: int64(len(s.recs)), RawBytes: int64(bs[i].RawBytes())}
				want.MinTimestamp, want.MaxTimestamp = s.recs[0].Timestamp, s.recs[0].Timestamp
				for _, r := range s.recs {
					want.MinTimestamp = min(want.MinTimestamp, r.Timestamp)
					want.MaxTimestamp = max(want.MaxTimestamp, r.Timestamp)
				}
				if bi != want {
					t.Fatalf("block %d info %+v, want %+v", i, bi, want)
				}
				// One block from its byte range alone, as a ranged GET returns it.
				rng := bytes.Clone(obj[bi.Offset : bi.Offset+bi.Length])
				recs, err := DecodeBlock(rng)
				if err != nil {
					t.Fatalf("DecodeBlock %d: %v", i, err)
				}
				if d := diffRecords(s.recs, recs); d != "" {
					t.Fatalf("DecodeBlock %d: %s", i, d)
				}
				fromBuilder, err := bs[i].Decode()
				if err != nil {
					t.Fatalf("BlockBuilder.Decode %d: %v", i, err)
				}
				if d := diffRecords(s.recs, fromBuilder); d != "" {
					t.Fatalf("BlockBuilder.Decode %d: %s", i, d)
				}
				if bs[i].Len() != len(s.recs) || bs[i].Topic() != s.topic || bs[i].Partition() != s.partition {
					t.Fatalf("builder %d: Len %d Topic %q Partition %d", i, bs[i].Len(), bs[i].Topic(), bs[i].Partition())
				}
				sum := 0
				for _, r := range s.recs {
					sum += EncodedSize(r)
				}
				if raw := bs[i].RawBytes(); sum < raw || sum > raw+9*len(s.recs) {
					t.Fatalf("block %d: EncodedSize sums to %d, RawBytes %d", i, sum, raw)
				}
			}

			// The footer from the tail alone, as a reader fetches it.
			fl, err := FooterSize(obj[len(obj)-TrailerSize:])
			if err != nil {
				t.Fatalf("FooterSize: %v", err)
			}
			tail := obj[int64(len(obj))-fl-TrailerSize:]
			footer, err := DecodeFooter(tail)
			if err != nil {
				t.Fatalf("DecodeFooter: %v", err)
			}
			if fmt.Sprint(footer) != fmt.Sprint(infos) {
				t.Fatalf("DecodeFooter differs from Build's infos")
			}

			gotInfos, gotRecs, err := Decode(obj)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if fmt.Sprint(gotInfos) != fmt.Sprint(infos) {
				t.Fatalf("Decode infos differ from Build's")
			}
			for i := range tc.specs {
				if d := diffRecords(tc.specs[i].recs, gotRecs[i]); d != "" {
					t.Fatalf("Decode block %d: %s", i, d)
				}
			}

			again, _, err := Build(builders(tc.specs))
			if err != nil || !bytes.Equal(again, obj) {
				t.Fatalf("Build is not deterministic (err %v)", err)
			}
		})
	}
}

func TestLayout(t *testing.T) {
	obj, infos := mustBuild(t, []blockSpec{{"t", 0, []Record{{Value: []byte("hello"), Timestamp: 42}}}})
	if string(obj[:6]) != "VARVE\x00" || binary.LittleEndian.Uint16(obj[6:]) != 1 {
		t.Fatalf("header % x", obj[:8])
	}
	if string(obj[len(obj)-6:]) != "VARVE\x00" {
		t.Fatalf("trailer % x", obj[len(obj)-TrailerSize:])
	}
	if infos[0].Offset != HeaderSize {
		t.Fatalf("first block at %d", infos[0].Offset)
	}
	blk := obj[infos[0].Offset:]
	if string(blk[:2]) != "VB" || blk[2] != BlockVersion || blk[3] != codecNone {
		t.Fatalf("block header % x", blk[:BlockHeaderSize])
	}
	if int64(binary.LittleEndian.Uint64(blk[16:])) != 42 {
		t.Fatalf("base timestamp % x", blk[16:24])
	}

	// A compressible block uses zstd and says so.
	specs := jsonSpecs(1, 1, 64<<10)
	obj, infos = mustBuild(t, specs)
	blk = obj[infos[0].Offset:]
	if blk[3] != codecZstd || infos[0].Length >= infos[0].RawBytes {
		t.Fatalf("JSON block: codec %d, %d bytes for %d raw", blk[3], infos[0].Length, infos[0].RawBytes)
	}
}

func TestDecodedRecordsOwnTheirMemory(t *testing.T) {
	for _, spec := range []blockSpec{
		{"t", 0, []Record{{Key: []byte("ab"), Value: []byte("cd"), Headers: []Header{{Key: "h", Value: []byte("ef")}}}}}, // stored raw
		jsonSpecs(3, 1, 32<<10)[0], // zstd
	} {
		obj, infos := mustBuild(t, []blockSpec{spec})
		blk := bytes.Clone(obj[infos[0].Offset : infos[0].Offset+infos[0].Length])
		recs, err := DecodeBlock(blk)
		if err != nil {
			t.Fatal(err)
		}
		for i := range blk {
			blk[i] = 0xAA // the caller reuses its read buffer
		}
		if d := diffRecords(spec.recs, recs); d != "" {
			t.Fatalf("records changed with the input buffer: %s", d)
		}
		// Appending to a decoded key must not overwrite the value after it.
		_ = append(recs[0].Key, "XXXXXXXX"...)
		if d := diffRecords(spec.recs, recs); d != "" {
			t.Fatalf("append to a key overwrote a neighbour: %s", d)
		}
	}
}

func TestBuilderInputReuse(t *testing.T) {
	b := NewBlockBuilder("t", 0)
	key, val := []byte("key"), []byte("val")
	b.Append(Record{Key: key, Value: val, Timestamp: 7})
	copy(key, "XXX")
	copy(val, "YYY")
	recs, err := b.Decode()
	if err != nil || string(recs[0].Key) != "key" || string(recs[0].Value) != "val" {
		t.Fatalf("builder kept the caller's slices: %v %q %q", err, recs[0].Key, recs[0].Value)
	}
	// Decoded records stay valid while the builder grows.
	for i := range 1000 {
		b.Append(Record{Value: bytes.Repeat([]byte{byte(i)}, 100), Timestamp: int64(i)})
	}
	if string(recs[0].Key) != "key" || string(recs[0].Value) != "val" {
		t.Fatalf("records changed after appends")
	}
	empty := NewBlockBuilder("t", 0)
	if recs, err := empty.Decode(); recs != nil || err != nil || empty.RawBytes() != 0 {
		t.Fatalf("empty builder: %v %v", recs, err)
	}
}

func TestEncodedSize(t *testing.T) {
	for _, r := range []Record{
		{},
		{Key: []byte{}, Value: []byte{}, Timestamp: 1},
		{Key: bytes.Repeat([]byte("k"), 200), Value: bytes.Repeat([]byte("v"), 20000), Timestamp: math.MinInt64,
			Headers: []Header{{Key: "a", Value: nil}, {Key: strings.Repeat("b", 130), Value: []byte("x")}}},
	} {
		b := NewBlockBuilder("t", 0)
		b.Append(r)
		// The first record's delta is 0: one byte instead of the ten counted.
		if got, want := EncodedSize(r), b.RawBytes()+9; got != want {
			t.Errorf("EncodedSize = %d, want %d", got, want)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	ok := NewBlockBuilder("t", 0)
	ok.Append(Record{Value: []byte("v")})
	withRec := func(topic string, p int32) *BlockBuilder {
		b := NewBlockBuilder(topic, p)
		b.Append(Record{})
		return b
	}
	huge := NewBlockBuilder("t", 0)
	huge.buf = make([]byte, MaxBlockRawBytes+1) // as if appended
	huge.n = 1
	for _, tc := range []struct {
		name   string
		blocks []*BlockBuilder
		want   string
	}{
		{"no blocks", nil, "no blocks"},
		{"nil block", []*BlockBuilder{ok, nil}, "block 1 is nil"},
		{"empty block", []*BlockBuilder{ok, NewBlockBuilder("t", 3)}, "block 1 (t/3) is empty"},
		{"empty topic", []*BlockBuilder{withRec("", 0)}, "topic of 0 bytes"},
		{"long topic", []*BlockBuilder{withRec(strings.Repeat("x", MaxTopicLen+1), 0)}, "topic of 256 bytes"},
		{"negative partition", []*BlockBuilder{withRec("t", -1)}, "negative partition -1"},
		{"block too large", []*BlockBuilder{huge}, "the limit is"},
		{"negative gap", []*BlockBuilder{func() *BlockBuilder {
			b := NewBlockBuilder("t", 4)
			b.Append(Record{})
			b.Append(Record{Gap: -2})
			return b
		}()}, "offset gap -2"},
		{"gaps overflow", []*BlockBuilder{func() *BlockBuilder {
			b := NewBlockBuilder("t", 4)
			b.Append(Record{Gap: math.MaxInt64 - 1})
			b.Append(Record{Gap: 1})
			return b
		}()}, "2^63-1 offsets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, infos, err := Build(tc.blocks)
			if err == nil || !strings.Contains(err.Error(), tc.want) || obj != nil || infos != nil {
				t.Fatalf("Build = %d bytes, %v, %v; want error containing %q", len(obj), infos, err, tc.want)
			}
		})
	}
}

// A Writer makes the same object as Build at the same level, one block at
// a time.
func TestWriterMatchesBuild(t *testing.T) {
	specs := append(jsonSpecs(3, 4, 256<<10), blockSpec{"c", 9, []Record{{Key: []byte("k"), Gap: 3}, {Key: []byte("k")}}})
	want, wantInfos := mustBuild(t, specs)
	w := NewWriter(LevelFastest)
	for _, b := range builders(specs) {
		if _, err := w.Add(b); err != nil {
			t.Fatal(err)
		}
	}
	got, infos, err := w.Finish()
	if err != nil || !bytes.Equal(got, want) || fmt.Sprint(infos) != fmt.Sprint(wantInfos) {
		t.Fatalf("Writer object differs from Build's (%v)", err)
	}
	// The better level decodes the same and is not larger.
	w = NewWriter(LevelDefault)
	for _, b := range builders(specs) {
		if _, err := w.Add(b); err != nil {
			t.Fatal(err)
		}
	}
	better, _, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if _, recs, err := Decode(better); err != nil || diffRecords(specs[0].recs, recs[0]) != "" || len(better) > len(want) {
		t.Fatalf("LevelDefault object: %v (%d bytes, fastest %d)", err, len(better), len(want))
	}
	if _, _, err := NewWriter(LevelDefault).Finish(); err == nil {
		t.Fatal("empty Writer finished")
	}
	w = NewWriter(LevelFastest)
	if _, err := w.Add(NewBlockBuilder("t", 0)); err == nil {
		t.Fatal("empty block added")
	}
	if _, _, err := w.Finish(); err == nil {
		t.Fatal("Writer finished after an error")
	}
}
