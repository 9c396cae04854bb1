package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/tier"
)

// runCLI runs the varve command line in-process and returns stdout, stderr.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestScanCommand(t *testing.T) {
	ctx := context.Background()
	d, err := node.StartDev(ctx, node.DevConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Node: node.Config{Linger: 10 * time.Millisecond}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		d.Close(cctx)
	})
	addr := d.Addr()
	c := sdk.New(addr)
	defer c.Close()
	if _, err := admin.NewFromClient(c).CreateTopic(ctx, "clicks", 2, nil); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for round := range 3 {
		var recs []sdk.Record
		for p := range int32(2) {
			for i := range 10 {
				recs = append(recs, sdk.Record{Partition: p, ExplicitPartition: true, Key: []byte("k"), Value: []byte("v,\"x\"\n" + string(rune('a'+i))),
					Timestamp: base.Add(time.Duration(round) * time.Minute), Headers: []sdk.Header{{Key: "h", Value: []byte{0xff}}}})
			}
		}
		if _, err := c.Produce(ctx, "clicks", recs); err != nil {
			t.Fatal(err)
		}
	}
	a := "--addr=" + addr

	// jsonl is what consume --format json prints.
	scanned, _, err := runCLI(t, "scan", "clicks", a, "--format", "jsonl")
	if err != nil {
		t.Fatal(err)
	}
	consumed, _, err := runCLI(t, "consume", "clicks", a, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	// consume interleaves partitions as its polls return; scan goes
	// partition by partition: compare as sets of lines, and scan's order.
	sortedLines := func(s string) string {
		l := strings.Split(strings.TrimSpace(s), "\n")
		slices.Sort(l)
		return strings.Join(l, "\n")
	}
	if strings.Count(scanned, "\n") != 60 || sortedLines(scanned) != sortedLines(consumed) {
		t.Fatalf("scan jsonl differs from consume json:\n%s\n---\n%s", scanned, consumed)
	}
	var prev jsonRecord
	for i, line := range strings.Split(strings.TrimSpace(scanned), "\n") {
		var r jsonRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if i > 0 && (r.Partition < prev.Partition || (r.Partition == prev.Partition && r.Offset != prev.Offset+1)) {
			t.Fatalf("scan order: %s after %+v", line, prev)
		}
		prev = r
	}

	// A range mixing a time and an offset, one partition.
	out, _, err := runCLI(t, "scan", "clicks", a, "--format", "csv", "--partition", "1",
		"--from", base.Add(time.Minute).Format(time.RFC3339), "--to", "25")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+15 || rows[1][1] != "1" || rows[1][2] != "10" || rows[15][2] != "24" || rows[1][5] != "v,\"x\"\na" {
		t.Fatalf("csv: %q", rows)
	}
	var hs []map[string]any
	if err := json.Unmarshal([]byte(rows[1][6]), &hs); err != nil || hs[0]["value_encoding"] != "base64" {
		t.Fatalf("csv headers %q: %v", rows[1][6], err)
	}

	out, _, err = runCLI(t, "scan", "clicks", a, "--format", "table", "--partition", "0", "--to", "2")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "PARTITION") || !strings.Contains(lines[1], `v,"x"\na`) {
		t.Fatalf("table:\n%s", out)
	}

	dir := t.TempDir()
	arrowFile := filepath.Join(dir, "clicks.arrows")
	_, stderr, err := runCLI(t, "scan", "clicks", a, "--format", "arrow", "-o", arrowFile, "--progress", "always")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "wrote 60 records to "+arrowFile) {
		t.Fatalf("stderr: %q", stderr)
	}
	f, err := os.Open(arrowFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd, err := ipc.NewReader(f, ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rd.Next() {
		n += int(rd.RecordBatch().NumRows())
	}
	rd.Release()
	if n != 60 {
		t.Fatalf("arrow file holds %d rows", n)
	}

	pq := filepath.Join(dir, "clicks.parquet")
	if _, _, err := runCLI(t, "scan", "clicks", a, "--format", "parquet", "-o", pq); err != nil {
		t.Fatal(err)
	}
	pf, err := file.OpenParquetFile(pq, false)
	if err != nil {
		t.Fatal(err)
	}
	if pf.NumRows() != 60 {
		t.Fatalf("parquet holds %d rows", pf.NumRows())
	}
	pf.Close()

	// A windowed export: a file per partition and minute (one per round).
	tree := filepath.Join(t.TempDir(), "tree")
	_, stderr, err = runCLI(t, "scan", "clicks", a, "--format", "parquet", "--window", "1m", "-o", tree)
	if err != nil || !strings.Contains(stderr, "wrote 60 records to 6 files under "+tree) {
		t.Fatalf("windowed export: %v, stderr %q", err, stderr)
	}
	pf, err = file.OpenParquetFile(filepath.Join(tree, "topic=clicks", "partition=1", "date=2026-05-01", "hour=00", "part-20-29.parquet"), false)
	if err != nil {
		t.Fatal(err)
	}
	if pf.NumRows() != 10 {
		t.Fatalf("window file holds %d rows", pf.NumRows())
	}
	pf.Close()

	// Bad input: clear messages, no output file left behind.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"scan", "nope", a}, `topic "nope" not found (not_found)`},
		{[]string{"scan", "clicks", a, "--from", "10", "--to", "5"}, "inverted offset range: from 10 is after to 5 (invalid_argument)"},
		{[]string{"scan", "clicks", a, "--from", "yesterday"}, "--from must be an offset, an RFC 3339 time or a duration"},
		{[]string{"scan", "clicks", a, "--format", "xml"}, "--format must be table, csv, jsonl, arrow or parquet"},
		{[]string{"scan", "clicks", a, "--format", "parquet"}, "--format parquet needs -o FILE"},
		{[]string{"scan", "clicks", a, "--format", "csv", "--window", "1h"}, "--window is a positive duration, with --format parquet only"},
		{[]string{"scan", "clicks", a, "--partition", "7", "-o", filepath.Join(dir, "bad.csv")}, "got partition 7 (invalid_argument)"},
	} {
		_, _, err := runCLI(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("varve %s: got %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.csv")); !os.IsNotExist(err) {
		t.Errorf("a failed scan left its output file: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("output dir holds %d files, want 2 (no temporary files)", len(entries))
	}
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// startDev starts a dev node for a test and returns its address.
func startDev(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	d, err := node.StartDev(ctx, node.DevConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0",
		Node: node.Config{Linger: 10 * time.Millisecond}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		d.Close(cctx)
	})
	return d.Addr()
}

// TestScanTypedAndExportToBucket: a topic created with a schema from the
// command line is scanned as typed columns (CSV, JSON lines) and exported
// as windowed Parquet to a real MinIO bucket; DuckDB reads the downloaded
// tree with Hive partitioning and finds every record of the log, typed
// columns included.
func TestScanTypedAndExportToBucket(t *testing.T) {
	ctx := context.Background()
	srv := testenv.MinIO(t)
	bucket := srv.NewBucket(t)
	addr := startDev(t)
	a := "--addr=" + addr
	schemaFile := filepath.Join(t.TempDir(), "orders.json")
	if err := os.WriteFile(schemaFile, []byte(`[{"name":"user","type":"utf8"},{"name":"amount","type":"float64","nullable":false}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "topic", "create", "orders", a, "--partitions", "2", "--schema", `[{"name":"user","type":"int8"}]`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "topic", "alter", "orders", a, "--schema", schemaFile, "--retention-ms", "-1"); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "topic", "describe", "orders", a)
	if err != nil || !strings.Contains(out, `schema:            [{"name":"user","type":"utf8"},{"name":"amount","type":"float64","nullable":false}]`) || !strings.Contains(out, "forever") {
		t.Fatalf("describe: %v\n%s", err, out)
	}
	// The cleanup policy and compaction settings change in place too.
	if _, _, err := runCLI(t, "topic", "alter", "orders", a, "--cleanup-policy", "compact", "--min-compaction-lag-ms", "5000"); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, "topic", "describe", "orders", a)
	if err != nil || !regexp.MustCompile(`cleanup-policy:\s+compact\n`).MatchString(out) {
		t.Fatalf("describe after --cleanup-policy compact: %v\n%s", err, out)
	}
	if _, _, err := runCLI(t, "topic", "alter", "orders", a, "--cleanup-policy", "delete"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"topic", "alter", "orders", a, "--cleanup-policy", "shred"}, `--cleanup-policy must be delete or compact, not "shred"`},
		{[]string{"topic", "alter", "orders", a, "--delete-retention-ms", "0"}, "delete_retention_ms must be positive, got 0 (invalid_argument)"},
		{[]string{"topic", "create", "bad", a, "--schema", `[{"name":"x","type":"int65"}]`}, `unknown type "int65" (want bool`},
		{[]string{"topic", "create", "bad", a, "--schema", "/no/such/file"}, "--schema is neither a JSON field list nor a readable file"},
		{[]string{"topic", "alter", "orders", a, "--partitions", "1"}, "partitions can only grow: it has 2, asked 1 (invalid_argument)"},
		{[]string{"topic", "alter", "orders", a}, "nothing to change (invalid_argument)"},
		{[]string{"topic", "alter", "nope", a, "--retention-ms", "5"}, `topic "nope" not found (not_found)`},
	} {
		if _, _, err := runCLI(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("varve %s: got %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}

	// Three rounds an hour apart across midnight: three hour windows and
	// two dates per partition.
	c := sdk.New(addr)
	defer c.Close()
	base := time.Date(2026, 5, 1, 22, 30, 0, 0, time.UTC)
	type typed struct{ user, amount, err any }
	want := map[[2]int64]typed{} // partition, offset
	for round := range 3 {
		var recs []sdk.Record
		for p := range int32(2) {
			for i := range 10 {
				v := fmt.Sprintf(`{"user":"u%d","amount":%d.5}`, i, i)
				tv := typed{fmt.Sprintf("u%d", i), fmt.Sprintf("%d.5", i), nil}
				if i%4 == 3 {
					v = fmt.Sprintf(`{"user":"u%d"}`, i)
					tv = typed{nil, nil, `field "amount": missing or null, and not nullable`}
				}
				want[[2]int64{int64(p), int64(round*10 + i)}] = tv
				recs = append(recs, sdk.Record{Partition: p, ExplicitPartition: true, Key: []byte(fmt.Sprint(i)), Value: []byte(v),
					Timestamp: base.Add(time.Duration(round)*time.Hour + time.Duration(i)*time.Second), Headers: []sdk.Header{{Key: "h", Value: []byte{1}}}})
			}
		}
		if _, err := c.Produce(ctx, "orders", recs); err != nil {
			t.Fatal(err)
		}
	}

	// Typed columns in text outputs.
	out, _, err = runCLI(t, "scan", "orders", a, "--format", "csv", "--partition", "1", "--to", "4")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 || strings.Join(rows[0], ",") != "topic,partition,offset,timestamp,key,user,amount,_error" ||
		strings.Join(rows[1], ",") != "orders,1,0,2026-05-01T22:30:00Z,0,u0,0.5," ||
		strings.Join(rows[4], ",") != `orders,1,3,2026-05-01T22:30:03Z,3,,,field "amount": missing or null, and not nullable` {
		t.Fatalf("typed csv: %q", rows)
	}
	out, _, err = runCLI(t, "scan", "orders", a, "--format", "jsonl", "--partition", "0", "--to", "1", "--columns", "amount,offset,value")
	if err != nil || strings.TrimSpace(out) != `{"offset":0,"value":"{\"user\":\"u0\",\"amount\":0.5}","amount":0.5}` {
		t.Fatalf("typed jsonl: %v %s", err, out)
	}
	out, _, err = runCLI(t, "scan", "orders", a, "--format", "table", "--partition", "0", "--to", "4")
	if err != nil || !strings.Contains(out, "USER") || !strings.Contains(out, "(null)") {
		t.Fatalf("typed table: %v\n%s", err, out)
	}
	if _, _, err := runCLI(t, "scan", "orders", a, "--columns", "offset,price"); err == nil || !strings.Contains(err.Error(), `unknown column "price"`) {
		t.Fatalf("unknown column: %v", err)
	}

	// Export to the bucket; credentials from the AWS environment.
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	dest := "s3://" + bucket + "/exports/"
	exportArgs := []string{"scan", "orders", a, "--format", "parquet", "-o", dest, "--window", "1h",
		"--s3-endpoint", srv.Endpoint, "--s3-path-style", "--columns", "topic,partition,offset,timestamp,key,value,headers,user,amount,_error"}
	_, stderr, err := runCLI(t, exportArgs...)
	if err != nil || !strings.Contains(stderr, "wrote 60 records to 6 files under "+dest) {
		t.Fatalf("export to %s: %v, stderr %q", dest, err, stderr)
	}
	cfg := srv.S3Config(bucket)
	st, err := tier.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	local := t.TempDir()
	if err := st.List(ctx, "", func(o tier.ObjectInfo) error {
		keys = append(keys, o.Key)
		b, err := st.GetRange(ctx, o.Key, 0, -1)
		if err != nil {
			return err
		}
		path := filepath.Join(local, filepath.FromSlash(o.Key))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return os.WriteFile(path, b, 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	var wantKeys []string
	for p := range 2 {
		wantKeys = append(wantKeys,
			fmt.Sprintf("exports/topic=orders/partition=%d/date=2026-05-01/hour=22/part-0-9.parquet", p),
			fmt.Sprintf("exports/topic=orders/partition=%d/date=2026-05-01/hour=23/part-10-19.parquet", p),
			fmt.Sprintf("exports/topic=orders/partition=%d/date=2026-05-02/hour=00/part-20-29.parquet", p))
	}
	slices.Sort(wantKeys)
	if strings.Join(keys, "\n") != strings.Join(wantKeys, "\n") {
		t.Fatalf("bucket holds\n%s\nwant\n%s", strings.Join(keys, "\n"), strings.Join(wantKeys, "\n"))
	}
	// Exporting again never overwrites.
	if _, _, err := runCLI(t, exportArgs...); err == nil || !strings.Contains(err.Error(), "already exists in the bucket") {
		t.Fatalf("second export: %v", err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"scan", "orders", a, "--format", "csv", "-o", dest}, "-o s3://… is for --format parquet only"},
		{[]string{"scan", "orders", a, "--format", "parquet", "-o", "s3:///x"}, "no bucket"},
	} {
		if _, _, err := runCLI(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("varve %s: got %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}

	// DuckDB reads the tree and finds the log.
	dir := testenv.InteropDir(t)
	cmd := exec.Command("node", filepath.Join(dir, "read_parquet.mjs"), filepath.Join(local, "exports", "*", "*", "*", "*", "*.parquet"), "user,amount,_error")
	cmd.Dir = dir
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	text, err := cmd.Output()
	if err != nil {
		t.Fatalf("node read_parquet.mjs: %v\n%s", err, errOut.String())
	}
	var got int
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	if lines[0] != `{"files":6}` {
		t.Fatalf("duckdb: %s", lines[0])
	}
	for _, line := range lines[1 : len(lines)-1] {
		var r struct {
			Row struct {
				Topic     string         `json:"topic"`
				Partition any            `json:"partition"`
				Offset    any            `json:"offset"`
				TS        any            `json:"ts"`
				Key       string         `json:"key"`
				Value     string         `json:"value"`
				Extra     map[string]any `json:"extra"`
				Headers   [][]string     `json:"headers"`
			} `json:"row"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		p, _ := strconv.ParseInt(fmt.Sprint(r.Row.Partition), 10, 64)
		off, _ := strconv.ParseInt(fmt.Sprint(r.Row.Offset), 10, 64)
		tv, ok := want[[2]int64{p, off}]
		if !ok || r.Row.Topic != "orders" || len(r.Row.Headers) != 1 {
			t.Fatalf("duckdb row %s: not in the log", line)
		}
		delete(want, [2]int64{p, off})
		if r.Row.Extra["user"] != tv.user || r.Row.Extra["amount"] != tv.amount || r.Row.Extra["_error"] != tv.err {
			t.Fatalf("duckdb row %s: typed columns, want %v", line, tv)
		}
		got++
	}
	if got != 60 || len(want) != 0 {
		t.Fatalf("duckdb read %d rows; %d records of the log missing", got, len(want))
	}
	if !strings.Contains(lines[len(lines)-1], `"compression":"ZSTD"`) {
		t.Fatalf("stats: %s", lines[len(lines)-1])
	}
}
