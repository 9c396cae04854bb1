package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
)

// cluster is one real etcd (in the test process) and one real MinIO bucket
// that `varve serve` processes share.
type cluster struct {
	t      *testing.T
	etcd   []string
	minio  *testenv.MinIOServer
	bucket string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	etcd := testenv.StartEtcd(t)
	m := testenv.MinIO(t)
	bucket := m.NewBucket(t)
	return &cluster{t: t, etcd: etcd, minio: m, bucket: bucket}
}

// serveNode is one `varve serve` process.
type serveNode struct {
	*proc
	id   string
	addr string // http://127.0.0.1:PORT
}

// startServe starts `varve serve --roles ingest,fetch,sequence` (serve's
// default roles) on listen (127.0.0.1:PORT) and waits until it is ready.
func (c *cluster) startServe(id, listen string, extra ...string) *serveNode {
	c.t.Helper()
	return c.startServeRoles(id, listen, "ingest,fetch,sequence", extra...)
}

// startServeRoles is startServe with the given roles (comma-separated).
func (c *cluster) startServeRoles(id, listen, roles string, extra ...string) *serveNode {
	c.t.Helper()
	args := []string{
		"serve",
		"--roles", roles,
		"--listen", listen,
		"--node-id", id,
		"--etcd-endpoints", strings.Join(c.etcd, ","),
		"--bucket", "s3://" + c.bucket + "/varve",
		"--s3-endpoint", c.minio.Endpoint,
		"--s3-path-style",
	}
	args = append(args, extra...)
	env := cleanEnv(
		"AWS_ACCESS_KEY_ID="+c.minio.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+c.minio.SecretKey,
		"AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
	)
	n := &serveNode{proc: startProc(c.t, "serve-"+id, env, args...), id: id, addr: "http://" + listen}
	n.waitReady(n.addr)
	return n
}

func loopbackListen(t testing.TB) string {
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// httpClient is shared by the Connect clients: enough idle connections for
// the concurrent producers, and no retries of its own beyond net/http's.
var httpClient = &http.Client{Transport: &http.Transport{
	MaxIdleConns:        256,
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     30 * time.Second,
}}

// api holds the Connect clients of one node.
type api struct {
	addr    string
	topics  varvev1connect.TopicServiceClient
	produce varvev1connect.ProduceServiceClient
	fetch   varvev1connect.FetchServiceClient
}

func newAPI(addr string) *api {
	return &api{
		addr:    addr,
		topics:  varvev1connect.NewTopicServiceClient(httpClient, addr),
		produce: varvev1connect.NewProduceServiceClient(httpClient, addr),
		fetch:   varvev1connect.NewFetchServiceClient(httpClient, addr),
	}
}

func (a *api) createTopic(t testing.TB, name string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: name, Partitions: partitions})); err != nil {
		t.Fatalf("CreateTopic %s (%d partitions) on %s: %v", name, partitions, a.addr, err)
	}
}

// highWatermarks returns every partition's next offset, from DescribeTopic.
func (a *api) highWatermarks(t testing.TB, topic string) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := a.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: topic}))
	if err != nil {
		t.Fatalf("DescribeTopic %s on %s: %v", topic, a.addr, err)
	}
	out := make([]int64, len(res.Msg.GetPartitions()))
	for i, p := range res.Msg.GetPartitions() {
		if p.GetPartition() != int32(i) {
			t.Fatalf("DescribeTopic %s on %s: partition %d listed at position %d", topic, a.addr, p.GetPartition(), i)
		}
		if p.GetLogStartOffset() != 0 {
			t.Fatalf("DescribeTopic %s on %s: partition %d starts at %d, want 0 (no retention configured)", topic, a.addr, i, p.GetLogStartOffset())
		}
		out[i] = p.GetNextOffset()
	}
	return out
}

// logRecord is one committed record as fetched.
type logRecord struct {
	offset int64
	key    []byte
	hasKey bool
	value  string
}

// readPartition fetches partition p from offset 0 up to hwm and checks
// that offsets are dense: the i-th record fetched has offset i, and the
// fetch reports the partition's high watermark.
func (a *api) readPartition(t testing.TB, topic string, p int32, hwm int64) []logRecord {
	t.Helper()
	out := make([]logRecord, 0, hwm)
	next := int64(0)
	deadline := time.Now().Add(2 * time.Minute)
	for next < hwm {
		if time.Now().After(deadline) {
			t.Fatalf("fetch %s/%d on %s: stuck at offset %d of %d", topic, p, a.addr, next, hwm)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := a.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: p, Offset: next, MaxBytes: 1 << 20}))
		cancel()
		if err != nil {
			t.Fatalf("fetch %s/%d at offset %d on %s: %v", topic, p, next, a.addr, err)
		}
		m := res.Msg
		// The node's index cache follows etcd through a watch and may
		// report a high watermark a moment behind DescribeTopic (which
		// reads etcd), never ahead: the log is not growing any more.
		if m.GetHighWatermark() > hwm {
			t.Fatalf("fetch %s/%d at offset %d on %s: high watermark %d, DescribeTopic said %d", topic, p, next, a.addr, m.GetHighWatermark(), hwm)
		}
		if len(m.GetRecords()) == 0 {
			t.Fatalf("fetch %s/%d at offset %d on %s: no records below the high watermark %d (next_offset %d)", topic, p, next, a.addr, hwm, m.GetNextOffset())
		}
		for _, r := range m.GetRecords() {
			if r.GetOffset() != next {
				t.Fatalf("fetch %s/%d on %s: record at position %d has offset %d (gap or duplicate)", topic, p, a.addr, next, r.GetOffset())
			}
			if r.GetPartition() != p {
				t.Fatalf("fetch %s/%d on %s: record %d says partition %d", topic, p, a.addr, next, r.GetPartition())
			}
			out = append(out, logRecord{offset: r.GetOffset(), key: r.GetKey(), hasKey: r.Key != nil, value: string(r.GetValue())})
			next++
		}
		if m.GetNextOffset() != next {
			t.Fatalf("fetch %s/%d on %s: next_offset %d after the last record %d", topic, p, a.addr, m.GetNextOffset(), next-1)
		}
	}
	if next != hwm {
		t.Fatalf("fetch %s/%d on %s: read %d records past the high watermark %d", topic, p, a.addr, next, hwm)
	}
	// At the end of the log: nothing more, and the reported high watermark
	// catches up with etcd's.
	var reported int64
	if !testenv.EventuallyEvery(10*time.Second, pollInterval, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := a.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: p, Offset: hwm}))
		cancel()
		if err != nil {
			t.Fatalf("fetch %s/%d at the high watermark %d on %s: %v", topic, p, hwm, a.addr, err)
		}
		m := res.Msg
		if len(m.GetRecords()) > 0 || m.GetNextOffset() != hwm || m.GetHighWatermark() > hwm {
			t.Fatalf("fetch %s/%d at the high watermark %d on %s: %d records, next_offset %d, high_watermark %d", topic, p, hwm, a.addr, len(m.GetRecords()), m.GetNextOffset(), m.GetHighWatermark())
		}
		reported = m.GetHighWatermark()
		return reported == hwm
	}) {
		t.Fatalf("fetch %s/%d on %s: reported high watermark stuck at %d, etcd says %d", topic, p, a.addr, reported, hwm)
	}
	return out
}

// readAll reads every partition of topic to its high watermark.
func (a *api) readAll(t testing.TB, topic string) [][]logRecord {
	t.Helper()
	hwms := a.highWatermarks(t, topic)
	logs := make([][]logRecord, len(hwms))
	for p, hwm := range hwms {
		logs[p] = a.readPartition(t, topic, int32(p), hwm)
	}
	return logs
}

// sameLogs fails unless two reads of a topic are identical.
func sameLogs(t testing.TB, nameA string, a [][]logRecord, nameB string, b [][]logRecord) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s sees %d partitions, %s sees %d", nameA, len(a), nameB, len(b))
	}
	for p := range a {
		if len(a[p]) != len(b[p]) {
			t.Fatalf("partition %d: %s returns %d records, %s returns %d", p, nameA, len(a[p]), nameB, len(b[p]))
		}
		for i := range a[p] {
			x, y := a[p][i], b[p][i]
			if x.offset != y.offset || x.value != y.value || x.hasKey != y.hasKey || string(x.key) != string(y.key) {
				t.Fatalf("partition %d offset %d: %s returns %+v, %s returns %+v", p, i, nameA, x, nameB, y)
			}
		}
	}
}

// scrapeCounter sums the samples of a Prometheus counter in a /metrics page.
// ok is false when the metric has no sample yet.
func scrapeCounter(page, name string) (sum float64, ok bool) {
	for line := range strings.Lines(page) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // another metric sharing the prefix
		}
		fields := strings.Fields(rest[strings.LastIndex(rest, "}")+1:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		sum += v
		ok = true
	}
	return sum, ok
}

func describeRecords(recs []logRecord, max int) string {
	var b strings.Builder
	for i, r := range recs {
		if i == max {
			fmt.Fprintf(&b, "... (%d more)", len(recs)-max)
			break
		}
		fmt.Fprintf(&b, "%d:%q ", r.offset, r.value)
	}
	return b.String()
}
