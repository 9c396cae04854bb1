package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
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
	if _, err := c.CreateTopic(ctx, "clicks", 2, nil); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for round := range 3 {
		var recs []sdk.Record
		for p := range int32(2) {
			for i := range 10 {
				recs = append(recs, sdk.Record{Partition: p, Key: []byte("k"), Value: []byte("v,\"x\"\n" + string(rune('a'+i))),
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
	pf, err = file.OpenParquetFile(filepath.Join(tree, "topic=clicks", "partition=1", "window=20260501T000200Z.parquet"), false)
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
