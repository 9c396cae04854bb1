package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
)

// Parquet defaults.
const (
	// DefaultParquetRowGroupRows bounds a row group, and so the memory a
	// writer buffers before flushing one.
	DefaultParquetRowGroupRows = 128 << 10
	// DefaultParquetMaxFileBytes bounds the files of an export.
	DefaultParquetMaxFileBytes = 256 << 20
	// maxOpenParquet bounds the files an export keeps open at once.
	maxOpenParquet = 32
)

// ParquetOptions tune Parquet output.
type ParquetOptions struct {
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

// ParquetProperties are the Parquet writer settings of every export: zstd,
// column statistics (min/max/nulls, so readers prune row groups by offset
// and timestamp), dictionary encoding only for the topic column.
func ParquetProperties(o ParquetOptions) *parquet.WriterProperties {
	rows := o.RowGroupRows
	if rows <= 0 {
		rows = DefaultParquetRowGroupRows
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

// WriteParquet writes every batch of rd to w as one Parquet file and
// returns the rows written.
func WriteParquet(w io.Writer, rd array.RecordReader, o ParquetOptions) (int64, error) {
	fw, err := pqarrow.NewFileWriter(rd.Schema(), w, ParquetProperties(o), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
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

// ExportedFile is one Parquet file written by an export.
type ExportedFile struct {
	// Path is the file's path (ExportParquet) or key in the store
	// (ExportParquetToStore), relative to the store's prefix.
	Path      string
	Partition int32
	// WindowStart is the start of the file's time window (zero without a
	// window).
	WindowStart time.Time
	// First and Last are the smallest and largest offsets in the file.
	First, Last int64
	Rows        int64
	Bytes       int64
}

// exportSink is where an export's files go: a local directory or a store.
type exportSink interface {
	// create opens a temporary file for a file that will be named under rel
	// (a slash-separated directory).
	create(rel string) (*os.File, error)
	// commit publishes the closed temporary file as rel/name and removes it;
	// it returns the file's path or key.
	commit(tmp, rel, name string) (string, error)
}

// dirSink writes files in a local directory: a temporary file next to the
// final one, renamed when complete.
type dirSink struct{ dir string }

func (d dirSink) create(rel string) (*os.File, error) {
	pdir := filepath.Join(d.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, err
	}
	return os.CreateTemp(pdir, ".tmp-*.parquet")
}

func (d dirSink) commit(tmp, rel, name string) (string, error) {
	path := filepath.Join(d.dir, filepath.FromSlash(rel), name)
	if err := os.Chmod(tmp, 0o644); err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err == nil {
		return "", fmt.Errorf("%s already exists", path)
	}
	return path, os.Rename(tmp, path)
}

// storeSink uploads each complete file to a store with one PutIfAbsent
// (so an export never overwrites an object), from a local temporary file.
type storeSink struct {
	ctx context.Context
	st  tier.Store
	tmp string
}

func (s storeSink) create(string) (*os.File, error) {
	return os.CreateTemp(s.tmp, "varve-export-*.parquet")
}

func (s storeSink) commit(tmp, rel, name string) (string, error) {
	defer os.Remove(tmp)
	b, err := os.ReadFile(tmp)
	if err != nil {
		return "", err
	}
	key := rel + "/" + name
	if err := s.st.PutIfAbsent(s.ctx, key, b); err != nil {
		if errors.Is(err, tier.ErrExists) {
			return "", fmt.Errorf("%s already exists in the bucket (an export never overwrites)", key)
		}
		return "", err
	}
	return key, nil
}

type exportKey struct {
	p      int32
	window int64
}

type exportFile struct {
	ExportedFile
	rel string
	f   *os.File
	cw  *countWriter
	fw  *pqarrow.FileWriter
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ExportParquet writes a scan to dir in a Hive-style layout (see
// ExportParquetToStore), each file under a temporary name renamed once
// complete.
func ExportParquet(ctx context.Context, rd array.RecordReader, dir string, o ParquetOptions) ([]ExportedFile, error) {
	return exportParquet(ctx, rd, dirSink{dir: dir}, o)
}

// ExportParquetToStore writes a scan to a store (an S3 bucket prefix, say)
// in a Hive-style layout that DuckDB, Spark, Trino or Athena discover:
//
//	topic=T/partition=P/part-<first>-<last>.parquet                        without a window
//	topic=T/partition=P/date=2026-01-02/part-<first>-<last>.parquet        window of a day or more
//	topic=T/partition=P/date=2026-01-02/hour=15/part-<first>-<last>.parquet window under a day
//
// first and last are the file's smallest and largest offsets. Each file is
// written to a local temporary file (in tmpDir; empty: the system's) and
// uploaded whole with one PutIfAbsent once complete, so no reader sees a
// partial file and an export never overwrites one; files are split at
// MaxFileBytes. The scan must have the topic, partition and offset columns
// (and timestamp with a window).
func ExportParquetToStore(ctx context.Context, rd array.RecordReader, st tier.Store, tmpDir string, o ParquetOptions) ([]ExportedFile, error) {
	return exportParquet(ctx, rd, storeSink{ctx: ctx, st: st, tmp: tmpDir}, o)
}

func exportParquet(ctx context.Context, rd array.RecordReader, sink exportSink, o ParquetOptions) ([]ExportedFile, error) {
	schema := rd.Schema()
	col := func(name string) int {
		if idx := schema.FieldIndices(name); len(idx) == 1 {
			return idx[0]
		}
		return -1
	}
	iTopic, iPart, iOff, iTS := col("topic"), col("partition"), col("offset"), col("timestamp")
	if iTopic < 0 || iPart < 0 || iOff < 0 || (o.Window > 0 && iTS < 0) {
		return nil, fmt.Errorf("%w: export parquet: the scan needs the topic, partition and offset columns (and timestamp with a window), got %s", metadata.ErrInvalidArgument, schema)
	}
	maxBytes := o.MaxFileBytes
	if maxBytes <= 0 {
		maxBytes = DefaultParquetMaxFileBytes
	}
	props := ParquetProperties(o)
	aprops := pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
	open := map[exportKey]*exportFile{}
	var order []exportKey // open files, oldest first
	var done []ExportedFile
	closeFile := func(k exportKey) error {
		ef := open[k]
		delete(open, k)
		for i, x := range order {
			if x == k {
				order = append(order[:i], order[i+1:]...)
				break
			}
		}
		err := ef.fw.Close() // closes ef.f too
		if err == nil {
			ef.Bytes = ef.cw.n
			name := fmt.Sprintf("part-%d-%d.parquet", ef.First, ef.Last)
			ef.Path, err = sink.commit(ef.f.Name(), ef.rel, name)
		}
		if err != nil {
			os.Remove(ef.f.Name())
			return fmt.Errorf("export parquet %s (offsets %d-%d): %w", ef.rel, ef.First, ef.Last, err)
		}
		done = append(done, ef.ExportedFile)
		return nil
	}
	abort := func(err error) ([]ExportedFile, error) {
		for k, ef := range open {
			ef.fw.Close()
			os.Remove(ef.f.Name())
			delete(open, k)
		}
		return done, err
	}
	get := func(topic string, k exportKey) (*exportFile, error) {
		if ef := open[k]; ef != nil {
			return ef, nil
		}
		if len(order) >= maxOpenParquet {
			if err := closeFile(order[0]); err != nil {
				return nil, err
			}
		}
		rel := "topic=" + topic + "/partition=" + strconv.Itoa(int(k.p))
		var ws time.Time
		if o.Window > 0 {
			ws = time.UnixMilli(k.window).UTC()
			rel += "/date=" + ws.Format(time.DateOnly)
			if o.Window < 24*time.Hour {
				rel += "/hour=" + ws.Format("15")
			}
		}
		f, err := sink.create(rel)
		if err != nil {
			return nil, fmt.Errorf("export parquet %s: %w", rel, err)
		}
		cw := &countWriter{w: f}
		fw, err := pqarrow.NewFileWriter(schema, cw, props, aprops)
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("export parquet %s: %w", rel, err)
		}
		ef := &exportFile{ExportedFile: ExportedFile{Partition: k.p, WindowStart: ws, First: -1}, rel: rel, f: f, cw: cw, fw: fw}
		open[k] = ef
		order = append(order, k)
		return ef, nil
	}
	lastPart := int32(-1)
	winMs := o.Window.Milliseconds()
	for rd.Next() {
		if err := ctx.Err(); err != nil {
			return abort(err)
		}
		rec := rd.RecordBatch()
		topics := rec.Column(iTopic).(*array.String)
		parts := rec.Column(iPart).(*array.Int32)
		offs := rec.Column(iOff).(*array.Int64)
		var ts *array.Timestamp
		if winMs > 0 {
			ts = rec.Column(iTS).(*array.Timestamp)
		}
		keyAt := func(i int) exportKey {
			k := exportKey{p: parts.Value(i)}
			if winMs > 0 {
				t := int64(ts.Value(i))
				k.window = t - ((t%winMs)+winMs)%winMs // floor, also below 0
			}
			return k
		}
		n := int(rec.NumRows())
		for i := 0; i < n; {
			k := keyAt(i)
			j := i + 1
			for j < n && keyAt(j) == k {
				j++
			}
			if k.p != lastPart {
				// A scan reads partitions one after another: the last
				// partition's files are complete.
				for len(order) > 0 {
					if err := closeFile(order[0]); err != nil {
						return abort(err)
					}
				}
				lastPart = k.p
			}
			ef, err := get(topics.Value(i), k)
			if err != nil {
				return abort(err)
			}
			slice := rec.NewSlice(int64(i), int64(j))
			err = ef.fw.WriteBuffered(slice)
			slice.Release()
			if err != nil {
				return abort(fmt.Errorf("export parquet %s: %w", ef.rel, err))
			}
			for r := i; r < j; r++ {
				off := offs.Value(r)
				if ef.First < 0 || off < ef.First {
					ef.First = off
				}
				ef.Last = max(ef.Last, off)
			}
			ef.Rows += int64(j - i)
			if ef.cw.n+ef.fw.RowGroupTotalBytesWritten() >= maxBytes {
				if err := closeFile(k); err != nil {
					return abort(err)
				}
			}
			i = j
		}
	}
	if err := rd.Err(); err != nil {
		return abort(err)
	}
	for len(order) > 0 {
		if err := closeFile(order[0]); err != nil {
			return abort(err)
		}
	}
	return done, nil
}
