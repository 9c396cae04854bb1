package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
)

// ingestRecordsMetric counts records accepted into a node's open file
// (OpenTelemetry's varve.ingest.records as exported for Prometheus).
const ingestRecordsMetric = "varve_ingest_records_total"

// TestGracefulDrainAnswersProducers sends SIGTERM to a node while a produce
// waits in its open file (a 1h linger: sealed at the next whole hour, so
// the open file outlives the test but for a boundary in its few hundred
// milliseconds): the drain must flush and commit, the
// producer must get a success, the process must exit 0, and another node
// must read the record.
func TestGracefulDrainAnswersProducers(t *testing.T) {
	const topic = "drain"
	c := newCluster(t)
	n := c.startServe("drain-a", loopbackListen(t), "--linger", "1h")
	a := newAPI(n.addr)
	a.createTopic(t, topic, 2)

	type answer struct {
		res *connect.Response[varvev1.ProduceResponse]
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := a.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{
			Topic:   topic,
			Records: []*varvev1.ProduceRecord{{Partition: proto.Int32(1), Record: &varvev1.Record{Key: []byte("k"), Value: []byte("drained")}}},
		}))
		answered <- answer{res, err}
	}()

	// The produce is in flight once the node has counted it into its open
	// file; the 1h linger keeps it there.
	var page string
	if !testenv.EventuallyEvery(10*time.Second, pollInterval, func() bool {
		select {
		case ans := <-answered:
			n.fatalf("produce answered before SIGTERM (err %v): with --linger 1h it should have been waiting in the open file", ans.err)
		default:
		}
		_, page = httpGet(t, n.addr+"/metrics")
		v, ok := scrapeCounter(page, ingestRecordsMetric)
		return ok && v >= 1
	}) {
		n.fatalf("%s never reached 1 in /metrics; varve metrics exposed:\n%s", ingestRecordsMetric, varveMetricNames(page))
	}

	sigterm := time.Now()
	n.signal(syscall.SIGTERM)
	var ans answer
	select {
	case ans = <-answered:
	case <-time.After(40 * time.Second):
		n.fatalf("the in-flight produce got no answer within 40s of SIGTERM")
	}
	if ans.err != nil {
		n.fatalf("in-flight produce failed during the drain: %v", ans.err)
	}
	res := ans.res.Msg.GetResults()
	if len(res) != 1 || res[0].GetPartition() != 1 {
		n.fatalf("in-flight produce answered %v, want one result on partition 1", res)
	}
	t.Logf("in-flight produce answered %v after SIGTERM: partition %d offset %d", time.Since(sigterm).Round(time.Millisecond), res[0].GetPartition(), res[0].GetOffset())
	if code := n.waitExit(40 * time.Second); code != 0 {
		n.fatalf("exit status %d after SIGTERM, want 0", code)
	}

	// Another node reads it back from the bucket.
	m := c.startServe("drain-b", loopbackListen(t), "--linger", "10ms")
	b := newAPI(m.addr)
	hwms := b.highWatermarks(t, topic)
	if hwms[1] != res[0].GetOffset()+1 {
		m.fatalf("partition 1 high watermark %d, want %d", hwms[1], res[0].GetOffset()+1)
	}
	recs := b.readPartition(t, topic, 1, hwms[1])
	got := recs[res[0].GetOffset()]
	if got.value != "drained" || string(got.key) != "k" {
		m.fatalf("partition 1 offset %d holds key %q value %q, want key \"k\" value \"drained\"", res[0].GetOffset(), got.key, got.value)
	}
}

// varveMetricNames lists the varve_* lines of a /metrics page.
func varveMetricNames(page string) string {
	var b strings.Builder
	for line := range strings.Lines(page) {
		if strings.HasPrefix(line, "varve_") {
			b.WriteString("\t" + line)
		}
	}
	if b.Len() == 0 {
		return "\t(none)\n"
	}
	return b.String()
}
