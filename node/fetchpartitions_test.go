package node_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/tier/segment"
	"github.com/varve-io/varve/tier/segment/kafkabatch"
)

func fetchParts(ps ...int32) []*varvev1.FetchPartition {
	out := make([]*varvev1.FetchPartition, len(ps))
	for i, p := range ps {
		out[i] = &varvev1.FetchPartition{Partition: p}
	}
	return out
}

// produceTo appends n records of value size bytes to each of partitions in
// one Produce per partition.
func produceTo(t *testing.T, n *testNode, topic string, records, size int, partitions ...int32) {
	t.Helper()
	for _, p := range partitions {
		req := &varvev1.ProduceRequest{Topic: topic}
		for i := range records {
			v := bytes.Repeat([]byte{'a' + byte(i%26)}, size)
			req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: v}})
		}
		if _, err := n.c.produce.Produce(context.Background(), connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFetchPartitionsBadInput: every malformed FetchPartitions is refused
// as a whole with a precise error, and changes nothing.
func TestFetchPartitionsBadInput(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "good", 2)
	produceTo(t, n, "good", 1, 1, 0)
	many := make([]int32, 10_001)
	for i := range many {
		many[i] = int32(i % 2)
	}
	cases := []struct {
		name string
		req  *varvev1.FetchPartitionsRequest
		code connect.Code
	}{
		{"unknown topic", &varvev1.FetchPartitionsRequest{Topic: "nope", Partitions: fetchParts(0)}, connect.CodeNotFound},
		{"no partitions", &varvev1.FetchPartitionsRequest{Topic: "good"}, connect.CodeInvalidArgument},
		{"partition listed twice", &varvev1.FetchPartitionsRequest{Topic: "good", Partitions: fetchParts(0, 1, 0)}, connect.CodeInvalidArgument},
		{"partition out of range", &varvev1.FetchPartitionsRequest{Topic: "good", Partitions: fetchParts(0, 2)}, connect.CodeInvalidArgument},
		{"negative partition", &varvev1.FetchPartitionsRequest{Topic: "good", Partitions: fetchParts(-1, 0)}, connect.CodeInvalidArgument},
		{"too many partitions", &varvev1.FetchPartitionsRequest{Topic: "good", Partitions: fetchParts(many...)}, connect.CodeInvalidArgument},
		{"negative max_bytes", &varvev1.FetchPartitionsRequest{Topic: "good", Partitions: fetchParts(0), MaxBytes: -1}, connect.CodeInvalidArgument},
		{"negative partition max_bytes", &varvev1.FetchPartitionsRequest{Topic: "good", Partitions: []*varvev1.FetchPartition{{Partition: 0, MaxBytes: -1}}}, connect.CodeInvalidArgument},
		{"negative max_wait_ms", &varvev1.FetchPartitionsRequest{Topic: "good", Partitions: fetchParts(0), MaxWaitMs: -1}, connect.CodeInvalidArgument},
	}
	before := state(t, n)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := n.c.fetch.FetchPartitions(ctx, connect.NewRequest(tc.req))
			if got := connect.CodeOf(err); got != tc.code {
				t.Fatalf("code %v (%v, %v), want %v", got, err, res, tc.code)
			}
			if len(err.Error()) < 30 {
				t.Fatalf("error message %q is not precise", err)
			}
			if after := state(t, n); after != before {
				t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestFetchPartitionsPartitionErrors: an offset outside the log fails its
// partition alone (OUT_OF_RANGE with a message naming it); the others get
// their records.
func TestFetchPartitionsPartitionErrors(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "mixed", 4)
	produceTo(t, n, "mixed", 5, 10, 0, 1, 2, 3)
	res, err := n.c.fetch.FetchPartitions(ctx, connect.NewRequest(&varvev1.FetchPartitionsRequest{Topic: "mixed", MaxWaitMs: 5000,
		Partitions: []*varvev1.FetchPartition{{Partition: 2, Offset: 1}, {Partition: 0, Offset: 99}, {Partition: 3, Offset: -1}, {Partition: 1, Offset: 5}}}))
	if err != nil {
		t.Fatal(err)
	}
	got := res.Msg.GetPartitions()
	if len(got) != 4 {
		t.Fatalf("%d results, want 4: %v", len(got), got)
	}
	if r := got[0]; r.GetPartition() != 2 || r.GetError() != nil || len(r.GetRecords()) != 4 || r.GetRecords()[0].GetOffset() != 1 || r.GetNextOffset() != 5 || r.GetHighWatermark() != 5 {
		t.Errorf("partition 2 from 1: %v", r)
	}
	for _, r := range got[1:3] {
		if e := r.GetError(); e == nil || connect.Code(e.GetCode()) != connect.CodeOutOfRange || len(r.GetRecords()) != 0 ||
			!bytes.Contains([]byte(e.GetMessage()), fmt.Appendf(nil, "mixed/%d", r.GetPartition())) {
			t.Errorf("partition %d: want OUT_OF_RANGE naming it, got %v", r.GetPartition(), r)
		}
	}
	// At the end of its log: no records and no error, answered at once
	// since others had records or errors.
	if r := got[3]; r.GetPartition() != 1 || r.GetError() != nil || len(r.GetRecords()) != 0 || r.GetNextOffset() != 5 || r.GetHighWatermark() != 5 {
		t.Errorf("partition 1 at its end: %v", r)
	}
}

// TestFetchPartitionsLongPoll: a call over many partitions at their end
// waits (it is parked, not answered) until one of them gets a record, and
// then answers at once with that record; with nothing new it ends at
// max_wait_ms.
func TestFetchPartitionsLongPoll(t *testing.T) {
	n := startNode(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const parts = 200
	createTopic(t, n.c, "quiet", parts)
	for _, batches := range []bool{false, true} {
		t.Run(fmt.Sprintf("record_batches=%v", batches), func(t *testing.T) {
			fams, _ := scrape(t, n.Addr())
			waiting0 := gaugeValue(fams, "varve_fetch_waiting")
			hwm := int64(0)
			if batches {
				hwm = 1 // the first subtest's record
			}
			req := &varvev1.FetchPartitionsRequest{Topic: "quiet", MaxWaitMs: 30_000, RecordBatches: batches}
			for p := range int32(parts) {
				off := int64(0)
				if p == 137 {
					off = hwm
				}
				req.Partitions = append(req.Partitions, &varvev1.FetchPartition{Partition: p, Offset: off})
			}
			type answer struct {
				res *connect.Response[varvev1.FetchPartitionsResponse]
				err error
			}
			got := make(chan answer, 1)
			go func() {
				r, err := n.c.fetch.FetchPartitions(ctx, connect.NewRequest(req))
				got <- answer{r, err}
			}()
			// Parked: the node counts one more long-poll waiting.
			if !testenv.EventuallyEvery(20*time.Second, 10*time.Millisecond, func() bool {
				fams, _ := scrape(t, n.Addr())
				return gaugeValue(fams, "varve_fetch_waiting") == waiting0+1
			}) {
				t.Fatal("the call never parked")
			}
			select {
			case a := <-got:
				t.Fatalf("answered before any record: %v %v", a.res, a.err)
			default:
			}
			start := time.Now()
			produceTo(t, n, "quiet", 1, 5, 137)
			a := <-got
			if a.err != nil {
				t.Fatal(a.err)
			}
			if waited := time.Since(start); waited > 10*time.Second {
				t.Fatalf("answered %v after the record: not woken", waited)
			}
			rs := a.res.Msg.GetPartitions()
			if len(rs) != parts {
				t.Fatalf("%d results, want %d", len(rs), parts)
			}
			for i, r := range rs {
				if r.GetPartition() != int32(i) || r.GetError() != nil {
					t.Fatalf("result %d: %v", i, r)
				}
				n := len(r.GetRecords())
				if batches {
					n = countBatchRecords(t, r.GetRecordBatches(), req.Partitions[i].Offset)
				}
				want := 0
				if i == 137 {
					want = 1
				}
				if n != want {
					t.Fatalf("partition %d: %d records, want %d: %v", i, n, want, r)
				}
				if i == 137 && (r.GetNextOffset() != hwm+1 || r.GetHighWatermark() != hwm+1) {
					t.Fatalf("partition 137: %v", r)
				}
				if i != 137 && (r.GetNextOffset() != 0 || r.GetHighWatermark() != 0) {
					t.Fatalf("partition %d: %v", i, r)
				}
			}
		})
	}
	// Nothing new anywhere: the call ends at max_wait_ms with no records.
	start := time.Now()
	res, err := n.c.fetch.FetchPartitions(ctx, connect.NewRequest(&varvev1.FetchPartitionsRequest{Topic: "quiet", MaxWaitMs: 200,
		Partitions: []*varvev1.FetchPartition{{Partition: 137, Offset: 2}, {Partition: 3}}}))
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("answered after %v, before max_wait_ms", waited)
	}
	for _, r := range res.Msg.GetPartitions() {
		if len(r.GetRecords()) != 0 || r.GetError() != nil {
			t.Fatalf("empty long poll: %v", r)
		}
	}
}

// TestFetchPartitionsMaxBytes: each partition stops at its max_bytes, and
// the call at the total max_bytes (the partition reaching it still gets
// its first record; the ones after it get none, at their offset).
func TestFetchPartitionsMaxBytes(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "sized", 4)
	// 10 records of 1,000 bytes per partition: 1,032 bytes each as the
	// node measures them (payload plus 32).
	produceTo(t, n, "sized", 10, 1000, 0, 1, 2, 3)
	fetch := func(total int32, per int32) []*varvev1.FetchPartitionResult {
		t.Helper()
		req := &varvev1.FetchPartitionsRequest{Topic: "sized", MaxBytes: total}
		for _, p := range []int32{0, 1, 2, 3} {
			req.Partitions = append(req.Partitions, &varvev1.FetchPartition{Partition: p, MaxBytes: per})
		}
		res, err := n.c.fetch.FetchPartitions(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg.GetPartitions()
	}
	counts := func(rs []*varvev1.FetchPartitionResult) []int {
		out := make([]int, len(rs))
		for i, r := range rs {
			out[i] = len(r.GetRecords())
			if r.GetError() != nil || r.GetNextOffset() != int64(out[i]) || r.GetHighWatermark() != 10 {
				t.Errorf("partition %d: %v", r.GetPartition(), r)
			}
		}
		return out
	}
	// Per partition: 3,000 bytes hold 2 records; no total limit to speak of.
	if got := counts(fetch(0, 3000)); fmt.Sprint(got) != "[2 2 2 2]" {
		t.Errorf("max_bytes 3000 per partition: records %v, want [2 2 2 2]", got)
	}
	// A total of 5,000: 2 + 2 records, the third partition its first
	// record (over the total), the fourth none.
	if got := counts(fetch(5000, 3000)); fmt.Sprint(got) != "[2 2 1 0]" {
		t.Errorf("total 5000: records %v, want [2 2 1 0]", got)
	}
	// Limits smaller than one record still return one (the first
	// partition's), as Fetch.
	if got := counts(fetch(1, 1)); fmt.Sprint(got) != "[1 0 0 0]" {
		t.Errorf("total 1: records %v, want [1 0 0 0]", got)
	}
	// Default limits (1 MiB per partition, the node's 50 MiB total): all.
	if got := counts(fetch(0, 0)); fmt.Sprint(got) != "[10 10 10 10]" {
		t.Errorf("default limits: records %v, want all", got)
	}
}

// TestFetchPartitionsRecordBatches: the batch form answers each
// partition's stored blocks from its offset (whole batches: the first may
// start before it), a block per partition at a tiny max_bytes.
func TestFetchPartitionsRecordBatches(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "stored", 3)
	for range 3 { // three blocks per partition
		produceTo(t, n, "stored", 4, 10, 0, 1, 2)
	}
	req := &varvev1.FetchPartitionsRequest{Topic: "stored", RecordBatches: true, Partitions: []*varvev1.FetchPartition{
		{Partition: 0, Offset: 0}, {Partition: 1, Offset: 6, MaxBytes: 1}, {Partition: 2, Offset: 11},
	}}
	res, err := n.c.fetch.FetchPartitions(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		records int
		next    int64
	}{{12, 12}, {2, 8}, {1, 12}} // partition 1: the rest of its second block only
	for i, r := range res.Msg.GetPartitions() {
		if len(r.GetRecords()) != 0 || r.GetError() != nil {
			t.Fatalf("partition %d: %v", r.GetPartition(), r)
		}
		if got := countBatchRecords(t, r.GetRecordBatches(), req.Partitions[i].Offset); got != want[i].records || r.GetNextOffset() != want[i].next || r.GetHighWatermark() != 12 {
			t.Errorf("partition %d: %d records next %d hwm %d, want %d records next %d hwm 12", r.GetPartition(), got, r.GetNextOffset(), r.GetHighWatermark(), want[i].records, want[i].next)
		}
	}
	// The per-topic counters count what FetchPartitions served.
	fams, _ := scrape(t, n.Addr())
	if got := counterValue(fams, "varve_topic_fetched_records_total", map[string]string{"topic": "stored"}); got != 15 {
		t.Errorf("varve_topic_fetched_records_total{topic=stored} = %v, want 15", got)
	}
	if got := counterValue(fams, "varve_served_bytes_total", map[string]string{"procedure": "/varve.v1.FetchService/FetchPartitions"}); got <= 0 {
		t.Errorf("varve_served_bytes_total{procedure=FetchPartitions} = %v", got)
	}
}

// countBatchRecords decodes Kafka record batches and counts the records
// at or after from, checking they are dense from there.
func countBatchRecords(t *testing.T, b []byte, from int64) int {
	t.Helper()
	n := 0
	next := from
	if err := segment.VisitBatches(b, from, func(off int64, _ *kafkabatch.Record) {
		if off != next {
			t.Errorf("record at %d, want %d", off, next)
		}
		next = off + 1
		n++
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func gaugeValue(fams map[string]*dto.MetricFamily, name string) float64 {
	var v float64
	for _, m := range series(fams, name, nil) {
		v += m.GetGauge().GetValue()
	}
	return v
}
