package scan_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/parquet"
	"github.com/varve-io/varve/scan"
	"github.com/varve-io/varve/tier/segment"
)

func TestExportParquetReadByDuckDB(t *testing.T) {
	e := newScanEnv(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	const parts, flushes, perFlush = 2, 3, 100
	e.produceFlushes(t, "pq", parts, flushes, perFlush, base)
	sc, err := e.r.Scan(context.Background(), scan.Request{Topic: "pq", MaxBatchRecords: 64})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	// Each flush's records are within one second: a file per partition and second.
	files, err := parquet.ExportDir(context.Background(), sc, out, parquet.Options{Window: time.Second, RowGroupRows: 40})
	sc.Release()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != parts*flushes {
		t.Fatalf("%d files, want %d", len(files), parts*flushes)
	}
	for _, f := range files {
		want := filepath.Join(out, "topic=pq", fmt.Sprintf("partition=%d", f.Partition), "date=2026-01-01", "hour=00",
			fmt.Sprintf("part-%d-%d.parquet", f.First, f.Last))
		if f.Path != want || f.Rows != perFlush || f.Bytes == 0 || f.Last-f.First != perFlush-1 {
			t.Fatalf("file %+v, want path %s and %d rows", f, want, perFlush)
		}
	}
	var want []row
	for p := range int32(parts) {
		want = append(want, fetchRange(t, e.f, "pq", p, 0, flushes*perFlush, 0, 0, nil)...)
	}

	dir := testenv.InteropDir(t)
	cmd := exec.Command("node", filepath.Join(dir, "read_parquet.mjs"), filepath.Join(out, "*", "*", "*", "*", "*.parquet"))
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	text, err := cmd.Output()
	if err != nil {
		t.Fatalf("node read_parquet.mjs: %v\n%s", err, stderr.String())
	}
	var got []row
	var nfiles int
	var stats []map[string]any
	dec := func(v any) []byte {
		if v == nil {
			return nil
		}
		b, err := base64.StdEncoding.DecodeString(v.(string))
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{}, b...)
	}
	sc2 := bufio.NewScanner(bytes.NewReader(text))
	sc2.Buffer(nil, 16<<20)
	for sc2.Scan() {
		var line struct {
			Files *int             `json:"files"`
			Row   map[string]any   `json:"row"`
			Stats []map[string]any `json:"stats"`
		}
		if err := json.Unmarshal(sc2.Bytes(), &line); err != nil {
			t.Fatalf("node printed %q: %v", sc2.Text(), err)
		}
		switch {
		case line.Files != nil:
			nfiles = *line.Files
		case line.Row != nil:
			r := line.Row
			num := func(k string) int64 {
				switch v := r[k].(type) {
				case string:
					n, _ := strconv.ParseInt(v, 10, 64)
					return n
				case float64:
					return int64(v)
				}
				t.Fatalf("column %s is %T", k, r[k])
				return 0
			}
			x := row{Topic: r["topic"].(string), Partition: int32(num("partition")), Offset: num("offset"), Timestamp: num("ts"), Key: dec(r["key"]), Value: dec(r["value"])}
			for _, h := range r["headers"].([]any) {
				kv := h.([]any)
				x.Headers = append(x.Headers, segment.Header{Key: kv[0].(string), Value: dec(kv[1])})
			}
			got = append(got, x)
		default:
			stats = line.Stats
		}
	}
	if nfiles != parts*flushes {
		t.Errorf("duckdb read %d files", nfiles)
	}
	sameRows(t, got, want)
	// Statistics are there (3 row groups of ≤40 rows per 100-row file), zstd.
	if len(stats) != 2*3*parts*flushes {
		t.Fatalf("%d offset/timestamp column chunks with stats, want %d: %v", len(stats), 2*3*parts*flushes, stats)
	}
	for _, s := range stats {
		if s["compression"] != "ZSTD" || s["min"] == nil || s["max"] == nil {
			t.Fatalf("column chunk %v: want ZSTD with min and max", s)
		}
	}
}

func TestWriteParquetRoundTrip(t *testing.T) {
	e := newScanEnv(t)
	e.produceFlushes(t, "one", 2, 2, 30, 1_700_000_000_000)
	sc, err := e.r.Scan(context.Background(), scan.Request{Topic: "one"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := parquet.Write(&buf, sc, parquet.Options{})
	sc.Release()
	if err != nil || n != 120 {
		t.Fatalf("wrote %d rows: %v", n, err)
	}
	pf, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: 1000}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	for i, f := range scan.RecordSchema.Fields() {
		if got := tbl.Schema().Field(i); got.Name != f.Name || got.Nullable != f.Nullable || got.Type.ID() != f.Type.ID() {
			t.Fatalf("column %d read back as %s, want %s", i, got, f)
		}
	}
	var got []row
	tr := array.NewTableReader(tbl, 1000)
	for tr.Next() {
		got = append(got, batchRows(tr.RecordBatch())...)
	}
	tr.Release()
	var want []row
	for p := range int32(2) {
		want = append(want, fetchRange(t, e.f, "one", p, 0, 60, 0, 0, nil)...)
	}
	sort.SliceStable(got, func(i, j int) bool { return got[i].Partition < got[j].Partition })
	sameRows(t, got, want)
	if strings.Count(pf.MetaData().GetCreatedBy(), "varve") != 1 {
		t.Errorf("created_by %q", pf.MetaData().GetCreatedBy())
	}
}
