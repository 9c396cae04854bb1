package segment

import (
	"bytes"
	"math/rand"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// produceSpecs is one 8 MiB flush of 1 KiB values over 8 partitions:
// json-like (clickstream events back to back, cut at 1 KiB) or random.
func produceSpecs(kind string) []blockSpec {
	rng := rand.New(rand.NewSource(7))
	specs := make([]blockSpec, 8)
	ts := int64(1767225600000)
	for p := range specs {
		specs[p] = blockSpec{"bench", int32(p), nil}
		for range flushBytes / 8 / 1024 {
			v := make([]byte, 0, 1100)
			var k []byte
			if kind == "random" {
				v = v[:1024]
				rng.Read(v)
			} else {
				for len(v) < 1024 {
					key, ev := jsonEvent(rng, ts)
					k = key
					v = append(v, ev...)
				}
				v = v[:1024]
			}
			ts += int64(rng.Intn(3))
			specs[p].recs = append(specs[p].recs, Record{Key: k, Value: v, Timestamp: ts})
		}
	}
	return specs
}

var produceData = map[string]func() []blockSpec{
	"json1k":   sync.OnceValue(func() []blockSpec { return produceSpecs("json") }),
	"random1k": sync.OnceValue(func() []blockSpec { return produceSpecs("random") }),
}

func recordBytes(specs []blockSpec) int64 {
	var n int64
	for _, s := range specs {
		for _, r := range s.recs {
			n += int64(len(r.Key) + len(r.Value))
		}
	}
	return n
}

// producerBatches compresses each partition's records the way a franz-go
// producer would (kgo's zstd compressor), in batches of up to 1 MiB of
// records: what a node receives on the lean path.
func producerBatches(b *testing.B, specs []blockSpec) [][]byte {
	out := make([][]byte, len(specs))
	for i, s := range specs {
		for start := 0; start < len(s.recs); {
			end, size := start, 0
			for end < len(s.recs) && size < 1<<20 {
				size += len(s.recs[end].Value) + 20
				end++
			}
			out[i] = append(out[i], kgoBatch(b, s.recs[start:end], kgo.ZstdCompression(), 1, int32(start))...)
			start = end
		}
	}
	return out
}

// BenchmarkProduceRecords is today's node path inside the segment
// package: every record appended to a version 1 BlockBuilder, then Build
// compresses the blocks (the protobuf decoding before it is not counted).
// MB/s are key+value bytes.
func BenchmarkProduceRecords(b *testing.B) {
	for _, name := range []string{"json1k", "random1k"} {
		b.Run(name, func(b *testing.B) {
			specs := produceData[name]()
			b.SetBytes(recordBytes(specs))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Build(builders(specs)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProduceBatches is the lean path: the producer's zstd batches
// are validated (cheap: headers and CRC; strict: also decompressed and
// walked), appended as bytes to version 3 builders, and Build assembles the
// object without compressing. Same records and MB/s basis as
// BenchmarkProduceRecords.
func BenchmarkProduceBatches(b *testing.B) {
	for _, name := range []string{"json1k", "random1k"} {
		for _, strict := range []bool{false, true} {
			mode := "cheap"
			if strict {
				mode = "strict"
			}
			b.Run(name+"/"+mode, func(b *testing.B) {
				specs := produceData[name]()
				in := producerBatches(b, specs)
				b.SetBytes(recordBytes(specs))
				b.ReportAllocs()
				var obj []byte
				for b.Loop() {
					bs := make([]*BlockBuilder, len(in))
					for i, batches := range in {
						info, err := ValidateBatches(batches, BatchLimits{Strict: strict})
						if err != nil {
							b.Fatal(err)
						}
						bs[i] = NewBatchBlockBuilder("bench", int32(i))
						if err := bs[i].AppendBatches(batches, &info); err != nil {
							b.Fatal(err)
						}
					}
					var err error
					if obj, _, err = Build(bs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(recordBytes(specs))/float64(len(obj)), "ratio")
			})
		}
	}
}

// BenchmarkVisitBatches compares a scan (VisitBlock) of version 1 blocks
// with version 3 blocks of the same records, and BlockBatches (the bytes a
// Kafka fetch ships).
func BenchmarkVisitBatches(b *testing.B) {
	specs := produceData["json1k"]()
	v1, infos1 := mustBuild(b, specs)
	bs := make([]*BlockBuilder, len(specs))
	for i, batches := range producerBatches(b, specs) {
		info, _ := ValidateBatches(batches, BatchLimits{})
		bs[i] = NewBatchBlockBuilder("bench", int32(i))
		_ = bs[i].AppendBatches(batches, &info)
	}
	v3, infos3, err := Build(bs)
	if err != nil {
		b.Fatal(err)
	}
	visit := func(b *testing.B, obj []byte, infos []BlockInfo) {
		b.SetBytes(recordBytes(specs))
		b.ReportAllocs()
		for b.Loop() {
			for _, bi := range infos {
				if _, err := VisitBlock(obj[bi.Offset:bi.Offset+bi.Length], 0, func(*RecordView) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("visit/v1", func(b *testing.B) { visit(b, v1, infos1) })
	b.Run("visit/v3", func(b *testing.B) { visit(b, v3, infos3) })
	b.Run("blockbatches/v3", func(b *testing.B) {
		b.SetBytes(recordBytes(specs))
		b.ReportAllocs()
		var dst []byte
		for b.Loop() {
			for _, bi := range infos3 {
				if dst, err = BlockBatches(dst[:0], v3[bi.Offset:bi.Offset+bi.Length], 100); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkAppendSmallBatches is a flush at many partitions: 1,000
// version 3 builders, one small producer batch (a record of 200 bytes)
// appended to each, then Build. Its B/op is what a flush allocates for
// blocks that hold a record or two.
func BenchmarkAppendSmallBatches(b *testing.B) {
	rec := bytes.Repeat([]byte("v"), 200)
	batches, err := AppendProducerBatches(nil, []Record{{Value: rec, Timestamp: 1}})
	if err != nil {
		b.Fatal(err)
	}
	info, err := ValidateBatches(batches, BatchLimits{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		bs := make([]*BlockBuilder, 1000)
		for i := range bs {
			bs[i] = NewBatchBlockBuilder("bench", int32(i))
			if err := bs[i].AppendBatches(batches, &info); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := Build(bs); err != nil {
			b.Fatal(err)
		}
	}
}
