package segment

import (
	"fmt"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// flushBytes is the benchmark's flush size: one ingest flush, 8 MiB of
// records spread over partitions.
const flushBytes = 8 << 20

type dataset struct {
	name  string
	specs func() []blockSpec
}

var datasets = []dataset{
	// 64 partitions: blocks of about 128 KiB, a busy node's flush.
	{"json", sync.OnceValue(func() []blockSpec { return jsonSpecs(42, 64, flushBytes) })},
	// One partition: one 8 MiB block, no parallelism in Build.
	{"json-1p", sync.OnceValue(func() []blockSpec { return jsonSpecs(42, 1, flushBytes) })},
	{"random", sync.OnceValue(func() []blockSpec { return randomSpecs(42, 64, flushBytes) })},
}

var levels = []struct {
	name  string
	level zstd.EncoderLevel
}{
	{"fastest", zstd.SpeedFastest},
	{"default", zstd.SpeedDefault},
}

var encoders sync.Map // zstd.EncoderLevel → *zstd.Encoder

func encoderFor(l zstd.EncoderLevel) *zstd.Encoder {
	if l == encoderLevel {
		return encoder()
	}
	e, _ := encoders.LoadOrStore(l, sync.OnceValue(func() *zstd.Encoder { return newEncoder(l) }))
	return e.(func() *zstd.Encoder)()
}

func rawSize(bs []*BlockBuilder) int64 {
	var n int64
	for _, b := range bs {
		n += int64(b.RawBytes())
	}
	return n
}

// BenchmarkBuild measures Build (compression of every block in parallel
// and assembly) in uncompressed MB/s, and reports the compression ratio.
func BenchmarkBuild(b *testing.B) {
	for _, ds := range datasets {
		for _, lv := range levels {
			b.Run(ds.name+"/"+lv.name, func(b *testing.B) {
				bs := builders(ds.specs())
				enc := encoderFor(lv.level)
				raw := rawSize(bs)
				b.SetBytes(raw)
				b.ReportAllocs()
				var obj []byte
				for b.Loop() {
					var err error
					if obj, _, err = build(bs, enc); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(raw)/float64(len(obj)), "ratio")
			})
		}
	}
}

// BenchmarkDecodeBlock measures DecodeBlock on every block of a flush, one
// after the other on one goroutine (a fetch node decodes blocks of
// different requests in parallel), in uncompressed MB/s.
func BenchmarkDecodeBlock(b *testing.B) {
	for _, ds := range datasets {
		for _, lv := range levels {
			b.Run(ds.name+"/"+lv.name, func(b *testing.B) {
				bs := builders(ds.specs())
				obj, infos, err := build(bs, encoderFor(lv.level))
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(rawSize(bs))
				b.ReportAllocs()
				for b.Loop() {
					for _, bi := range infos {
						if _, err := DecodeBlock(obj[bi.Offset : bi.Offset+bi.Length]); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkDecode measures Decode, which verifies a whole object and
// decodes its blocks over GOMAXPROCS goroutines (compaction's read).
func BenchmarkDecode(b *testing.B) {
	for _, ds := range datasets[:1] {
		b.Run(ds.name, func(b *testing.B) {
			bs := builders(ds.specs())
			obj, _, err := Build(bs)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(rawSize(bs))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := Decode(obj); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompressionRatio reports raw/stored bytes for the JSON events by
// level and by block size (the same 8 MiB flush over more or fewer
// partitions). Time per op is Build's.
func BenchmarkCompressionRatio(b *testing.B) {
	for _, lv := range levels {
		for _, parts := range []int{512, 64, 8, 1} {
			specs := jsonSpecs(42, parts, flushBytes)
			bs := builders(specs)
			raw := rawSize(bs)
			b.Run(fmt.Sprintf("%s/block=%dKiB", lv.name, raw/int64(len(bs))>>10), func(b *testing.B) {
				enc := encoderFor(lv.level)
				var obj []byte
				for b.Loop() {
					obj, _, _ = build(bs, enc)
				}
				b.ReportMetric(float64(raw)/float64(len(obj)), "ratio")
			})
		}
	}
}

// TestCompressionRatio logs the ratios (go test -v -run CompressionRatio)
// and checks that JSON compresses and random bytes are stored raw.
func TestCompressionRatio(t *testing.T) {
	for _, ds := range datasets {
		if testing.Short() && ds.name != "json" {
			continue
		}
		bs := builders(ds.specs())
		obj, infos, err := Build(bs)
		if err != nil {
			t.Fatal(err)
		}
		ratio := float64(rawSize(bs)) / float64(len(obj))
		t.Logf("%s: %d records in %d blocks, %d raw bytes, %d stored: ratio %.2f",
			ds.name, func() (n int64) {
				for _, bi := range infos {
					n += bi.Records
				}
				return n
			}(), len(infos), rawSize(bs), len(obj), ratio)
		switch ds.name {
		case "random":
			if ratio > 1 || float64(len(obj)) > float64(rawSize(bs))*1.01 {
				t.Errorf("random data: ratio %.3f, stored %d for %d raw", ratio, len(obj), rawSize(bs))
			}
		default:
			if ratio < 3 {
				t.Errorf("%s: ratio %.2f, want at least 3", ds.name, ratio)
			}
		}
	}
}
