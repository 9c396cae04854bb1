package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// TestScanTableAlignsAcrossBatches: `scan --format table` lines up the rows
// of every batch, not only within each batch.
func TestScanTableAlignsAcrossBatches(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "user", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "amount", Type: arrow.PrimitiveTypes.Int64},
		{Name: "note", Type: arrow.BinaryTypes.String},
	}, nil)
	batch := func(users []string, amounts []int64) arrow.RecordBatch {
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		defer b.Release()
		for i, u := range users {
			b.Field(0).(*array.StringBuilder).Append(u)
			b.Field(1).(*array.Int64Builder).Append(amounts[i])
			b.Field(2).(*array.StringBuilder).Append("n")
		}
		return b.NewRecordBatch()
	}
	recs := []arrow.RecordBatch{
		batch([]string{"a", "b"}, []int64{1, 2}),
		batch([]string{"a much longer user"}, []int64{1234567}),
		batch([]string{"ü"}, []int64{3}),
	}
	rd, err := array.NewRecordReader(schema, recs)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := writeColumns(&out, rd, "table"); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"USER                AMOUNT   NOTE",
		"a                   1        n",
		"b                   2        n",
		"a much longer user  1234567  n",
		"ü                   3        n",
		"",
	}, "\n")
	if out.String() != want {
		t.Fatalf("table not aligned across batches:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestTableWriterWindow: past the first tableWindow rows a table prints as
// it goes, keeping the widths it has.
func TestTableWriterWindow(t *testing.T) {
	var out bytes.Buffer
	tw := newTableWriter(&out)
	tw.row("K", "V")
	for range tableWindow {
		tw.row("kk", "v")
	}
	if out.Len() == 0 {
		t.Fatal("nothing printed after the window filled")
	}
	tw.row("k", "v")
	if err := tw.flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != tableWindow+2 || lines[0] != "K   V" || lines[len(lines)-1] != "k   v" {
		t.Fatalf("%d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
}
