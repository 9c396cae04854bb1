package sdk_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/sdk"
)

var scanBase = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// produceForScan writes rounds × per records to every partition, one
// Produce (and so at least one object) per round, with null and empty keys
// and values, headers (duplicates, null values) and non-UTF-8 bytes.
func produceForScan(t *testing.T, c *sdk.Client, topic string, partitions int32, rounds, per int) {
	t.Helper()
	n := 0
	for round := range rounds {
		var recs []sdk.Record
		for p := range partitions {
			for i := range per {
				r := sdk.Record{
					Partition:         p,
					ExplicitPartition: true,
					Key:               fmt.Appendf(nil, "k%d", n%5),
					Value:             fmt.Appendf(nil, "value %d \xff\x00", n),
					Timestamp:         scanBase.Add(time.Duration(round*1000+i) * time.Millisecond),
				}
				switch n % 9 {
				case 0:
					r.Key = nil
				case 1:
					r.Value = []byte{}
				case 2:
					r.Value = nil
				}
				if n%3 == 0 {
					r.Headers = []sdk.Header{{Key: "h", Value: []byte("1")}, {Key: "h", Value: nil}, {Key: "e", Value: []byte{}}}
				}
				recs = append(recs, r)
				n++
			}
		}
		if _, err := c.Produce(testCtx(t), topic, recs); err != nil {
			t.Fatal(err)
		}
	}
}

// scanRow is a record of a scan, as comparable text.
func scanRowString(topic string, p int32, off int64, ts int64, key, value []byte, headers []sdk.Header) string {
	s := fmt.Sprintf("%s/%d@%d ts=%d key=%s value=%s", topic, p, off, ts, showB(key), showB(value))
	for _, h := range headers {
		s += fmt.Sprintf(" [%s=%s]", h.Key, showB(h.Value))
	}
	return s
}

func showB(b []byte) string {
	if b == nil {
		return "<null>"
	}
	return strconv.Quote(string(b))
}

func recordStrings(recs []sdk.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, scanRowString(r.Topic, r.Partition, r.Offset, r.Timestamp.UnixMilli(), r.Key, r.Value, r.Headers))
	}
	return out
}

func readerStrings(t *testing.T, rd array.RecordReader) ([]string, int) {
	t.Helper()
	var out []string
	batches := 0
	for rd.Next() {
		batches++
		rec := rd.RecordBatch()
		topic := rec.Column(0).(*array.String)
		part := rec.Column(1).(*array.Int32)
		off := rec.Column(2).(*array.Int64)
		ts := rec.Column(3).(*array.Timestamp)
		key := rec.Column(4).(*array.Binary)
		val := rec.Column(5).(*array.Binary)
		hl := rec.Column(6).(*array.List)
		hs := hl.ListValues().(*array.Struct)
		hk, hv := hs.Field(0).(*array.String), hs.Field(1).(*array.Binary)
		at := func(a *array.Binary, i int) []byte {
			if a.IsNull(i) {
				return nil
			}
			return append([]byte{}, a.Value(i)...) // valid and empty is not null
		}
		for i := range int(rec.NumRows()) {
			var headers []sdk.Header
			s, e := hl.ValueOffsets(i)
			for j := int(s); j < int(e); j++ {
				headers = append(headers, sdk.Header{Key: hk.Value(j), Value: at(hv, j)})
			}
			out = append(out, scanRowString(topic.Value(i), part.Value(i), off.Value(i), int64(ts.Value(i)), at(key, i), at(val, i), headers))
		}
	}
	return out, batches
}

func equalStrings(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("scan returned %d records, fetch %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("record %d:\nscan  %s\nfetch %s", i, got[i], want[i])
		}
	}
}

func TestScan(t *testing.T) {
	c := newClient(t)
	topic := uniq("scan")
	createTopic(t, c, topic, 3)
	produceForScan(t, c, topic, 3, 4, 50)

	var want []string
	for p := range int32(3) {
		want = append(want, recordStrings(readAll(t, c, topic, p))...)
	}
	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	var last sdk.ScanProgress
	rd, err := c.Scan(testCtx(t), topic, sdk.ScanOptions{MaxBatchRecords: 16, Alloc: alloc, Progress: func(p sdk.ScanProgress) { last = p }})
	if err != nil {
		t.Fatal(err)
	}
	got, batches := readerStrings(t, rd)
	if err := rd.Err(); err != nil {
		t.Fatal(err)
	}
	rd.Release()
	alloc.AssertSize(t, 0)
	equalStrings(t, got, want)
	if batches < 600/16 {
		t.Errorf("%d batches for 600 records of at most 16", batches)
	}
	if last.BlocksTotal < 12 || last.BlocksDone != last.BlocksTotal || last.RawBytesDone != last.RawBytesTotal {
		t.Errorf("final progress %+v", last)
	}

	// A range: offsets [30, 170) of partitions 2 and 0, in the second and
	// third rounds' time (each round's records are 1000 ms apart).
	rd, err = c.Scan(testCtx(t), topic, sdk.ScanOptions{
		Partitions: []int32{2, 0}, FromOffset: 30, ToOffset: 170,
		From: scanBase.Add(1000 * time.Millisecond), To: scanBase.Add(3000 * time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = readerStrings(t, rd)
	if err := rd.Err(); err != nil {
		t.Fatal(err)
	}
	rd.Release()
	want = nil
	for _, p := range []int32{2, 0} {
		for _, r := range readAll(t, c, topic, p) {
			if r.Offset >= 30 && r.Offset < 170 && !r.Timestamp.Before(scanBase.Add(time.Second)) && r.Timestamp.Before(scanBase.Add(3*time.Second)) {
				want = append(want, recordStrings([]sdk.Record{r})...)
			}
		}
	}
	if len(want) != 2*100 { // rounds 1 and 2: offsets 50-149
		t.Fatalf("expected %d records in range, the test data is off", len(want))
	}
	equalStrings(t, got, want)
}

func TestScanBadInput(t *testing.T) {
	c := newClient(t)
	topic := uniq("scanbad")
	createTopic(t, c, topic, 2)
	produceForScan(t, c, topic, 2, 1, 5)
	cases := []struct {
		name  string
		topic string
		opts  sdk.ScanOptions
		code  connect.Code
	}{
		{"unknown topic", "no-such-topic", sdk.ScanOptions{}, connect.CodeNotFound},
		{"inverted offsets", topic, sdk.ScanOptions{FromOffset: 10, ToOffset: 5}, connect.CodeInvalidArgument},
		{"inverted times", topic, sdk.ScanOptions{From: scanBase, To: scanBase.Add(-time.Hour)}, connect.CodeInvalidArgument},
		{"negative offset", topic, sdk.ScanOptions{FromOffset: -3}, connect.CodeInvalidArgument},
		{"partition out of range", topic, sdk.ScanOptions{Partitions: []int32{5}}, connect.CodeInvalidArgument},
		{"negative batch size", topic, sdk.ScanOptions{MaxBatchRecords: -1}, connect.CodeInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := c.Scan(testCtx(t), tc.topic, tc.opts)
			if err == nil {
				rd.Release()
			}
			wantCode(t, err, tc.code)
		})
	}
	// Nothing changed: the topic still holds its 10 records.
	rd, err := c.Scan(testCtx(t), topic, sdk.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	got, _ := readerStrings(t, rd)
	if len(got) != 10 || rd.Err() != nil {
		t.Fatalf("after bad scans: %d records, %v", len(got), rd.Err())
	}
}

// TestScanEmptyRangeHasSchema: a scan that matches nothing is still a
// valid Arrow stream with the schema.
func TestScanEmptyRangeHasSchema(t *testing.T) {
	c := newClient(t)
	topic := uniq("scanempty")
	createTopic(t, c, topic, 1)
	rd, err := c.Scan(testCtx(t), topic, sdk.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	if rd.Schema().NumFields() != 7 || rd.Schema().Field(3).Type.ID() != arrow.TIMESTAMP {
		t.Fatalf("schema %s", rd.Schema())
	}
	if rd.Next() || rd.Err() != nil {
		t.Fatalf("empty scan: next=true or err %v", rd.Err())
	}
}

// TestScanInteropNodeApacheArrow has the npm apache-arrow package, run by
// the machine's node, read the raw bytes of the Connect Scan stream: the
// concatenated arrow_ipc fields, as a client in another language would.
func TestScanInteropNodeApacheArrow(t *testing.T) {
	dir := testenv.InteropDir(t)
	c := newClient(t)
	topic := uniq("scanjs")
	createTopic(t, c, topic, 2)
	produceForScan(t, c, topic, 2, 3, 40)
	var want []string
	for p := range int32(2) {
		want = append(want, recordStrings(readAll(t, c, topic, p))...)
	}

	// Raw Connect (not the SDK): the bytes exactly as the server sent them.
	sc := varvev1connect.NewScanServiceClient(http.DefaultClient, addr)
	stream, err := sc.Scan(testCtx(t), connect.NewRequest(&varvev1.ScanRequest{Topic: topic, MaxBatchRecords: 25}))
	if err != nil {
		t.Fatal(err)
	}
	var ipcBytes bytes.Buffer
	msgs := 0
	for stream.Receive() {
		msgs++
		ipcBytes.Write(stream.Msg().GetArrowIpc())
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	file := filepath.Join(t.TempDir(), "scan.arrows")
	if err := os.WriteFile(file, ipcBytes.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join(dir, "read_ipc.mjs"), file)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node read_ipc.mjs: %v\n%s", err, stderr.String())
	}
	type jsRow struct {
		Schema []struct {
			Name, Type string
			Nullable   bool
		} `json:"schema"`
		Topic     string      `json:"topic"`
		Partition int32       `json:"partition"`
		Offset    string      `json:"offset"`
		Timestamp int64       `json:"timestamp"`
		Key       *string     `json:"key"`
		Value     *string     `json:"value"`
		Headers   [][]*string `json:"headers"`
		Batches   *int        `json:"batches"`
		Rows      int         `json:"rows"`
	}
	dec := func(s *string) []byte {
		if s == nil {
			return nil
		}
		b, err := base64.StdEncoding.DecodeString(*s)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{}, b...)
	}
	var got []string
	var schema string
	var batches int
	sc2 := bufio.NewScanner(bytes.NewReader(out))
	sc2.Buffer(nil, 16<<20)
	for sc2.Scan() {
		var r jsRow
		if err := json.Unmarshal(sc2.Bytes(), &r); err != nil {
			t.Fatalf("node printed %q: %v", sc2.Text(), err)
		}
		switch {
		case r.Schema != nil:
			schema = fmt.Sprint(r.Schema)
		case r.Batches != nil:
			batches = *r.Batches
		default:
			off, _ := strconv.ParseInt(r.Offset, 10, 64)
			var hs []sdk.Header
			for _, h := range r.Headers {
				hs = append(hs, sdk.Header{Key: *h[0], Value: dec(h[1])})
			}
			got = append(got, scanRowString(r.Topic, r.Partition, off, r.Timestamp, dec(r.Key), dec(r.Value), hs))
		}
	}
	wantSchema := "[{topic Utf8 false} {partition Int32 false} {offset Int64 false} {timestamp Timestamp<MILLISECOND, UTC> false} {key Binary true} {value Binary true} {headers List<Struct<{key:Utf8, value:Binary}>> false}]"
	if schema != wantSchema {
		t.Errorf("apache-arrow read schema\n%s\nwant\n%s", schema, wantSchema)
	}
	if batches < 240/25 {
		t.Errorf("apache-arrow read %d batches", batches)
	}
	equalStrings(t, got, want)
	t.Logf("apache-arrow (npm) read %d records in %d batches from %d Connect messages (%d bytes)", len(got), batches, msgs, ipcBytes.Len())
}
