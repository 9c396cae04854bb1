package node_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// logBuffer is a slog destination a test can read while the node writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBlockServiceBadInputs asks the internal BlockService for what is not
// a block: invalid object keys answer INVALID_ARGUMENT (not UNAVAILABLE,
// which peers retry), ranges the object's footer does not list answer
// INVALID_ARGUMENT without the node logging a corrupt block, a missing
// object answers DATA_LOSS; only a real block whose bytes were flipped is
// logged as corrupt. GetObject refuses invalid keys, keys that are not an
// ingest flush's (a compacted object's) and max_bytes out of range with
// INVALID_ARGUMENT and no GET, an object larger than max_bytes with
// FAILED_PRECONDITION, a missing object with DATA_LOSS; none of them
// caches anything. Nothing is written to the bucket.
func TestBlockServiceBadInputs(t *testing.T) {
	c := startCluster(t, 0)
	ctx := context.Background()
	cl := newClients(c.ingest.Addr())
	createTopic(t, cl, "b", 2)
	produce := func(p int32, n int) {
		t.Helper()
		req := &varvev1.ProduceRequest{Topic: "b"}
		for i := range n {
			req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: &varvev1.Record{Value: fmt.Appendf(nil, "%d-%d", p, i)}})
		}
		if _, err := cl.produce.Produce(ctx, connect.NewRequest(req)); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 50)
	produce(1, 50) // another object: it gets corrupted below
	entry := func(p int32) metadata.IndexEntry {
		t.Helper()
		e, _, found, _, err := c.ingest.Meta().LookupIndex(ctx, "b", p, 0)
		if err != nil || !found {
			t.Fatalf("index entry of b/%d: found=%v err=%v", p, found, err)
		}
		return e
	}
	good, bad := entry(0), entry(1)
	if good.Object == bad.Object {
		t.Fatalf("both blocks are in %s; want two objects", good.Object)
	}
	obj, err := c.rec.GetRange(ctx, bad.Object, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	for i := bad.Off + segment.BlockHeaderSize; i < bad.Off+bad.Len; i += 5 {
		obj[i] ^= 0xff
	}
	if err := c.rec.Delete(ctx, bad.Object); err != nil {
		t.Fatal(err)
	}
	if err := c.rec.PutIfAbsent(ctx, bad.Object, obj); err != nil {
		t.Fatal(err)
	}
	size := int64(len(obj))

	var logs logBuffer
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Roles = []string{node.RoleFetch}
	cfg.NodeID = "fetch-0"
	cfg.EtcdEndpoints = c.endpoints
	cfg.Store = "s3://unused"
	f, err := node.New(ctx, cfg, node.Options{Store: c.rec, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Shutdown(context.Background()) })
	bc := newBlockClient(f.Addr())
	c.rec.Reset()

	for _, tc := range []struct {
		name    string
		req     *varvev1.GetBlockRequest
		code    connect.Code // 0: the block
		corrupt bool         // the node logs a corrupt block
	}{
		{"block", &varvev1.GetBlockRequest{Object: good.Object, Offset: good.Off, Length: good.Len}, 0, false},
		{"parent segment", &varvev1.GetBlockRequest{Object: "../" + good.Object, Offset: good.Off, Length: good.Len}, connect.CodeInvalidArgument, false},
		{"dot segment", &varvev1.GetBlockRequest{Object: "segments/./x.vseg", Offset: 8, Length: 100}, connect.CodeInvalidArgument, false},
		{"absolute", &varvev1.GetBlockRequest{Object: "/" + good.Object, Offset: good.Off, Length: good.Len}, connect.CodeInvalidArgument, false},
		{"empty segment", &varvev1.GetBlockRequest{Object: "segments//x.vseg", Offset: 8, Length: 100}, connect.CodeInvalidArgument, false},
		{"backslash", &varvev1.GetBlockRequest{Object: `segments\x.vseg`, Offset: 8, Length: 100}, connect.CodeInvalidArgument, false},
		{"NUL", &varvev1.GetBlockRequest{Object: "x\x00.vseg", Offset: 8, Length: 100}, connect.CodeInvalidArgument, false},
		{"too long", &varvev1.GetBlockRequest{Object: strings.Repeat("k", tier.MaxKeyLen+1), Offset: 8, Length: 100}, connect.CodeInvalidArgument, false},
		{"no object", &varvev1.GetBlockRequest{Offset: 8, Length: 100}, connect.CodeInvalidArgument, false},
		{"negative offset", &varvev1.GetBlockRequest{Object: good.Object, Offset: -1, Length: good.Len}, connect.CodeInvalidArgument, false},
		{"not a block start", &varvev1.GetBlockRequest{Object: good.Object, Offset: good.Off + 1, Length: good.Len}, connect.CodeInvalidArgument, false},
		{"wrong length", &varvev1.GetBlockRequest{Object: good.Object, Offset: good.Off, Length: good.Len - 1}, connect.CodeInvalidArgument, false},
		{"past the end", &varvev1.GetBlockRequest{Object: good.Object, Offset: size + 100, Length: good.Len}, connect.CodeInvalidArgument, false},
		{"missing object", &varvev1.GetBlockRequest{Object: "segments/nope.vseg", Offset: 8, Length: 100}, connect.CodeDataLoss, false},
		{"corrupt block", &varvev1.GetBlockRequest{Object: bad.Object, Offset: bad.Off, Length: bad.Len}, connect.CodeDataLoss, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(logs.String(), "corrupt block")
			resp, err := bc.GetBlock(ctx, connect.NewRequest(tc.req))
			if tc.code == 0 {
				if err != nil || int64(len(resp.Msg.GetBlock())) != good.Len {
					t.Fatalf("GetBlock of a real block: %v", err)
				}
				return
			}
			if connect.CodeOf(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			if ce := new(connect.Error); !errors.As(err, &ce) || ce.Message() == "" {
				t.Fatalf("error without a message: %v", err)
			}
			if logged := strings.Count(logs.String(), "corrupt block") - before; logged > 0 != tc.corrupt {
				t.Fatalf("the node logged %d corrupt blocks, want %v:\n%s", logged, tc.corrupt, logs.String())
			}
		})
	}

	// GetObject: a whole fresh object, or a precise refusal that reads
	// and caches nothing (a missing object costs its one GET).
	missing := tier.FlushKey(good.Object[:strings.Index(good.Object, "/")+1], "nobody", 1, time.Now())
	for _, tc := range []struct {
		name string
		req  *varvev1.GetObjectRequest
		code connect.Code // 0: the object's blocks
		gets int
	}{
		{"object", &varvev1.GetObjectRequest{Object: good.Object, MaxBytes: 64 << 20}, 0, 0},
		{"object, parent segment", &varvev1.GetObjectRequest{Object: "../" + good.Object, MaxBytes: 64 << 20}, connect.CodeInvalidArgument, 0},
		{"object, absolute", &varvev1.GetObjectRequest{Object: "/" + good.Object, MaxBytes: 64 << 20}, connect.CodeInvalidArgument, 0},
		{"object, NUL", &varvev1.GetObjectRequest{Object: good.Object + "\x00", MaxBytes: 64 << 20}, connect.CodeInvalidArgument, 0},
		{"object, too long", &varvev1.GetObjectRequest{Object: strings.Repeat("k", tier.MaxKeyLen+1), MaxBytes: 64 << 20}, connect.CodeInvalidArgument, 0},
		{"object, no key", &varvev1.GetObjectRequest{MaxBytes: 64 << 20}, connect.CodeInvalidArgument, 0},
		{"not a flush's object", &varvev1.GetObjectRequest{Object: "segments/x.vseg", MaxBytes: 64 << 20}, connect.CodeInvalidArgument, 0},
		{"compacted object", &varvev1.GetObjectRequest{Object: tier.CompactedKey(1, "b", 0, 0, 50, "fetch-0"), MaxBytes: 64 << 20}, connect.CodeInvalidArgument, 0},
		{"no max_bytes", &varvev1.GetObjectRequest{Object: good.Object}, connect.CodeInvalidArgument, 0},
		{"negative max_bytes", &varvev1.GetObjectRequest{Object: good.Object, MaxBytes: -1}, connect.CodeInvalidArgument, 0},
		{"max_bytes over 1 GiB", &varvev1.GetObjectRequest{Object: good.Object, MaxBytes: 1<<30 + 1}, connect.CodeInvalidArgument, 0},
		{"object over max_bytes", &varvev1.GetObjectRequest{Object: good.Object, MaxBytes: good.Len - 1}, connect.CodeFailedPrecondition, 0},
		{"object, missing", &varvev1.GetObjectRequest{Object: missing, MaxBytes: 64 << 20}, connect.CodeDataLoss, 1},
		{"object, its block's partition", &varvev1.GetObjectRequest{Object: good.Object, MaxBytes: good.Len, Partitions: []*varvev1.TopicPartitions{{Topic: good.Topic, Partitions: []int32{good.Partition}}}}, 0, 0},
		{"partitions, no topic", &varvev1.GetObjectRequest{Object: good.Object, MaxBytes: 64 << 20, Partitions: []*varvev1.TopicPartitions{{Partitions: []int32{0}}}}, connect.CodeInvalidArgument, 0},
		{"partitions, topic twice", &varvev1.GetObjectRequest{Object: good.Object, MaxBytes: 64 << 20, Partitions: []*varvev1.TopicPartitions{{Topic: "b", Partitions: []int32{0}}, {Topic: "b", Partitions: []int32{1}}}}, connect.CodeInvalidArgument, 0},
		{"partitions, negative", &varvev1.GetObjectRequest{Object: good.Object, MaxBytes: 64 << 20, Partitions: []*varvev1.TopicPartitions{{Topic: "b", Partitions: []int32{-1}}}}, connect.CodeInvalidArgument, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.rec.Reset()
			cached := memoryCacheBytes(t, f)
			resp, err := bc.GetObject(ctx, connect.NewRequest(tc.req))
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("GetObject of a real object: %v", err)
				}
				var found bool
				for _, b := range resp.Msg.Blocks {
					found = found || b.Offset == good.Off && int64(len(b.Block)) == good.Len && b.Records == good.Records
				}
				if !found {
					t.Fatalf("GetObject answered %d blocks, none of them the block at %d+%d", len(resp.Msg.Blocks), good.Off, good.Len)
				}
			} else {
				if connect.CodeOf(err) != tc.code {
					t.Fatalf("got %v, want %v", err, tc.code)
				}
				if ce := new(connect.Error); !errors.As(err, &ce) || ce.Message() == "" {
					t.Fatalf("error without a message: %v", err)
				}
			}
			if got := c.rec.Count(tier.OpGet); got != tc.gets {
				t.Errorf("%d GETs, want %d", got, tc.gets)
			}
			if now := memoryCacheBytes(t, f); now != cached {
				t.Errorf("the memory cache went from %d to %d bytes", cached, now)
			}
		})
	}
	if n := c.rec.Count(tier.OpPut) + c.rec.Count(tier.OpDelete); n != 0 {
		t.Fatalf("bad requests wrote or deleted %d objects", n)
	}
}

var memoryCacheBytesRE = regexp.MustCompile(`(?m)^varve_cache_bytes\{[^}]*tier="memory"[^}]*\} (\S+)$`)

// memoryCacheBytes reads the bytes a node's memory cache holds from its
// /metrics.
func memoryCacheBytes(t *testing.T, n *node.Node) int64 {
	t.Helper()
	page := metricsPage(t, n.Addr())
	m := memoryCacheBytesRE.FindSubmatch(page)
	if m == nil {
		t.Fatalf("no varve_cache_bytes{tier=\"memory\"} in /metrics")
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return int64(v)
}

// envelope frames msg as one enveloped message (gRPC, gRPC-Web, Connect
// streaming): flags, a big-endian length, the bytes.
func envelope(flags byte, msg []byte) []byte {
	out := make([]byte, 5, 5+len(msg))
	out[0] = flags
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

// rawCall posts body to path with the given headers over h2c and returns
// the response, its whole body and its trailers.
func rawCall(t *testing.T, hc *http.Client, url string, hdr map[string]string, body []byte) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// statusOf returns the RPC status a raw answer carries: the grpc-status
// of the trailers (gRPC), of the headers or trailer frame (gRPC-Web), the
// code of the end-of-stream message (Connect streaming) or of the error
// body (Connect unary).
func statusOf(resp *http.Response, body string) string {
	if s := resp.Trailer.Get("Grpc-Status"); s != "" {
		return "grpc-status " + s + ": " + resp.Trailer.Get("Grpc-Message")
	}
	if s := resp.Header.Get("Grpc-Status"); s != "" {
		return "grpc-status " + s + ": " + resp.Header.Get("Grpc-Message")
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/connect+") {
		// The end-of-stream message, gzipped when the request was.
		for b := []byte(body); len(b) >= 5; {
			size := int(binary.BigEndian.Uint32(b[1:5]))
			if len(b) < 5+size {
				break
			}
			flags, msg := b[0], b[5:5+size]
			b = b[5+size:]
			if flags&2 == 0 {
				continue
			}
			if flags&1 != 0 {
				zr, err := gzip.NewReader(bytes.NewReader(msg))
				if err != nil {
					return body
				}
				if msg, err = io.ReadAll(zr); err != nil {
					return body
				}
			}
			return string(msg)
		}
	}
	return body
}

// TestTruncatedFrameIsInvalidArgument sends requests whose body ends
// inside an enveloped message, over gRPC, gRPC-Web and Connect streaming:
// each answers INVALID_ARGUMENT (connect-go alone says INTERNAL) and
// nothing is produced.
func TestTruncatedFrameIsInvalidArgument(t *testing.T) {
	n := startNode(t, nil)
	createTopic(t, n.c, "tr", 1)
	hc := sdk.NewHTTPClient()
	msg := []byte("\x0a\x02tr") // topic: "tr"
	full := envelope(0, msg)
	promised := envelope(0, append(msg, make([]byte, 90)...))[:5+len(msg)]
	for _, proto := range []struct {
		name, path, contentType string
		extra                   map[string]string
		invalid                 []string // how the answer says INVALID_ARGUMENT
	}{
		{"grpc", "/varve.v1.ProduceService/Produce", "application/grpc", map[string]string{"Te": "trailers"}, []string{"grpc-status 3:"}},
		{"grpc-web", "/varve.v1.ProduceService/Produce", "application/grpc-web+proto", nil, []string{"grpc-status 3:", "grpc-status: 3\r\n"}},
		{"connect-stream", "/varve.v1.FetchService/Subscribe", "application/connect+proto", nil, []string{`"code":"invalid_argument"`}},
	} {
		for _, body := range []struct {
			name string
			b    []byte
		}{
			{"inside the prefix", full[:3]},
			{"inside the message", promised},
			{"after a whole message, inside the next prefix", append(full[:len(full):len(full)], 0, 0)},
		} {
			t.Run(proto.name+"/"+body.name, func(t *testing.T) {
				hdr := map[string]string{"Content-Type": proto.contentType}
				for k, v := range proto.extra {
					hdr[k] = v
				}
				resp, raw := rawCall(t, hc, n.Addr()+proto.path, hdr, body.b)
				got := statusOf(resp, raw)
				ok := false
				for _, want := range proto.invalid {
					ok = ok || strings.Contains(got, want)
				}
				if !ok || !strings.Contains(got, "truncated") {
					t.Fatalf("answer %q (HTTP %d); want INVALID_ARGUMENT naming the truncated message", got, resp.StatusCode)
				}
			})
		}
	}
	res, err := n.c.fetch.Fetch(context.Background(), connect.NewRequest(&varvev1.FetchRequest{Topic: "tr", Partition: 0, Offset: 0}))
	if err != nil || res.Msg.GetHighWatermark() != 0 {
		t.Fatalf("after truncated produces: high watermark %d, err %v; want 0", res.Msg.GetHighWatermark(), err)
	}
}

// gzipBomb is a gzip stream of size zero bytes: one small member repeated
// (a gzip reader reads concatenated members as one stream).
func gzipBomb(t testing.TB, size int64) []byte {
	t.Helper()
	const member = 1 << 20
	var one bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&one, gzip.BestCompression)
	zw.Write(make([]byte, member))
	zw.Close()
	return bytes.Repeat(one.Bytes(), int(size/member))
}

// TestCompressedRequestStopsAtTheLimit sends gzip bombs (1 GiB of zeros in
// about 1 MB) through each way a request can be compressed: Connect's
// Content-Encoding, Connect streaming's Connect-Content-Encoding and
// gRPC's grpc-encoding. Each is refused with RESOURCE_EXHAUSTED naming
// max_request_bytes, after inflating no more than the limit: connect-go's
// own gzip reader inflates the whole GiB to report its size.
func TestCompressedRequestStopsAtTheLimit(t *testing.T) {
	const limit = 4 << 20
	n := startNode(t, func(c *node.Config) { c.MaxRequestBytes = limit })
	createTopic(t, n.c, "gz", 1)
	bomb := gzipBomb(t, 1<<30)
	hc := sdk.NewHTTPClient()
	for _, tc := range []struct {
		name string
		path string
		hdr  map[string]string
		body []byte
	}{
		{"connect Content-Encoding", "/varve.v1.ProduceService/Produce",
			map[string]string{"Content-Type": "application/proto", "Content-Encoding": "gzip"}, bomb},
		{"connect streaming Connect-Content-Encoding", "/varve.v1.FetchService/Subscribe",
			map[string]string{"Content-Type": "application/connect+proto", "Connect-Content-Encoding": "gzip"}, envelope(1, bomb)},
		{"grpc grpc-encoding", "/varve.v1.ProduceService/Produce",
			map[string]string{"Content-Type": "application/grpc", "Grpc-Encoding": "gzip", "Te": "trailers"}, envelope(1, bomb)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, raw := rawCall(t, hc, n.Addr()+tc.path, tc.hdr, tc.body)
			got := statusOf(resp, raw)
			t.Logf("refused in %v: %s", time.Since(start), got)
			exhausted := strings.Contains(got, "grpc-status 8:") || strings.Contains(got, `"code":"resource_exhausted"`)
			if !exhausted || !strings.Contains(got, fmt.Sprintf("max_request_bytes (%d bytes)", limit)) {
				t.Fatalf("answer %q (HTTP %d); want RESOURCE_EXHAUSTED naming max_request_bytes (%d bytes)", got, resp.StatusCode, limit)
			}
			if strings.Contains(got, "1073741824") {
				t.Fatalf("answer %q: the node inflated the whole bomb to report its size", got)
			}
		})
	}
	// A compressed request within the limit still works.
	pc := newClients(n.Addr())
	gz := varvev1connect.NewProduceServiceClient(hc, n.Addr(), connect.WithSendGzip())
	req := &varvev1.ProduceRequest{Topic: "gz"}
	for range 3 {
		req.Records = append(req.Records, &varvev1.ProduceRecord{Record: &varvev1.Record{Value: make([]byte, 300<<10)}})
	}
	if _, err := gz.Produce(context.Background(), connect.NewRequest(req)); err != nil {
		t.Fatalf("gzip produce of 900 KiB under the %d-byte limit: %v", limit, err)
	}
	res, err := pc.fetch.Fetch(context.Background(), connect.NewRequest(&varvev1.FetchRequest{Topic: "gz", Partition: 0, Offset: 0, MaxBytes: limit}))
	if err != nil || len(res.Msg.GetRecords()) != 3 {
		t.Fatalf("fetch of the gzip-produced records: %v", err)
	}
}
