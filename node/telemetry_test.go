package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier/segment"
)

// metricsPage returns the /metrics page of the node at addr.
func metricsPage(t testing.TB, addr string) []byte {
	t.Helper()
	resp, err := http.Get(addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/metrics: %d %v\n%s", addr, resp.StatusCode, err, body)
	}
	return body
}

// scrape reads a node's /metrics as Prometheus does.
func scrape(t *testing.T, addr string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	body := metricsPage(t, addr)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams, string(body)
}

// series returns the metrics of family name whose labels include want.
func series(fams map[string]*dto.MetricFamily, name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range fams[name].GetMetric() {
		ok := true
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			ok = ok && found
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

func counterValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	var v float64
	for _, m := range series(fams, name, labels) {
		v += m.GetCounter().GetValue()
	}
	return v
}

// TestMetricsPerProcedure: after one produce and one fetch, /metrics has a
// request count and latency histogram per procedure and status code, the
// per-topic counters, the build info, and no otel_scope_* labels; the
// counters autoscaling reads exist at 0 before any request.
func TestMetricsPerProcedure(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.NodeID = "metrics-node" })
	ctx := context.Background()

	fams, body := scrape(t, n.Addr())
	tf, err := os.ReadFile(filepath.Join("..", "terraform", "modules", "varve", "main.tf"))
	if err != nil {
		t.Fatal(err)
	}
	exported := regexp.MustCompile(`"(varve_[a-z_]+_total)"`).FindAllStringSubmatch(string(tf), -1)
	if len(exported) < 2 {
		t.Fatalf("no exported metrics found in terraform/modules/varve/main.tf")
	}
	for _, m := range exported {
		if f := fams[m[1]]; f == nil || len(f.GetMetric()) != 1 || f.GetMetric()[0].GetCounter().GetValue() != 0 {
			t.Errorf("%s (used by terraform/modules/varve) is not on /metrics at 0 from the start: %v", m[1], f)
		}
	}
	if strings.Contains(body, "otel_scope_") {
		t.Errorf("/metrics carries otel_scope_* labels:\n%s", body)
	}

	createTopic(t, n.c, "metered", 2)
	if _, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "metered", Records: []*varvev1.ProduceRecord{
		{Partition: proto.Int32(1), Record: &varvev1.Record{Key: []byte("k"), Value: []byte("0123456789")}},
	}})); err != nil {
		t.Fatal(err)
	}
	if _, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "metered", Partition: 1})); err != nil {
		t.Fatal(err)
	}
	if _, err := n.c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: "missing"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("describe missing: %v", err)
	}

	fams, body = scrape(t, n.Addr())
	const calls = "rpc_server_call_duration_seconds"
	for _, c := range []struct{ method, code string }{
		{"varve.v1.ProduceService/Produce", "OK"},
		{"varve.v1.FetchService/Fetch", "OK"},
		{"varve.v1.TopicService/DescribeTopic", "NOT_FOUND"},
	} {
		ms := series(fams, calls, map[string]string{"rpc_method": c.method, "rpc_response_status_code": c.code})
		if len(ms) != 1 || ms[0].GetHistogram().GetSampleCount() != 1 || ms[0].GetHistogram().GetSampleSum() <= 0 {
			t.Errorf("%s{rpc_method=%q, rpc_response_status_code=%q}: want one request with a latency, got %v", calls, c.method, c.code, ms)
		}
	}
	topic := map[string]string{"topic": "metered"}
	for name, want := range map[string]float64{
		"varve_topic_produced_records_total": 1,
		"varve_topic_produced_bytes_total":   11,
		"varve_topic_fetched_records_total":  1,
		"varve_topic_fetched_bytes_total":    11,
	} {
		if got := counterValue(fams, name, topic); got != want {
			t.Errorf("%s{topic=metered} = %v, want %v", name, got, want)
		}
	}
	if got := counterValue(fams, "varve_served_bytes_total", map[string]string{"procedure": "/varve.v1.FetchService/Fetch"}); got < 11 {
		t.Errorf("varve_served_bytes_total{procedure=Fetch} = %v, want at least the record's 11 bytes", got)
	}
	if ms := series(fams, "varve_build_info", nil); len(ms) != 1 || ms[0].GetGauge().GetValue() != 1 || len(ms[0].GetLabel()) != 3 {
		t.Errorf("varve_build_info: %v", ms)
	}
	if ms := series(fams, "target_info", map[string]string{"service_name": "varve", "varve_node_id": "metrics-node", "varve_roles": strings.Join(node.DefaultConfig().Roles, ",")}); len(ms) != 1 {
		t.Errorf("target_info with service.name varve, the node id and roles: %v", fams["target_info"])
	}
	if strings.Contains(body, "otel_scope_") {
		t.Errorf("/metrics carries otel_scope_* labels")
	}
}

// syncBuffer is a log sink safe for the node's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// line returns the first log line with msg and every attribute of want
// (key=value as the text handler writes them).
func (s *syncBuffer) line(msg string, want ...string) string {
	for l := range strings.SplitSeq(s.String(), "\n") {
		if !strings.Contains(l, fmt.Sprintf("msg=%q", msg)) && !strings.Contains(l, "msg="+msg+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			return l
		}
	}
	return ""
}

// TestLogs: the start line names the API, Flight and etcd addresses; a
// failed request is logged at debug with its code, procedure and peer;
// administrative changes are logged at info.
func TestLogs(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	etcd := testenv.StartEtcd(t)
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.FlightListen = "127.0.0.1:0"
	cfg.EtcdEndpoints = etcd
	cfg.Store = "fs:" + t.TempDir()
	n, err := node.New(context.Background(), cfg, node.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
	if l := buf.line("node started", "level=INFO", "addr="+n.Addr(), "flight="+n.FlightAddr(), etcd[0]); l == "" {
		t.Errorf("no start line with the API, Flight (%s) and etcd (%s) addresses:\n%s", n.FlightAddr(), etcd[0], buf.String())
	}
	c := newClients(n.Addr())
	ctx := context.Background()
	if _, err := c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: "nope"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("describe: %v", err)
	}
	if l := buf.line("request failed", "level=DEBUG", "procedure=/varve.v1.TopicService/DescribeTopic", "code=not_found", "peer=127.0.0.1:"); l == "" {
		t.Errorf("no debug line for the failed request:\n%s", buf.String())
	}
	createTopic(t, c, "audited", 2)
	if _, err := c.topics.UpdateTopic(ctx, connect.NewRequest(&varvev1.UpdateTopicRequest{Name: "audited", RetentionMs: new(int64(60000))})); err != nil {
		t.Fatal(err)
	}
	gc := groupClient(n.Addr())
	if _, err := gc.ResetOffsets(ctx, connect.NewRequest(&varvev1.ResetOffsetsRequest{Group: "g1", Topic: "audited", Spec: varvev1.ResetSpec_RESET_SPEC_EARLIEST})); err != nil {
		t.Fatal(err)
	}
	if _, err := gc.DeleteGroup(ctx, connect.NewRequest(&varvev1.DeleteGroupRequest{Group: "g1"})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.topics.DeleteTopic(ctx, connect.NewRequest(&varvev1.DeleteTopicRequest{Name: "audited"})); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		msg   string
		attrs []string
	}{
		{"topic created", []string{"topic=audited", "partitions=2", "peer=127.0.0.1:"}},
		{"topic altered", []string{"topic=audited", "retentionMs", "60000"}},
		{"group offsets reset", []string{"group=g1", "topic=audited"}},
		{"group deleted", []string{"group=g1"}},
		{"topic deleted", []string{"topic=audited"}},
	} {
		if l := buf.line(w.msg, append([]string{"level=INFO"}, w.attrs...)...); l == "" {
			t.Errorf("no info line %q with %v:\n%s", w.msg, w.attrs, buf.String())
		}
	}
}

// TestPProfSetting: /debug/pprof is served only with the pprof setting.
func TestPProfSetting(t *testing.T) {
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	off := startNode(t, nil)
	if code := get(off.Addr() + "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof off by default: /debug/pprof/ answered %d", code)
	}
	on := startNode(t, func(c *node.Config) { c.PProf = true })
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=1"} {
		if code := get(on.Addr() + p); code != http.StatusOK {
			t.Errorf("pprof on: %s answered %d", p, code)
		}
	}
}

// TestTopicCountersCountTheBatchForm: the per-topic counters count what
// the SDK sends and fetches, the batch form (Kafka RecordBatch v2 in
// ProduceRequest.batches, FetchRequest.record_batches): records
// acknowledged and fetched, and the batches' bytes as sent. A batch fetch
// from offset 1 gets the whole first batch back; only its records from
// offset 1 on count. Before, both forms' records counted only in the
// record form, so /metrics showed 0 for every SDK producer and consumer.
func TestTopicCountersCountTheBatchForm(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "batched", 1)
	b := batchOf(t,
		segment.Record{Key: []byte("k"), Value: []byte("zero"), Timestamp: 1},
		segment.Record{Key: []byte("k"), Value: []byte("one"), Timestamp: 1},
		segment.Record{Key: []byte("k"), Value: []byte("two"), Timestamp: 1})
	if _, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "batched",
		Batches: []*varvev1.PartitionBatches{{Partition: 0, RecordBatches: b}}})); err != nil {
		t.Fatal(err)
	}
	res, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "batched", Partition: 0, Offset: 1, RecordBatches: true}))
	if err != nil {
		t.Fatal(err)
	}
	served := len(res.Msg.GetRecordBatches())
	if served == 0 || res.Msg.GetNextOffset() != 3 {
		t.Fatalf("batch fetch from offset 1: %d batch bytes, next offset %d; want the batch and 3", served, res.Msg.GetNextOffset())
	}
	fams, _ := scrape(t, n.Addr())
	topic := map[string]string{"topic": "batched"}
	for name, want := range map[string]float64{
		"varve_topic_produced_records_total": 3,
		"varve_topic_produced_bytes_total":   float64(len(b)),
		"varve_topic_fetched_records_total":  2,
		"varve_topic_fetched_bytes_total":    float64(served),
	} {
		if got := counterValue(fams, name, topic); got != want {
			t.Errorf("%s{topic=batched} = %v, want %v", name, got, want)
		}
	}
}
