package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchReq is a Fetch v12 of the given session for topic's partitions
// from offset 0 (none: an incremental fetch changing nothing).
func fetchReq(session, epoch int32, wait time.Duration, topic string, parts ...int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version = 12
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(wait / time.Millisecond)
	req.MinBytes = 1
	req.MaxBytes = 1 << 20
	req.SessionID, req.SessionEpoch = session, epoch
	if len(parts) > 0 {
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		for _, p := range parts {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition = p
			rp.FetchOffset = 0
			rp.LogStartOffset = -1
			rp.PartitionMaxBytes = 1 << 20
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	return req
}

func partitionsOf(resp *kmsg.FetchResponse) map[int32]kmsg.FetchResponseTopicPartition {
	out := map[int32]kmsg.FetchResponseTopicPartition{}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			out[p.Partition] = p
		}
	}
	return out
}

// TestFetchSessions: a full fetch opens an incremental fetch session
// (KIP-227); an incremental fetch answers only the partitions with
// something new; forgotten partitions leave it; a wrong epoch or an
// unknown session is refused with Kafka's codes; epoch -1 closes it.
func TestFetchSessions(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "sess", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := newClient(t, d)
	b := cl.Broker(int(onlyBrokerID(t, cl)))
	produce := func(p int32, v string) {
		t.Helper()
		pr := newClient(t, d, kgo.DefaultProduceTopic("sess"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err := pr.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, "a")

	kr, err := b.Request(ctx, fetchReq(0, 0, 0, "sess", 0, 1, 2))
	if err != nil {
		t.Fatal(err)
	}
	full := kr.(*kmsg.FetchResponse)
	if full.ErrorCode != 0 || full.SessionID == 0 {
		t.Fatalf("full fetch: error %d, session %d; want a new session", full.ErrorCode, full.SessionID)
	}
	if ps := partitionsOf(full); len(ps) != 3 || len(ps[0].RecordBatches) == 0 || ps[0].HighWatermark != 1 {
		t.Fatalf("full fetch answered %+v; want every partition, records of 0", ps)
	}
	id := full.SessionID

	// Nothing changed: an incremental fetch with a short wait answers no
	// partition.
	kr, err = b.Request(ctx, fetchReq(id, 1, 100*time.Millisecond, "sess"))
	if err != nil {
		t.Fatal(err)
	}
	if r := kr.(*kmsg.FetchResponse); r.ErrorCode != 0 || len(partitionsOf(r)) != 1 {
		// Partition 0 is answered again: the session still fetches it
		// from offset 0 (the client did not move it), so it has records.
		t.Fatalf("incremental fetch: error %d, partitions %v; want only partition 0", r.ErrorCode, partitionsOf(r))
	}
	// Forget partition 0; a record on 2 wakes the long poll and is the
	// only partition answered.
	req := fetchReq(id, 2, 20*time.Second, "sess")
	ft := kmsg.NewFetchRequestForgottenTopic()
	ft.Topic, ft.Partitions = "sess", []int32{0}
	req.ForgottenTopics = append(req.ForgottenTopics, ft)
	done := fetchAsync(ctx, t, b, req)
	select { // the fetch waits (with nothing new, it must not answer)
	case r := <-done:
		t.Fatalf("the incremental fetch answered before any record: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	produce(2, "c")
	r := <-done
	if r == nil {
		t.FailNow()
	}
	if ps := partitionsOf(r); r.ErrorCode != 0 || len(ps) != 1 || len(ps[2].RecordBatches) == 0 || ps[2].HighWatermark != 1 {
		t.Fatalf("woken fetch: error %d, partitions %+v; want only partition 2 with its record", r.ErrorCode, ps)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("the long poll answered %v after the produce: not woken by it", waited)
	}

	// A wrong epoch, an unknown session.
	kr, err = b.Request(ctx, fetchReq(id, 7, 0, "sess"))
	if err != nil {
		t.Fatal(err)
	}
	if code := kr.(*kmsg.FetchResponse).ErrorCode; code != kerr.InvalidFetchSessionEpoch.Code {
		t.Fatalf("wrong epoch: error %d, want INVALID_FETCH_SESSION_EPOCH", code)
	}
	kr, err = b.Request(ctx, fetchReq(id+1, 1, 0, "sess"))
	if err != nil {
		t.Fatal(err)
	}
	if code := kr.(*kmsg.FetchResponse).ErrorCode; code != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("unknown session: error %d, want FETCH_SESSION_ID_NOT_FOUND", code)
	}
	// Epoch -1 closes the session (a sessionless full fetch).
	kr, err = b.Request(ctx, fetchReq(id, -1, 0, "sess", 0))
	if err != nil {
		t.Fatal(err)
	}
	if r := kr.(*kmsg.FetchResponse); r.ErrorCode != 0 || r.SessionID != 0 {
		t.Fatalf("closing fetch: error %d session %d", r.ErrorCode, r.SessionID)
	}
	kr, err = b.Request(ctx, fetchReq(id, 3, 0, "sess"))
	if err != nil {
		t.Fatal(err)
	}
	if code := kr.(*kmsg.FetchResponse).ErrorCode; code != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("closed session: error %d, want FETCH_SESSION_ID_NOT_FOUND", code)
	}
}

// TestFetchManyTopicsWaits: a fetch of partitions of two topics waits
// for either and is woken by a record of the second.
func TestFetchManyTopicsWaits(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "one", 1)
	createTopic(t, d, "two", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := newClient(t, d)
	b := cl.Broker(int(onlyBrokerID(t, cl)))
	req := fetchReq(0, -1, 20*time.Second, "one", 0)
	two := fetchReq(0, -1, 0, "two", 0)
	req.Topics = append(req.Topics, two.Topics...)
	done := fetchAsync(ctx, t, b, req)
	select { // the fetch waits (with no record, it must not answer)
	case r := <-done:
		t.Fatalf("the fetch of two empty topics answered before any record: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	pr := newClient(t, d, kgo.DefaultProduceTopic("two"))
	start := time.Now()
	if err := pr.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r == nil {
		t.FailNow()
	}
	got := 0
	for _, tp := range r.Topics {
		for _, p := range tp.Partitions {
			if p.ErrorCode != 0 {
				t.Fatalf("%s/%d: error %d", tp.Topic, p.Partition, p.ErrorCode)
			}
			if len(p.RecordBatches) > 0 {
				if tp.Topic != "two" {
					t.Fatalf("records of %s", tp.Topic)
				}
				got++
			}
		}
	}
	if got != 1 || time.Since(start) > 10*time.Second {
		t.Fatalf("answer %+v after %v; want the record of two, woken by it", r.Topics, time.Since(start))
	}
}

// onlyBrokerID is the id of the one broker cl knows.
func onlyBrokerID(t testing.TB, cl *kgo.Client) int32 {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	kr, err := req.RequestWith(context.Background(), cl)
	if err != nil || len(kr.Brokers) == 0 {
		t.Fatalf("metadata: %v %v", kr, err)
	}
	return kr.Brokers[0].NodeID
}

// TestFetchMinBytes: a fetch waits until its partitions hold min bytes,
// woken by the records that make them up, not by the first one.
func TestFetchMinBytes(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "minb", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pr := newClient(t, d, kgo.DefaultProduceTopic("minb"), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err := pr.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte("small")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, d)
	b := cl.Broker(int(onlyBrokerID(t, cl)))
	req := fetchReq(0, -1, 20*time.Second, "minb", 0, 1)
	req.MinBytes = 4096
	done := fetchAsync(ctx, t, b, req)
	select {
	case r := <-done:
		t.Fatalf("answered with %d partitions before min bytes: %+v", len(partitionsOf(r)), r)
	case <-time.After(500 * time.Millisecond):
	}
	start := time.Now()
	if err := pr.ProduceSync(ctx, &kgo.Record{Partition: 1, Value: make([]byte, 5000)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r == nil {
		t.FailNow()
	}
	n := 0
	for _, p := range partitionsOf(r) {
		n += len(p.RecordBatches)
	}
	if n < 4096 || time.Since(start) > 10*time.Second {
		t.Fatalf("answered %d bytes %v after the record that made min bytes", n, time.Since(start))
	}
}

// fetchAsync sends req to b and delivers its answer (nil after an error,
// which fails t) on the channel it returns.
func fetchAsync(ctx context.Context, t *testing.T, b *kgo.Broker, req *kmsg.FetchRequest) <-chan *kmsg.FetchResponse {
	done := make(chan *kmsg.FetchResponse, 1)
	go func() {
		kr, err := b.Request(ctx, req)
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		done <- kr.(*kmsg.FetchResponse)
	}()
	return done
}
