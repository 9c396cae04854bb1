package node_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/varve-io/varve/bench"
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/tier/segment"
)

// json1K is a JSON event padded to about 1 KiB with words from a small
// vocabulary (so it compresses like real events, not like zeros).
func json1K(r *rand.Rand, i int) []byte {
	words := []string{"checkout", "cart", "view", "click", "search", "home", "sale", "promo", "newsletter", "mobile", "desktop", "EUR", "USD"}
	v := bench.JSONEvent(r, i)
	v = append(v[:len(v)-1], `,"note":"`...)
	for len(v) < 1022 {
		v = append(v, words[r.IntN(len(words))]...)
		v = append(v, ' ')
	}
	return append(v[:1022], `"}`...)
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkProduceWire measures the produce path through the Connect API
// with requests of about 1 MiB (1,024 JSON records of 1 KiB, 128 per
// partition of 8), 4 producers, on a filesystem store: records (the
// per-record form) against batches (Kafka RecordBatch v2, zstd, built by
// the producer). cpu-s/MiB is the whole process (producers included).
func BenchmarkProduceWire(b *testing.B) {
	for _, form := range wireForms {
		b.Run("form="+form.name, func(b *testing.B) {
			n, _ := benchNode(b, "fs", 20*time.Millisecond, 0)
			c := newClients(n.Addr())
			ctx := context.Background()
			if _, err := c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "bench", Partitions: 8})); err != nil {
				b.Fatal(err)
			}
			const producers, perReq, parts = 4, 1024, 8
			r := rand.New(rand.NewPCG(1, 2))
			reqs := make([]*varvev1.ProduceRequest, 16)
			var reqBytes int64
			for i := range reqs {
				req := &varvev1.ProduceRequest{Topic: "bench"}
				for j := range perReq {
					v := json1K(r, j)
					reqBytes += int64(len(v))
					req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(int32(j % parts)),
						Record: &varvev1.Record{Key: fmt.Appendf(nil, "user-%d", r.IntN(10000)), Value: v, TimestampMs: time.Now().UnixMilli()}})
				}
				reqs[i] = form.build(b, req)
			}
			avgReq := reqBytes / int64(len(reqs))
			var mu sync.Mutex
			var next int64
			var wg sync.WaitGroup
			b.ResetTimer()
			cpu0 := cpuSeconds()
			start := time.Now()
			for w := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						if i >= int64(b.N) {
							break
						}
						if _, err := c.produce.Produce(ctx, connect.NewRequest(reqs[(int(i)+w)%len(reqs)])); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start).Seconds()
			cpu := cpuSeconds() - cpu0
			b.StopTimer()
			b.SetBytes(avgReq)
			mib := float64(int64(b.N)*avgReq) / (1 << 20)
			b.ReportMetric(mib/el, "MiB/s")
			b.ReportMetric(cpu/mib, "cpu-s/MiB")
		})
	}
}

type wireForm struct {
	name  string
	build func(testing.TB, *varvev1.ProduceRequest) *varvev1.ProduceRequest
}

var wireForms = []wireForm{
	{"records", func(_ testing.TB, r *varvev1.ProduceRequest) *varvev1.ProduceRequest { return r }},
	{"batches", toBatchForm},
}

// toBatchForm turns a record-form request (every record naming its
// partition) into the batch form, as the SDK builds it.
func toBatchForm(tb testing.TB, r *varvev1.ProduceRequest) *varvev1.ProduceRequest {
	tb.Helper()
	by := map[int32][]segment.Record{}
	var order []int32
	for _, pr := range r.Records {
		p := pr.GetPartition()
		if by[p] == nil {
			order = append(order, p)
		}
		rec := pr.GetRecord()
		sr := segment.Record{Key: rec.Key, Value: rec.Value, Timestamp: rec.GetTimestampMs()}
		for _, h := range rec.GetHeaders() {
			sr.Headers = append(sr.Headers, segment.Header{Key: h.GetKey(), Value: h.Value})
		}
		by[p] = append(by[p], sr)
	}
	out := &varvev1.ProduceRequest{Topic: r.Topic}
	for _, p := range order {
		b, err := segment.AppendProducerBatches(nil, by[p])
		if err != nil {
			tb.Fatal(err)
		}
		out.Batches = append(out.Batches, &varvev1.PartitionBatches{Partition: p, RecordBatches: b})
	}
	return out
}

// BenchmarkFetchWire fetches 1 MiB of a partition (1,024 JSON records of
// 1 KiB) from the node that wrote it: the per-record form (records
// decoded by the node, protobuf-encoded) against stored batches decoded
// by the client (segment.DecodeBatches, counted in the time).
func BenchmarkFetchWire(b *testing.B) {
	n, _ := benchNode(b, "fs", 5*time.Millisecond, 0)
	c := newClients(n.Addr())
	ctx := context.Background()
	if _, err := c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "f", Partitions: 1})); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	var recs []segment.Record
	var size int64
	for i := range 1024 {
		v := json1K(r, i)
		size += int64(len(v))
		recs = append(recs, segment.Record{Value: v, Timestamp: time.Now().UnixMilli()})
	}
	for range 4 {
		bs, err := segment.AppendProducerBatches(nil, recs)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "f", Batches: []*varvev1.PartitionBatches{{Partition: 0, RecordBatches: bs}}})); err != nil {
			b.Fatal(err)
		}
	}
	// Like the SDK: the batch form asks for no gzip (the batches are
	// compressed), the per-record form takes the default (gzip).
	raw := varvev1connect.NewFetchServiceClient(http.DefaultClient, n.Addr(), connect.WithAcceptCompression("gzip", nil, nil))
	for _, v := range []struct {
		name    string
		batches bool
		fc      varvev1connect.FetchServiceClient
	}{{"records/gzip", false, c.fetch}, {"records/nogzip", false, raw}, {"batches/nogzip", true, raw}} {
		batches, fc := v.batches, v.fc
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				off := int64(i%4) * 1024
				res, err := fc.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "f", Partition: 0, Offset: off, MaxBytes: 1 << 20, RecordBatches: batches}))
				if err != nil {
					b.Fatal(err)
				}
				got := len(res.Msg.Records)
				if batches {
					rs, _, err := segment.DecodeBatches(res.Msg.RecordBatches, off)
					if err != nil {
						b.Fatal(err)
					}
					got = len(rs)
				}
				if got < 900 {
					b.Fatalf("%d records at %d", got, off)
				}
			}
		})
	}
}

// BenchmarkFetchWireSmallBlocks fetches the batch form across 16 small
// blocks an answer (64 flushes of 4 JSON records of 1 KiB on one
// partition), as a tail read of a topic of many partitions does: each
// partition's blocks hold a few records, and an answer joins up to 16 of
// them.
func BenchmarkFetchWireSmallBlocks(b *testing.B) {
	n, _ := benchNode(b, "fs", time.Millisecond, 0)
	c := newClients(n.Addr())
	ctx := context.Background()
	if _, err := c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "s", Partitions: 1})); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	const flushes, per = 64, 4
	var size int64
	for i := range flushes {
		recs := make([]segment.Record, per)
		for j := range recs {
			v := json1K(r, i*per+j)
			size += int64(len(v))
			recs[j] = segment.Record{Value: v, Timestamp: time.Now().UnixMilli()}
		}
		bs, err := segment.AppendProducerBatches(nil, recs)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "s", Batches: []*varvev1.PartitionBatches{{Partition: 0, RecordBatches: bs}}})); err != nil {
			b.Fatal(err)
		}
	}
	raw := varvev1connect.NewFetchServiceClient(http.DefaultClient, n.Addr(), connect.WithAcceptCompression("gzip", nil, nil))
	b.SetBytes(size / 4)
	for i := 0; b.Loop(); i++ {
		off := int64(i%4) * 16 * per
		res, err := raw.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "s", Partition: 0, Offset: off, MaxBytes: 1 << 20, RecordBatches: true}))
		if err != nil {
			b.Fatal(err)
		}
		rs, _, err := segment.DecodeBatches(res.Msg.RecordBatches, off)
		if err != nil {
			b.Fatal(err)
		}
		if len(rs) < 16*per {
			b.Fatalf("%d records at %d, want %d", len(rs), off, 16*per)
		}
	}
}
