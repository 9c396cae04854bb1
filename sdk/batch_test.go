package sdk_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/varve-io/varve/sdk"
)

// TestBatchFormRoundTrip: records produced by the SDK (the batch form:
// zstd RecordBatch v2 per partition) and consumed by the SDK (stored
// batches, decoded here) come back identical to what Client.Fetch (the
// per-record form, decoded by the node) returns, and to what was sent:
// null and empty keys and values, headers (null values too), timestamps
// and explicit partitions, with dense offsets in send order.
func TestBatchFormRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	c := newClient(t)
	topic := uniq("batchform")
	createTopic(t, c, topic, 3)
	p := c.NewProducer(sdk.ProducerOptions{Linger: 20 * time.Millisecond})
	defer p.Close(ctx)
	ts := time.UnixMilli(1767225600123)
	var sent []sdk.Record
	for i := range 300 {
		r := sdk.Record{Topic: topic, Partition: int32(i % 3), ExplicitPartition: true, Value: bytes.Repeat([]byte{byte(i)}, i%50), Timestamp: ts.Add(time.Duration(i) * time.Millisecond)}
		switch i % 4 {
		case 0:
			r.Key = []byte{}
		case 1:
			r.Key = fmt.Appendf(nil, "k%d", i)
			r.Headers = []sdk.Header{{Key: "a", Value: nil}, {Key: "b", Value: []byte{}}, {Key: "c", Value: []byte("v")}}
		case 2:
			r.Value = nil
		}
		sent = append(sent, r)
	}
	if _, err := p.ProduceSync(ctx, sent...); err != nil {
		t.Fatal(err)
	}
	cons := c.NewConsumer(topic, sdk.ConsumerOptions{MaxWait: 50 * time.Millisecond})
	defer cons.Close()
	cons.Assign(0, 1, 2)
	if err := cons.SeekToStart(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[int32][]sdk.Record{}
	for n := 0; n < len(sent); {
		recs, err := cons.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			got[r.Partition] = append(got[r.Partition], r)
		}
		n += len(recs)
	}
	for part := int32(0); part < 3; part++ {
		res, err := c.Fetch(ctx, topic, part, 0, 1<<20, 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []sdk.Record
		for _, r := range sent {
			if r.Partition == part {
				want = append(want, r)
			}
		}
		if len(got[part]) != len(want) || len(res.Records) != len(want) {
			t.Fatalf("partition %d: consumer %d, fetch %d records, sent %d", part, len(got[part]), len(res.Records), len(want))
		}
		for i, w := range want {
			g, f := got[part][i], res.Records[i]
			if d := diffRecord(g, f); d != "" {
				t.Fatalf("partition %d record %d: consumer and fetch differ: %s", part, i, d)
			}
			w.Offset = int64(i)
			if d := diffRecord(g, w); d != "" {
				t.Fatalf("partition %d record %d: consumer and sent differ: %s", part, i, d)
			}
		}
	}
}

func diffRecord(a, b sdk.Record) string {
	eq := func(x, y []byte) bool { return (x == nil) == (y == nil) && bytes.Equal(x, y) }
	switch {
	case a.Topic != b.Topic || a.Partition != b.Partition || a.Offset != b.Offset:
		return fmt.Sprintf("place %s/%d@%d vs %s/%d@%d", a.Topic, a.Partition, a.Offset, b.Topic, b.Partition, b.Offset)
	case !eq(a.Key, b.Key):
		return fmt.Sprintf("key %q (nil %v) vs %q (nil %v)", a.Key, a.Key == nil, b.Key, b.Key == nil)
	case !eq(a.Value, b.Value):
		return fmt.Sprintf("value %q (nil %v) vs %q (nil %v)", a.Value, a.Value == nil, b.Value, b.Value == nil)
	case !a.Timestamp.Equal(b.Timestamp):
		return fmt.Sprintf("timestamp %v vs %v", a.Timestamp, b.Timestamp)
	case len(a.Headers) != len(b.Headers):
		return fmt.Sprintf("%d vs %d headers", len(a.Headers), len(b.Headers))
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !eq(a.Headers[i].Value, b.Headers[i].Value) {
			return fmt.Sprintf("header %d: %q=%q vs %q=%q", i, a.Headers[i].Key, a.Headers[i].Value, b.Headers[i].Key, b.Headers[i].Value)
		}
	}
	return ""
}
