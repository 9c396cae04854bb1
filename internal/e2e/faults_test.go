package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// TestCorruptBlockServesRecordsBeforeIt corrupts one block of a real
// segment object in MinIO (records 100-199 of a partition whose records
// 0-99 sit in another object) and reads across it: a fetch from offset 50
// returns the intact records 50-99, the next fetch from 100 answers
// DATA_LOSS naming the partition, the offsets and the object, and
// `varve consume --from earliest` prints records 0-99 before failing with
// that error.
func TestCorruptBlockServesRecordsBeforeIt(t *testing.T) {
	c := newCluster(t)
	listen := loopbackListen(t)
	n := c.startServe("corrupt", listen)
	a := newAPI(n.addr)
	const topic = "corrupt"
	a.createTopic(t, topic, 1)
	for batch := range 2 {
		req := &varvev1.ProduceRequest{Topic: topic}
		for i := range 100 {
			req.Records = append(req.Records, &varvev1.ProduceRecord{Record: &varvev1.Record{Value: fmt.Appendf(nil, "v%d", batch*100+i)}})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := a.produce.Produce(ctx, connect.NewRequest(req))
		cancel()
		if err != nil {
			t.Fatalf("produce batch %d: %v", batch, err)
		}
	}
	// The node keeps the blocks it flushed in memory: stop it so that the
	// next one reads the bucket.
	n.stopGracefully(30 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	meta, err := metadata.Connect(ctx, metadata.Config{Endpoints: c.etcd})
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	first, _, found, _, err := meta.LookupIndex(ctx, topic, 0, 50)
	if err != nil || !found || first.Base != 0 || first.Records != 100 {
		t.Fatalf("index entry of offset 50: %+v found=%v err=%v; want the block 0-99", first, found, err)
	}
	bad, _, found, _, err := meta.LookupIndex(ctx, topic, 0, 100)
	if err != nil || !found || bad.Base != 100 || bad.Records != 100 || bad.Object == first.Object {
		t.Fatalf("index entry of offset 100: %+v found=%v err=%v; want the block 100-199 in another object than %s", bad, found, err, first.Object)
	}
	cfg := c.minio.S3Config(c.bucket)
	cfg.Prefix = "varve"
	st, err := tier.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := st.GetRange(ctx, bad.Object, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	for i := bad.Off + segment.BlockHeaderSize; i < bad.Off+bad.Len; i += 7 {
		obj[i] ^= 0xff // flip bytes in the block's payload
	}
	if err := st.Delete(ctx, bad.Object); err != nil {
		t.Fatal(err)
	}
	if err := st.PutIfAbsent(ctx, bad.Object, obj); err != nil {
		t.Fatal(err)
	}

	n = c.startServe("corrupt", listen)
	a = newAPI(n.addr)
	res, err := a.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: 0, Offset: 50, MaxBytes: 1 << 20}))
	if err != nil {
		t.Fatalf("fetch from offset 50 (records 50-99 are intact): %v", err)
	}
	recs := res.Msg.GetRecords()
	if len(recs) != 50 || recs[0].GetOffset() != 50 || recs[49].GetOffset() != 99 || string(recs[49].GetValue()) != "v99" || res.Msg.GetNextOffset() != 100 {
		t.Fatalf("fetch from offset 50: %d records, next_offset %d; want offsets 50-99 and next_offset 100", len(recs), res.Msg.GetNextOffset())
	}
	_, err = a.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: 0, Offset: 100, MaxBytes: 1 << 20}))
	if connect.CodeOf(err) != connect.CodeDataLoss {
		t.Fatalf("fetch from offset 100 (the corrupt block): %v; want DATA_LOSS", err)
	}
	for _, want := range []string{topic + "/0 offsets 100-199", bad.Object} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("fetch from offset 100: error %q does not name %q", err, want)
		}
	}

	r := runCLI(t, "", "consume", topic, "--from", "earliest", "--format", "json", "--addr", n.addr)
	got := parseConsumed(t, topic, r.stdout, r.String())
	if len(got) != 100 || got[0].Offset != 0 || got[99].Offset != 99 {
		t.Fatalf("consume printed %d records (%s); want offsets 0-99 before the corrupt block\n%s", len(got), summarize(got), r)
	}
	if r.code == 0 {
		t.Fatalf("consume across a corrupt block exited 0\n%s", r)
	}
	for _, want := range []string{"offsets 100-199", bad.Object, "data_loss"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("consume's error does not name %q\n%s", want, r)
		}
	}
	t.Logf("consume exited %d after 100 records: %s", r.code, strings.TrimSpace(r.stderr))
}

// gzipBomb is a gzip stream of size zero bytes in about size/1000 bytes:
// one member of 1 MiB of zeros, repeated (a gzip reader reads concatenated
// members as one stream).
func gzipBomb(t testing.TB, size int64) []byte {
	t.Helper()
	const member = 1 << 20
	var one bytes.Buffer
	zw, err := gzip.NewWriterLevel(&one, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(make([]byte, member))
	zw.Close()
	return bytes.Repeat(one.Bytes(), int(size/member))
}

// procStatus returns a field of /proc/PID/status in bytes (VmRSS, VmHWM).
func procStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status %s: %v", pid, field, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// bombAnswer posts a compressed Produce and returns the Connect code and
// message of the answer.
func bombAnswer(t testing.TB, addr string, grpc bool, bomb []byte) (code, msg string) {
	t.Helper()
	var body []byte
	req, err := http.NewRequest(http.MethodPost, addr+"/varve.v1.ProduceService/Produce", nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := httpClient
	if grpc {
		body = binary.BigEndian.AppendUint32([]byte{1}, uint32(len(bomb)))
		body = append(body, bomb...)
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Grpc-Encoding", "gzip")
		req.Header.Set("Te", "trailers")
		hc = sdk.NewHTTPClient()
	} else {
		body = bomb
		req.Header.Set("Content-Type", "application/proto")
		req.Header.Set("Content-Encoding", "gzip")
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	resp, err := hc.Do(req)
	if err != nil {
		t.Errorf("post a gzip bomb: %v", err)
		return "", ""
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if grpc {
		return resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	}
	var e struct{ Code, Message string }
	if err := json.Unmarshal(raw, &e); err != nil {
		return fmt.Sprintf("HTTP %d", resp.StatusCode), string(raw)
	}
	return e.Code, e.Message
}

// TestGzipBombMemory sends `varve serve` (max_request_bytes at its default,
// 64 MiB) eight concurrent gzip bodies of about 100 KB that inflate to 100
// MiB each, twice, half over Connect's Content-Encoding and half over
// gRPC's grpc-encoding, then one that inflates to 1 GiB. Every one is
// refused with RESOURCE_EXHAUSTED naming max_request_bytes, and the node's
// peak RSS (VmHWM) stays below idle + 2 × max_request_bytes.
func TestGzipBombMemory(t *testing.T) {
	const maxRequestBytes = node.DefaultMaxRequestBytes // the default
	c := newCluster(t)
	n := c.startServe("bomb", loopbackListen(t))
	a := newAPI(n.addr)
	a.createTopic(t, "bomb", 1)
	pid := n.cmd.Process.Pid
	idle := procStatus(t, pid, "VmRSS")
	bomb := gzipBomb(t, 100<<20)
	for round := range 2 {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				code, msg := bombAnswer(t, n.addr, i%2 == 1, bomb)
				if code != "resource_exhausted" && code != "8" {
					t.Errorf("round %d bomb %d: answer %s %q, want RESOURCE_EXHAUSTED", round, i, code, msg)
				}
			})
		}
		wg.Wait()
		t.Logf("after round %d of 8 bombs: peak RSS +%d MiB", round+1, (procStatus(t, pid, "VmHWM")-idle)>>20)
	}
	big := gzipBomb(t, 1<<30)
	start := time.Now()
	code, msg := bombAnswer(t, n.addr, false, big)
	took := time.Since(start)
	if code != "resource_exhausted" || !strings.Contains(msg, fmt.Sprintf("max_request_bytes (%d bytes)", maxRequestBytes)) {
		t.Errorf("1 GiB bomb: answer %s %q, want RESOURCE_EXHAUSTED naming max_request_bytes (%d bytes)", code, msg, maxRequestBytes)
	}
	peak := procStatus(t, pid, "VmHWM")
	t.Logf("idle RSS %d MiB, peak RSS %d MiB (+%d MiB; bound +%d MiB); the 1 GiB bomb (%d KB) was refused in %v: %s",
		idle>>20, peak>>20, (peak-idle)>>20, 2*maxRequestBytes>>20, len(big)>>10, took.Round(time.Millisecond), msg)
	if peak-idle >= 2*maxRequestBytes {
		t.Errorf("peak RSS %d MiB is %d MiB above idle (%d MiB); want less than 2 × max_request_bytes = %d MiB",
			peak>>20, (peak-idle)>>20, idle>>20, 2*maxRequestBytes>>20)
	}
	// The node still serves.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "bomb", Records: []*varvev1.ProduceRecord{{Record: &varvev1.Record{Value: []byte("after")}}}})); err != nil {
		t.Fatalf("produce after the bombs: %v", err)
	}
}
