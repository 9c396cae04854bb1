package sdk_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/parquet/file"

	"github.com/varve-io/varve/parquet"
	"github.com/varve-io/varve/sdk"
)

// TestExportParquet: the SDK writes a scan as Parquet, one file per
// partition and hour under a directory, or one file to a writer; every
// record is in them once.
func TestExportParquet(t *testing.T) {
	c := newClient(t)
	topic := uniq("pq")
	createTopic(t, c, topic, 3)
	produceForScan(t, c, topic, 3, 4, 50)

	dir := t.TempDir()
	files, err := c.ExportParquet(testCtx(t), topic, dir, sdk.ScanOptions{}, parquet.Options{Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("%d files, want one per partition: %+v", len(files), files)
	}
	var rows int64
	for _, f := range files {
		rel, _ := filepath.Rel(dir, f.Path)
		if want := filepath.Join("topic="+topic, "partition="+string(rune('0'+f.Partition)), "date=2026-03-01", "hour=12", "part-0-199.parquet"); rel != want {
			t.Errorf("file %s, want %s", rel, want)
		}
		b, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		pf, err := file.NewParquetReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if pf.NumRows() != f.Rows {
			t.Errorf("%s holds %d rows, the export says %d", rel, pf.NumRows(), f.Rows)
		}
		rows += pf.NumRows()
	}
	if rows != 600 {
		t.Fatalf("%d rows exported, want 600", rows)
	}

	var buf bytes.Buffer
	n, err := c.WriteParquet(testCtx(t), &buf, topic, sdk.ScanOptions{Partitions: []int32{1}})
	if err != nil || n != 200 {
		t.Fatalf("WriteParquet: %d rows, %v", n, err)
	}
	pf, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
	if err != nil || pf.NumRows() != 200 {
		t.Fatalf("the written file: %v", err)
	}

	if _, err := c.ExportParquet(testCtx(t), uniq("missing"), t.TempDir(), sdk.ScanOptions{}, parquet.Options{}); err == nil {
		t.Fatal("export of a missing topic succeeded")
	}
}
