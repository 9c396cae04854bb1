package reqlimit

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// inflate reads d as connect-go does: into a reset bytes.Buffer, through a
// LimitReader of the limit plus one byte, closing it after.
func inflate(d *boundedGzip, src []byte, limit int64) ([]byte, error) {
	var dst bytes.Buffer
	if err := d.Reset(bytes.NewReader(src)); err != nil {
		return nil, err
	}
	_, err := dst.ReadFrom(io.LimitReader(d, limit+1))
	if cerr := d.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return dst.Bytes(), err
}

// TestInflateBudgetIsShared: while one request holds the budget, another
// is refused with RESOURCE_EXHAUSTED and a retry delay; once the first is
// done (its buffers collected), a request inflates in full; a request
// alone whose buffers would pass the budget is refused without retry
// advice.
func TestInflateBudgetIsShared(t *testing.T) {
	const limit = 1 << 20
	b := &inflateBudget{limit: limit, capacity: limit}
	bomb := gzipped(t, make([]byte, 8<<20))

	first := &boundedGzip{budget: b}
	if err := first.Reset(bytes.NewReader(bomb)); err != nil {
		t.Fatal(err)
	}
	var held bytes.Buffer
	if _, err := held.ReadFrom(io.LimitReader(first, 200<<10)); err != nil {
		t.Fatal(err)
	}
	if first.held == 0 {
		t.Fatal("the first request drew nothing from the budget")
	}

	_, err := inflate(&boundedGzip{budget: b}, bomb, limit)
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "retry") {
		t.Fatalf("second request while the first holds the budget: %v; want RESOURCE_EXHAUSTED advising a retry", err)
	}
	var ce *connect.Error
	retry := false
	if errors.As(err, &ce) {
		for _, d := range ce.Details() {
			if v, derr := d.Value(); derr == nil {
				_, retry = v.(*errdetails.RetryInfo)
			}
		}
	}
	if !retry {
		t.Fatalf("busy refusal without RetryInfo: %v", err)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if b.used != 0 {
		t.Fatalf("budget holds %d bytes after the only request closed", b.used)
	}
	want := bytes.Repeat([]byte("varve "), 40<<10) // 240 KiB
	got, err := inflate(&boundedGzip{budget: b}, gzipped(t, want), limit)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("request after the first is done: %d bytes, %v; want %d bytes", len(got), err, len(want))
	}

	_, err = inflate(&boundedGzip{budget: b}, bomb, limit)
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "max_request_bytes (1048576 bytes)") || strings.Contains(err.Error(), "retry") {
		t.Fatalf("a lone bomb: %v; want RESOURCE_EXHAUSTED naming max_request_bytes without retry advice", err)
	}
	if b.used != 0 {
		t.Fatalf("budget holds %d bytes after every request closed", b.used)
	}
}
