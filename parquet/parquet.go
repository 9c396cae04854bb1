package parquet

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Errors callers branch on.
var (
	// ErrMissingColumns: an export's records lack the columns that name
	// its files (topic, partition, offset; timestamp with a window).
	ErrMissingColumns = errors.New("missing columns")
	// ErrExists: a Bucket already holds an object under the key. A Bucket
	// reports it by wrapping ErrExists.
	ErrExists = errors.New("object already exists")
)

// Defaults.
const (
	// DefaultRowGroupRows bounds a row group, and so the memory a writer
	// buffers before flushing one.
	DefaultRowGroupRows = 128 << 10
	// DefaultMaxFileBytes bounds the files of an export.
	DefaultMaxFileBytes = 256 << 20
	// maxOpenFiles bounds the files an export keeps open at once.
	maxOpenFiles = 32
)

// Options tune Parquet output.
type Options struct {
	// RowGroupRows caps the rows of a row group (0: 128 Ki).
	RowGroupRows int64
	// Window, for exports, splits each partition's records into files by
	// timestamp: one file per window of this length (0: one file per
	// partition).
	Window time.Duration
	// MaxFileBytes, for exports, starts a new file once one holds about
	// this many bytes (0: 256 MiB). A store export holds a whole file in
	// memory while uploading it.
	MaxFileBytes int64
}

// Properties are the Parquet writer settings of every export: zstd,
// column statistics (min/max/nulls, so readers prune row groups by offset
// and timestamp), dictionary encoding only for the topic column.
func Properties(o Options) *parquet.WriterProperties {
	rows := o.RowGroupRows
	if rows <= 0 {
		rows = DefaultRowGroupRows
	}
	return parquet.NewWriterProperties(
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithStats(true),
		parquet.WithDictionaryDefault(false),
		parquet.WithDictionaryFor("topic", true),
		parquet.WithMaxRowGroupLength(rows),
		parquet.WithCreatedBy("varve"),
	)
}

// Write writes every batch of rd to w as one Parquet file and returns the
// rows written.
func Write(w io.Writer, rd array.RecordReader, o Options) (int64, error) {
	fw, err := pqarrow.NewFileWriter(rd.Schema(), w, Properties(o), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return 0, fmt.Errorf("parquet writer: %w", err)
	}
	var rows int64
	for rd.Next() {
		rec := rd.RecordBatch()
		if err := fw.WriteBuffered(rec); err != nil {
			fw.Close()
			return rows, fmt.Errorf("write parquet: %w", err)
		}
		rows += rec.NumRows()
	}
	if err := rd.Err(); err != nil {
		fw.Close()
		return rows, err
	}
	if err := fw.Close(); err != nil {
		return rows, fmt.Errorf("close parquet: %w", err)
	}
	return rows, nil
}
