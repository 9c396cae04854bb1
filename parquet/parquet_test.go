package parquet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/varve-io/varve/parquet"
)

var schema = arrow.NewSchema([]arrow.Field{
	{Name: "topic", Type: arrow.BinaryTypes.String},
	{Name: "partition", Type: arrow.PrimitiveTypes.Int32},
	{Name: "offset", Type: arrow.PrimitiveTypes.Int64},
	{Name: "timestamp", Type: &arrow.TimestampType{Unit: arrow.Millisecond, TimeZone: "UTC"}},
}, nil)

// records makes a reader of n rows per partition, partitions one after
// another, timestamps one second apart: what a scan returns.
func records(t *testing.T, partitions int32, n int) array.RecordReader {
	t.Helper()
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	var recs []arrow.RecordBatch
	for p := range partitions {
		for i := range n {
			b.Field(0).(*array.StringBuilder).Append("t")
			b.Field(1).(*array.Int32Builder).Append(p)
			b.Field(2).(*array.Int64Builder).Append(int64(i))
			b.Field(3).(*array.TimestampBuilder).Append(arrow.Timestamp(1_767_225_600_000 + int64(i)*1000))
		}
		recs = append(recs, b.NewRecordBatch())
	}
	rd, err := array.NewRecordReader(schema, recs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		r.Release()
	}
	t.Cleanup(rd.Release)
	return rd
}

// TestWriteRoundTrip: Write makes one Parquet file that reads back as the
// rows and schema written.
func TestWriteRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	n, err := parquet.Write(&buf, records(t, 2, 50), parquet.Options{RowGroupRows: 16})
	if err != nil || n != 100 {
		t.Fatalf("wrote %d rows: %v", n, err)
	}
	pf, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if pf.NumRows() != 100 || pf.NumRowGroups() < 100/16 {
		t.Fatalf("%d rows in %d row groups", pf.NumRows(), pf.NumRowGroups())
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	got, err := fr.Schema()
	if err != nil || got.NumFields() != schema.NumFields() {
		t.Fatalf("schema %v, want %v: %v", got, schema, err)
	}
	for i, f := range schema.Fields() {
		if g := got.Field(i); g.Name != f.Name || !arrow.TypeEqual(g.Type, f.Type) {
			t.Errorf("field %d: %v, want %v", i, g, f)
		}
	}
}

// mapBucket is a Bucket in memory that refuses to overwrite.
type mapBucket struct {
	mu   sync.Mutex
	objs map[string][]byte
}

func (b *mapBucket) PutIfAbsent(_ context.Context, key string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objs[key]; ok {
		return fmt.Errorf("put %s: %w", key, parquet.ErrExists)
	}
	b.objs[key] = slices.Clone(data)
	return nil
}

// TestExportLayout: an export names its files by topic, partition, window
// and offsets, in a directory and in a bucket alike, and never overwrites a
// file of the bucket.
func TestExportLayout(t *testing.T) {
	ctx := context.Background()
	o := parquet.Options{Window: time.Minute}
	dir := t.TempDir()
	files, err := parquet.ExportDir(ctx, records(t, 2, 90), dir, o)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range files {
		rel, _ := filepath.Rel(dir, f.Path)
		paths = append(paths, filepath.ToSlash(rel))
	}
	want := []string{
		"topic=t/partition=0/date=2026-01-01/hour=00/part-0-59.parquet",
		"topic=t/partition=0/date=2026-01-01/hour=00/part-60-89.parquet",
		"topic=t/partition=1/date=2026-01-01/hour=00/part-0-59.parquet",
		"topic=t/partition=1/date=2026-01-01/hour=00/part-60-89.parquet",
	}
	if !slices.Equal(paths, want) {
		t.Fatalf("files %q, want %q", paths, want)
	}

	b := &mapBucket{objs: map[string][]byte{}}
	files, err = parquet.ExportBucket(ctx, records(t, 2, 90), b, t.TempDir(), o)
	if err != nil || len(files) != 4 || files[0].Path != want[0] || files[0].Rows != 60 || files[0].Bytes != int64(len(b.objs[want[0]])) {
		t.Fatalf("bucket export %+v: %v", files, err)
	}
	if _, err := parquet.ExportBucket(ctx, records(t, 2, 90), b, t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "already exists in the bucket (an export never overwrites)") {
		t.Fatalf("export over existing files: %v", err)
	}

	// Records without the columns that name the files are refused.
	noOff := arrow.NewSchema([]arrow.Field{{Name: "topic", Type: arrow.BinaryTypes.String}}, nil)
	rd, _ := array.NewRecordReader(noOff, nil)
	defer rd.Release()
	if _, err := parquet.ExportDir(ctx, rd, t.TempDir(), parquet.Options{}); !errors.Is(err, parquet.ErrMissingColumns) {
		t.Fatalf("export without offsets: %v", err)
	}
}
