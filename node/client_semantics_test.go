package node_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/murmur2"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier/segment"
)

// postJSON sends a Connect JSON request, as curl or a browser client would.
func postJSON(t *testing.T, addr, procedure string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(addr+procedure, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// TestJSONProduceWithoutPartitionIsPlacedByKey: a Connect JSON record
// without "partition" is placed by murmur2 of its key on a 1,000-partition
// topic, as Kafka's default partitioner would; "partition": 0 is partition
// 0 and -1 (what older clients send) means the key decides. Before, a
// record without "partition" went to partition 0.
func TestJSONProduceWithoutPartitionIsPlacedByKey(t *testing.T) {
	n := startNode(t, nil)
	const partitions = 1000
	createTopic(t, n.c, "json", partitions)
	type rec struct {
		Partition *int32            `json:"partition,omitempty"`
		Record    map[string]string `json:"record"`
	}
	var recs []rec
	var keys []string
	for i := range 500 {
		k := fmt.Sprintf("user-%d", i)
		keys = append(keys, k)
		recs = append(recs, rec{Record: map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(k)), "value": base64.StdEncoding.EncodeToString([]byte("v"))}})
	}
	zero, minus := int32(0), int32(-1)
	abc := map[string]string{"key": base64.StdEncoding.EncodeToString([]byte("abc"))} // murmur2: 107 of 1,000
	recs = append(recs, rec{Partition: &zero, Record: abc}, rec{Partition: &minus, Record: abc})
	code, body := postJSON(t, n.Addr(), "/varve.v1.ProduceService/Produce", map[string]any{"topic": "json", "records": recs})
	if code != http.StatusOK {
		t.Fatalf("produce: %d %s", code, body)
	}
	var res struct {
		Results []struct {
			Partition int32  `json:"partition"`
			Offset    string `json:"offset"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &res); err != nil || len(res.Results) != len(recs) {
		t.Fatalf("answer %s: %v", body, err)
	}
	spread := map[int32]bool{}
	for i, k := range keys {
		want := murmur2.Partition([]byte(k), partitions)
		if got := res.Results[i].Partition; got != want {
			t.Fatalf("record %d with key %q and no partition stored in partition %d; murmur2 (Kafka's default partitioner) says %d", i, k, got, want)
		}
		spread[want] = true
	}
	if len(spread) < 300 {
		t.Fatalf("500 keys landed in only %d partitions", len(spread))
	}
	if got := res.Results[len(keys)].Partition; got != 0 {
		t.Fatalf(`"partition": 0 stored in partition %d`, got)
	}
	if got := res.Results[len(keys)+1].Partition; got != 107 {
		t.Fatalf(`"partition": -1 with key abc stored in partition %d, want 107 (murmur2)`, got)
	}
}

// TestFetchMaxBytesIsCapped: a fetch asking for 2 GiB gets at most the
// node's fetch_max_bytes; a record larger than that cap still comes back,
// alone, so a consumer makes progress. Before, max_bytes had no cap.
func TestFetchMaxBytesIsCapped(t *testing.T) {
	const capBytes = 256 << 10
	n := startNode(t, func(c *node.Config) { c.FetchMaxBytes = capBytes })
	ctx := context.Background()
	createTopic(t, n.c, "capped", 1)
	val := bytes.Repeat([]byte("x"), 32<<10)
	req := &varvev1.ProduceRequest{Topic: "capped"}
	for range 40 { // 1.25 MiB in all
		req.Records = append(req.Records, &varvev1.ProduceRecord{Record: &varvev1.Record{Value: val}})
	}
	if _, err := n.c.produce.Produce(ctx, connect.NewRequest(req)); err != nil {
		t.Fatal(err)
	}
	res, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "capped", Offset: 0, MaxBytes: 2147483647}))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, r := range res.Msg.GetRecords() {
		got += len(r.GetValue())
	}
	if got > capBytes || len(res.Msg.GetRecords()) == 0 {
		t.Fatalf("fetch with max_bytes 2 GiB returned %d records, %d bytes; fetch_max_bytes is %d", len(res.Msg.GetRecords()), got, capBytes)
	}
	// The subscription is capped the same way.
	stream, err := n.c.fetch.Subscribe(ctx, connect.NewRequest(&varvev1.SubscribeRequest{Topic: "capped", MaxBytes: 2147483647}))
	if err != nil {
		t.Fatal(err)
	}
	for stream.Receive() {
		if len(stream.Msg().GetRecords()) == 0 {
			continue
		}
		got := 0
		for _, r := range stream.Msg().GetRecords() {
			got += len(r.GetValue())
		}
		if got > capBytes {
			t.Fatalf("subscribe with max_bytes 2 GiB sent %d bytes; fetch_max_bytes is %d", got, capBytes)
		}
		break
	}
	stream.Close()

	// One record larger than the cap is returned alone.
	big := bytes.Repeat([]byte("y"), 2*capBytes)
	if _, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "capped", Records: []*varvev1.ProduceRecord{
		{Record: &varvev1.Record{Value: big}}, {Record: &varvev1.Record{Value: big}},
	}})); err != nil {
		t.Fatal(err)
	}
	res, err = n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "capped", Offset: 40, MaxBytes: 2147483647}))
	if err != nil {
		t.Fatal(err)
	}
	if recs := res.Msg.GetRecords(); len(recs) != 1 || !bytes.Equal(recs[0].GetValue(), big) || res.Msg.GetNextOffset() != 41 {
		t.Fatalf("fetch of a record larger than fetch_max_bytes: %d records, next offset %d; want that record alone", len(recs), res.Msg.GetNextOffset())
	}
}

// TestRecordLimitFitsTheRequestLimit: a topic record limit that a produce
// request could not carry (max_request_bytes less 1 MiB of envelope) is
// refused at create and alter, naming both settings, and changes nothing;
// the largest accepted limit can really be produced. With the defaults,
// the largest limit a topic may have (64 MiB) fits. Before, a 4 MiB limit
// was accepted on a node taking 4 MiB requests, and a record near it failed
// with a transport error.
func TestRecordLimitFitsTheRequestLimit(t *testing.T) {
	if d := node.DefaultConfig(); d.MaxRequestBytes < 64<<20+node.RequestEnvelopeBytes {
		t.Fatalf("default max_request_bytes %d cannot carry a 64 MiB record", d.MaxRequestBytes)
	}
	n := startNode(t, func(c *node.Config) { c.MaxRequestBytes = 4 << 20 })
	ctx := context.Background()
	cfg := func(b int32) *varvev1.TopicConfig { return &varvev1.TopicConfig{MaxRecordBytes: b} }

	_, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "toobig", Partitions: 1, Config: cfg(4 << 20)}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "max_record_bytes") || !strings.Contains(err.Error(), "max_request_bytes") {
		t.Fatalf("create with max_record_bytes 4 MiB on a node taking 4 MiB requests: %v; want INVALID_ARGUMENT naming both limits", err)
	}
	if _, err := n.c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: "toobig"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("refused topic exists: %v", err)
	}

	const limit = 3 << 20
	if _, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "fits", Partitions: 1, Config: cfg(limit)})); err != nil {
		t.Fatal(err)
	}
	_, err = n.c.topics.UpdateTopic(ctx, connect.NewRequest(&varvev1.UpdateTopicRequest{Name: "fits", MaxRecordBytes: proto.Int32(4 << 20)}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "max_request_bytes") {
		t.Fatalf("alter to max_record_bytes 4 MiB: %v; want INVALID_ARGUMENT naming max_request_bytes", err)
	}
	d, err := n.c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: "fits"}))
	if err != nil || d.Msg.GetTopic().GetConfig().GetMaxRecordBytes() != limit {
		t.Fatalf("after the refused alter: %v, max_record_bytes %d", err, d.Msg.GetTopic().GetConfig().GetMaxRecordBytes())
	}

	// The largest record the limit allows is produced.
	val := make([]byte, limit)
	for segment.EncodedSize(segment.Record{Value: val}) > limit {
		val = val[:len(val)-1]
	}
	if _, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "fits", Records: []*varvev1.ProduceRecord{{Record: &varvev1.Record{Value: val}}}})); err != nil {
		t.Fatalf("produce a record of %d bytes (the largest max_record_bytes %d allows): %v", len(val), limit, err)
	}
	// One byte more is refused by the record limit, named.
	_, err = n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "fits", Records: []*varvev1.ProduceRecord{{Record: &varvev1.Record{Value: append(val, 'x')}}}}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "max_record_bytes") {
		t.Fatalf("a record one byte over max_record_bytes: %v", err)
	}
}
