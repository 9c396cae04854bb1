package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

type clients struct {
	topics  varvev1connect.TopicServiceClient
	produce varvev1connect.ProduceServiceClient
	fetch   varvev1connect.FetchServiceClient
}

func newClients(addr string) clients {
	return clients{
		topics:  varvev1connect.NewTopicServiceClient(http.DefaultClient, addr),
		produce: varvev1connect.NewProduceServiceClient(http.DefaultClient, addr),
		fetch:   varvev1connect.NewFetchServiceClient(http.DefaultClient, addr),
	}
}

type testNode struct {
	*node.Node
	rec *tier.Recorder
	dir string
	c   clients
}

// startNode runs a node with every role on a real embedded etcd and a
// recorded filesystem store.
func startNode(t *testing.T, mutate func(*node.Config)) *testNode {
	t.Helper()
	dir := t.TempDir()
	fs, err := tier.NewFS(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	rec := tier.NewRecorder(fs)
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = testenv.StartEtcd(t)
	cfg.Store = "fs:" + filepath.Join(dir, "objects")
	cfg.Linger = 20 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	n, err := node.New(context.Background(), cfg, node.Options{Store: rec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testNode{Node: n, rec: rec, dir: dir, c: newClients(n.Addr())}
}

func createTopic(t *testing.T, c clients, name string, partitions int32) {
	t.Helper()
	if _, err := c.topics.CreateTopic(context.Background(), connect.NewRequest(&varvev1.CreateTopicRequest{Name: name, Partitions: partitions})); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
}

func TestOnePutPerFlush(t *testing.T) {
	for _, parts := range []int32{1, 100, 1000} {
		t.Run(fmt.Sprintf("%d partitions", parts), func(t *testing.T) {
			// A linger far longer than the test: only Flush seals the file.
			n := startNode(t, func(c *node.Config) { c.Linger = time.Hour; c.FlushBytes = 64 << 20 })
			createTopic(t, n.c, "wide", parts)
			ctx := context.Background()
			const producers = 4
			var wg sync.WaitGroup
			results := make([][]*varvev1.ProduceResult, producers)
			for w := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req := &varvev1.ProduceRequest{Topic: "wide"}
					for p := range parts {
						req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: fmt.Appendf(nil, "w%d-p%d", w, p)}})
					}
					resp, err := n.c.produce.Produce(ctx, connect.NewRequest(req))
					if err != nil {
						t.Error(err)
						return
					}
					results[w] = resp.Msg.Results
				}()
			}
			// Wait until every producer's batch is buffered, then flush once.
			if !testenv.Eventually(30*time.Second, func() bool {
				_, recs := n.Ingester().Pending()
				return recs == int64(producers*parts)
			}) {
				t.Fatal("producers never buffered")
			}
			n.rec.Reset()
			if err := n.Ingester().Flush(ctx); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if got := n.rec.Count(tier.OpPut); got != 1 {
				t.Fatalf("%d PUTs for one flush of %d partitions, want 1", got, parts)
			}
			// Offsets of each partition are dense 0..producers-1.
			seen := make(map[int32]map[int64]bool)
			for _, rs := range results {
				if len(rs) != int(parts) {
					t.Fatalf("got %d results, want %d", len(rs), parts)
				}
				for p, r := range rs {
					if r.Partition != int32(p) {
						t.Fatalf("record for partition %d landed on %d", p, r.Partition)
					}
					if seen[r.Partition] == nil {
						seen[r.Partition] = map[int64]bool{}
					}
					seen[r.Partition][r.Offset] = true
				}
			}
			for p, offs := range seen {
				for o := int64(0); o < producers; o++ {
					if !offs[o] {
						t.Fatalf("partition %d misses offset %d: %v", p, o, offs)
					}
				}
			}
		})
	}
}

func TestProduceFetchRoundTrip(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "events", 3)
	var req varvev1.ProduceRequest
	req.Topic = "events"
	for i := range 50 {
		req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(1), Record: &varvev1.Record{
			Key:         fmt.Appendf(nil, "k%d", i),
			Value:       fmt.Appendf(nil, `{"n":%d}`, i),
			Headers:     []*varvev1.Header{{Key: "h", Value: []byte("v")}, {Key: "null"}},
			TimestampMs: 1700000000000 + int64(i)*1000,
		}})
	}
	resp, err := n.c.produce.Produce(ctx, connect.NewRequest(&req))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resp.Msg.Results {
		if r.Partition != 1 || r.Offset != int64(i) {
			t.Fatalf("result %d: %v", i, r)
		}
	}
	// Fetch from the middle: records start exactly at the offset asked for.
	f, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "events", Partition: 1, Offset: 17}))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Msg.Records) != 33 || f.Msg.NextOffset != 50 || f.Msg.HighWatermark != 50 {
		t.Fatalf("fetch: %d records next %d hwm %d", len(f.Msg.Records), f.Msg.NextOffset, f.Msg.HighWatermark)
	}
	r := f.Msg.Records[0]
	if r.Offset != 17 || string(r.Key) != "k17" || string(r.Value) != `{"n":17}` || r.TimestampMs != 1700000017000 ||
		len(r.Headers) != 2 || string(r.Headers[0].Value) != "v" || r.Headers[1].Value != nil {
		t.Fatalf("record 17: %v", r)
	}
	// max_bytes limits the answer but always returns one record.
	f, err = n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "events", Partition: 1, Offset: 0, MaxBytes: 1}))
	if err != nil || len(f.Msg.Records) != 1 || f.Msg.NextOffset != 1 {
		t.Fatalf("max_bytes=1: %v %v", f, err)
	}
	// List offsets: earliest, latest, by time.
	lo := func(spec varvev1.OffsetSpec, ts int64) *varvev1.PartitionOffset {
		t.Helper()
		r, err := n.c.fetch.ListOffsets(ctx, connect.NewRequest(&varvev1.ListOffsetsRequest{Topic: "events", Partitions: []int32{1}, Spec: spec, TimestampMs: ts}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Offsets[0]
	}
	if o := lo(varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST, 0); o.Offset != 0 {
		t.Fatalf("earliest %v", o)
	}
	if o := lo(varvev1.OffsetSpec_OFFSET_SPEC_LATEST, 0); o.Offset != 50 {
		t.Fatalf("latest %v", o)
	}
	if o := lo(varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP, 1700000020500); o.Offset != 21 || o.TimestampMs != 1700000021000 {
		t.Fatalf("by time %v", o)
	}
	if o := lo(varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP, 1800000000000); o.Offset != 50 || o.TimestampMs != -1 {
		t.Fatalf("by time after the end %v", o)
	}
	// Keyed records without a partition follow murmur2; the same key always
	// lands on the same partition.
	var keyed varvev1.ProduceRequest
	keyed.Topic = "events"
	for range 5 {
		keyed.Records = append(keyed.Records, &varvev1.ProduceRecord{Partition: proto.Int32(-1), Record: &varvev1.Record{Key: []byte("same-key"), Value: []byte("x")}})
	}
	kr, err := n.c.produce.Produce(ctx, connect.NewRequest(&keyed))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range kr.Msg.Results[1:] {
		if r.Partition != kr.Msg.Results[0].Partition {
			t.Fatalf("same key on two partitions: %v", kr.Msg.Results)
		}
	}
}

func TestLongPollAndSubscribeAreWoken(t *testing.T) {
	n := startNode(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	createTopic(t, n.c, "tail", 1)

	type fetched struct {
		resp *connect.Response[varvev1.FetchResponse]
		err  error
	}
	got := make(chan fetched, 1)
	go func() {
		r, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "tail", Partition: 0, Offset: 0, MaxWaitMs: 20000}))
		got <- fetched{r, err}
	}()
	stream, err := n.c.fetch.Subscribe(ctx, connect.NewRequest(&varvev1.SubscribeRequest{Topic: "tail", Partition: 0, Offset: 0}))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "tail", Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte("hello")}}}})); err != nil {
		t.Fatal(err)
	}
	f := <-got
	if f.err != nil || len(f.resp.Msg.Records) != 1 || string(f.resp.Msg.Records[0].Value) != "hello" {
		t.Fatalf("long poll: %v %v", f.resp, f.err)
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("long poll answered after %v: it was not woken", waited)
	}
	if !stream.Receive() {
		t.Fatalf("subscribe: %v", stream.Err())
	}
	if m := stream.Msg(); len(m.Records) != 1 || m.Records[0].Offset != 0 {
		t.Fatalf("subscribe got %v", m)
	}
	// A long poll with nothing to read ends at max wait with no records.
	r, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "tail", Partition: 0, Offset: 1, MaxWaitMs: 50}))
	if err != nil || len(r.Msg.Records) != 0 || r.Msg.HighWatermark != 1 {
		t.Fatalf("empty long poll: %v %v", r, err)
	}
}

// state snapshots what bad input must not change: topics, partition offsets
// and stored objects.
func state(t *testing.T, n *testNode) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	ts, err := n.c.topics.ListTopics(ctx, connect.NewRequest(&varvev1.ListTopicsRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range ts.Msg.Topics {
		d, err := n.c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: tp.Name}))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s/%d:", tp.Name, tp.Partitions)
		for _, p := range d.Msg.Partitions {
			fmt.Fprintf(&b, " %d=%d", p.Partition, p.NextOffset)
		}
		b.WriteString("\n")
	}
	objs := 0
	if err := n.rec.List(ctx, "", func(tier.ObjectInfo) error { objs++; return nil }); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "objects=%d", objs)
	return b.String()
}

func TestBadInputChangesNothing(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.MaxRequestBytes = 4 << 20 })
	ctx := context.Background()
	createTopic(t, n.c, "good", 2)
	if _, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "good", Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte("v")}}}})); err != nil {
		t.Fatal(err)
	}
	rec := func(p int32, v []byte) *varvev1.ProduceRecord {
		return &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: v}}
	}
	big := bytes.Repeat([]byte("x"), 1<<20+1)
	cases := []struct {
		name string
		call func() error
		code connect.Code
	}{
		{"create: bad name", func() error {
			_, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "bad/name", Partitions: 1}))
			return err
		}, connect.CodeInvalidArgument},
		{"create: empty name", func() error {
			_, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "", Partitions: 1}))
			return err
		}, connect.CodeInvalidArgument},
		{"create: name too long", func() error {
			_, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: strings.Repeat("a", 250), Partitions: 1}))
			return err
		}, connect.CodeInvalidArgument},
		{"create: zero partitions", func() error {
			_, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "zero", Partitions: 0}))
			return err
		}, connect.CodeInvalidArgument},
		{"create: too many partitions", func() error {
			_, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "many", Partitions: 1_000_000}))
			return err
		}, connect.CodeInvalidArgument},
		{"create: exists", func() error {
			_, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "good", Partitions: 9}))
			return err
		}, connect.CodeAlreadyExists},
		{"describe: unknown topic", func() error {
			_, err := n.c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: "nope"}))
			return err
		}, connect.CodeNotFound},
		{"delete: unknown topic", func() error {
			_, err := n.c.topics.DeleteTopic(ctx, connect.NewRequest(&varvev1.DeleteTopicRequest{Name: "nope"}))
			return err
		}, connect.CodeNotFound},
		{"produce: unknown topic", func() error {
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "nope", Records: []*varvev1.ProduceRecord{rec(0, []byte("v"))}}))
			return err
		}, connect.CodeNotFound},
		{"produce: bad topic name", func() error {
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "..", Records: []*varvev1.ProduceRecord{rec(0, []byte("v"))}}))
			return err
		}, connect.CodeInvalidArgument},
		{"produce: empty batch", func() error {
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "good"}))
			return err
		}, connect.CodeInvalidArgument},
		{"produce: partition out of range", func() error {
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "good", Records: []*varvev1.ProduceRecord{rec(0, []byte("ok")), rec(2, []byte("v"))}}))
			return err
		}, connect.CodeInvalidArgument},
		{"produce: negative partition", func() error {
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "good", Records: []*varvev1.ProduceRecord{rec(-2, []byte("v"))}}))
			return err
		}, connect.CodeInvalidArgument},
		{"produce: record over max_record_bytes", func() error {
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "good", Records: []*varvev1.ProduceRecord{rec(0, []byte("ok")), rec(0, big)}}))
			return err
		}, connect.CodeInvalidArgument},
		{"produce: missing record body", func() error {
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "good", Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(0)}}}))
			return err
		}, connect.CodeInvalidArgument},
		{"produce: request over max_request_bytes", func() error {
			var recs []*varvev1.ProduceRecord
			for range 5 {
				recs = append(recs, rec(0, big[:1<<20-100]))
			}
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "good", Records: recs}))
			return err
		}, connect.CodeResourceExhausted},
		{"fetch: unknown topic", func() error {
			_, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "nope"}))
			return err
		}, connect.CodeNotFound},
		{"fetch: partition out of range", func() error {
			_, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "good", Partition: 5}))
			return err
		}, connect.CodeInvalidArgument},
		{"fetch: offset past the end", func() error {
			_, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "good", Partition: 0, Offset: 99}))
			return err
		}, connect.CodeOutOfRange},
		{"fetch: negative offset", func() error {
			_, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "good", Partition: 0, Offset: -1}))
			return err
		}, connect.CodeOutOfRange},
		{"fetch: negative max bytes", func() error {
			_, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "good", Partition: 0, MaxBytes: -1}))
			return err
		}, connect.CodeInvalidArgument},
		{"list offsets: no spec", func() error {
			_, err := n.c.fetch.ListOffsets(ctx, connect.NewRequest(&varvev1.ListOffsetsRequest{Topic: "good"}))
			return err
		}, connect.CodeInvalidArgument},
		{"list offsets: unknown topic", func() error {
			_, err := n.c.fetch.ListOffsets(ctx, connect.NewRequest(&varvev1.ListOffsetsRequest{Topic: "nope", Spec: varvev1.OffsetSpec_OFFSET_SPEC_LATEST}))
			return err
		}, connect.CodeNotFound},
		{"malformed request body", func() error {
			req, _ := http.NewRequest("POST", n.Addr()+varvev1connect.ProduceServiceProduceProcedure, strings.NewReader("\xff\xff\xffgarbage"))
			req.Header.Set("Content-Type", "application/proto")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("http %d", resp.StatusCode))
		}, connect.CodeInvalidArgument},
		{"malformed JSON body", func() error {
			req, _ := http.NewRequest("POST", n.Addr()+varvev1connect.ProduceServiceProduceProcedure, strings.NewReader(`{"topic": 5`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode == 400 {
				return connect.NewError(connect.CodeInvalidArgument, errors.New("400"))
			}
			return fmt.Errorf("http %d", resp.StatusCode)
		}, connect.CodeInvalidArgument},
	}
	before := state(t, n)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := connect.CodeOf(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			if err != nil && connect.CodeOf(err) != connect.CodeResourceExhausted && len(err.Error()) < 20 && !strings.HasPrefix(tc.name, "malformed") {
				t.Fatalf("error message %q is not precise", err)
			}
			if after := state(t, n); after != before {
				t.Fatalf("state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestBackpressureAdvisesRetry(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Linger = time.Hour; c.FlushBytes = 4 << 20; c.MaxBufferBytes = 4 << 20 })
	ctx := context.Background()
	createTopic(t, n.c, "bp", 1)
	val := bytes.Repeat([]byte("y"), 512<<10)
	// Fill the buffer without flushing (the linger is an hour).
	go func() {
		var recs []*varvev1.ProduceRecord
		for range 7 {
			recs = append(recs, &varvev1.ProduceRecord{Partition: proto.Int32(0), Record: &varvev1.Record{Value: val}})
		}
		_, _ = n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "bp", Records: recs}))
	}()
	if !testenv.Eventually(10*time.Second, func() bool { _, recs := n.Ingester().Pending(); return recs == 7 }) {
		t.Fatal("the first batch was never buffered")
	}
	_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "bp", Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(0), Record: &varvev1.Record{Value: val}}, {Partition: proto.Int32(0), Record: &varvev1.Record{Value: val}}}}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("got %v, want resource_exhausted", err)
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatal(err)
	}
	found := false
	for _, d := range ce.Details() {
		if v, derr := d.Value(); derr == nil {
			if ri, ok := v.(*errdetails.RetryInfo); ok && ri.RetryDelay.AsDuration() > 0 {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("no RetryInfo detail in %v", err)
	}
	if err := n.Ingester().Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptObjectIsDataLoss(t *testing.T) {
	// The writer keeps nothing in its memory cache: a writer holding the
	// block serves its intact stored bytes to the other fetch node, and
	// the corrupted object would not be read.
	n := startNode(t, func(cfg *node.Config) { cfg.CacheBytes = 1 })
	ctx := context.Background()
	createTopic(t, n.c, "c", 1)
	var recs []*varvev1.ProduceRecord
	for i := range 100 {
		recs = append(recs, &varvev1.ProduceRecord{Partition: proto.Int32(0), Record: &varvev1.Record{Value: fmt.Appendf(nil, "value-%d", i)}})
	}
	if _, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "c", Records: recs})); err != nil {
		t.Fatal(err)
	}
	var key string
	for _, c := range n.rec.Calls() {
		if c.Op == tier.OpPut {
			key = c.Key
		}
	}
	// Flip bytes inside the stored block, then read it through a second node
	// whose cache does not hold it.
	path := filepath.Join(n.dir, "objects", filepath.FromSlash(key))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 40; i < 60 && i < len(data); i++ {
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fs, _ := tier.NewFS(filepath.Join(n.dir, "objects"))
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Roles = []string{node.RoleFetch}
	cfg.EtcdEndpoints = n.Meta().Endpoints()
	cfg.Store = "fs:" + filepath.Join(n.dir, "objects")
	reader, err := node.New(ctx, cfg, node.Options{Store: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Shutdown(ctx)
	_, err = newClients(reader.Addr()).fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "c", Partition: 0, Offset: 5}))
	if connect.CodeOf(err) != connect.CodeDataLoss || !strings.Contains(err.Error(), key) {
		t.Fatalf("got %v, want data_loss naming %s", err, key)
	}
	// A fetch-only node refuses produce clearly.
	_, err = newClients(reader.Addr()).produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "c", Records: recs[:1]}))
	if connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Fatalf("produce on a fetch node: %v", err)
	}
}
