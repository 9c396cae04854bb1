package parquet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// File is one Parquet file written by an export.
type File struct {
	// Path is the file's path (ExportDir) or key in the bucket
	// (ExportBucket), relative to the bucket's prefix.
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

// Bucket is where ExportBucket uploads files: an object store (an S3
// bucket prefix, say). PutIfAbsent stores data under key unless an object
// is there already, and then fails with an error wrapping ErrExists.
type Bucket interface {
	PutIfAbsent(ctx context.Context, key string, data []byte) error
}

// bucketSink uploads each complete file to a bucket with one PutIfAbsent
// (so an export never overwrites an object), from a local temporary file.
type bucketSink struct {
	ctx context.Context
	b   Bucket
	tmp string
}

func (s bucketSink) create(string) (*os.File, error) {
	return os.CreateTemp(s.tmp, "varve-export-*.parquet")
}

func (s bucketSink) commit(tmp, rel, name string) (string, error) {
	defer os.Remove(tmp)
	b, err := os.ReadFile(tmp)
	if err != nil {
		return "", err
	}
	key := rel + "/" + name
	if err := s.b.PutIfAbsent(s.ctx, key, b); err != nil {
		if errors.Is(err, ErrExists) {
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
	File
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

// ExportDir writes a scan to dir in a Hive-style layout (see
// ExportBucket), each file under a temporary name renamed once complete.
func ExportDir(ctx context.Context, rd array.RecordReader, dir string, o Options) ([]File, error) {
	return export(ctx, rd, dirSink{dir: dir}, o)
}

// ExportBucket writes a scan to a bucket (an S3 bucket prefix, say) in a
// Hive-style layout that DuckDB, Spark, Trino or Athena discover:
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
func ExportBucket(ctx context.Context, rd array.RecordReader, b Bucket, tmpDir string, o Options) ([]File, error) {
	return export(ctx, rd, bucketSink{ctx: ctx, b: b, tmp: tmpDir}, o)
}

// exporter is the state of one export: the files open (at most
// maxOpenFiles, oldest first) and the files done.
type exporter struct {
	sink     exportSink
	window   time.Duration
	schema   *arrow.Schema
	props    *parquet.WriterProperties
	aprops   pqarrow.ArrowWriterProperties
	maxBytes int64
	// Column indexes of topic, partition, offset and timestamp.
	iTopic, iPart, iOff, iTS int

	open     map[exportKey]*exportFile
	order    []exportKey // open files, oldest first
	done     []File
	lastPart int32
}

func export(ctx context.Context, rd array.RecordReader, sink exportSink, o Options) ([]File, error) {
	x, err := newExporter(rd.Schema(), sink, o)
	if err != nil {
		return nil, err
	}
	for rd.Next() {
		if err := ctx.Err(); err != nil {
			return x.abort(err)
		}
		if err := x.write(rd.RecordBatch()); err != nil {
			return x.abort(err)
		}
	}
	if err := rd.Err(); err != nil {
		return x.abort(err)
	}
	if err := x.closeAll(); err != nil {
		return x.abort(err)
	}
	return x.done, nil
}

// newExporter checks that schema has the columns that name the files.
func newExporter(schema *arrow.Schema, sink exportSink, o Options) (*exporter, error) {
	col := func(name string) int {
		if idx := schema.FieldIndices(name); len(idx) == 1 {
			return idx[0]
		}
		return -1
	}
	x := &exporter{
		sink: sink, window: o.Window, schema: schema, maxBytes: o.MaxFileBytes,
		props: Properties(o), aprops: pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()),
		iTopic: col("topic"), iPart: col("partition"), iOff: col("offset"), iTS: col("timestamp"),
		open: map[exportKey]*exportFile{}, lastPart: -1,
	}
	if x.iTopic < 0 || x.iPart < 0 || x.iOff < 0 || (o.Window > 0 && x.iTS < 0) {
		return nil, fmt.Errorf("%w: export parquet: the scan needs the topic, partition and offset columns (and timestamp with a window), got %s", ErrMissingColumns, schema)
	}
	if x.maxBytes <= 0 {
		x.maxBytes = DefaultMaxFileBytes
	}
	return x, nil
}

// write splits a batch into runs of rows of one file (one partition and
// time window) and appends each run to its file.
func (x *exporter) write(rec arrow.RecordBatch) error {
	topics := rec.Column(x.iTopic).(*array.String)
	parts := rec.Column(x.iPart).(*array.Int32)
	winMs := x.window.Milliseconds()
	var ts *array.Timestamp
	if winMs > 0 {
		ts = rec.Column(x.iTS).(*array.Timestamp)
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
		if err := x.writeRun(rec, topics.Value(i), k, i, j); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// writeRun appends the rows [i, j) of rec, all of file k, to that file,
// and closes it once it holds MaxFileBytes.
func (x *exporter) writeRun(rec arrow.RecordBatch, topic string, k exportKey, i, j int) error {
	if k.p != x.lastPart {
		// A scan reads partitions one after another: the last
		// partition's files are complete.
		if err := x.closeAll(); err != nil {
			return err
		}
		x.lastPart = k.p
	}
	ef, err := x.file(topic, k)
	if err != nil {
		return err
	}
	slice := rec.NewSlice(int64(i), int64(j))
	err = ef.fw.WriteBuffered(slice)
	slice.Release()
	if err != nil {
		return fmt.Errorf("export parquet %s: %w", ef.rel, err)
	}
	offs := rec.Column(x.iOff).(*array.Int64)
	for r := i; r < j; r++ {
		off := offs.Value(r)
		if ef.First < 0 || off < ef.First {
			ef.First = off
		}
		ef.Last = max(ef.Last, off)
	}
	ef.Rows += int64(j - i)
	if ef.cw.n+ef.fw.RowGroupTotalBytesWritten() >= x.maxBytes {
		return x.closeFile(k)
	}
	return nil
}

// file returns the open file of k, opening it (and closing the oldest
// open file when too many are) if needed.
func (x *exporter) file(topic string, k exportKey) (*exportFile, error) {
	if ef := x.open[k]; ef != nil {
		return ef, nil
	}
	if len(x.order) >= maxOpenFiles {
		if err := x.closeFile(x.order[0]); err != nil {
			return nil, err
		}
	}
	rel := "topic=" + topic + "/partition=" + strconv.Itoa(int(k.p))
	var ws time.Time
	if x.window > 0 {
		ws = time.UnixMilli(k.window).UTC()
		rel += "/date=" + ws.Format(time.DateOnly)
		if x.window < 24*time.Hour {
			rel += "/hour=" + ws.Format("15")
		}
	}
	f, err := x.sink.create(rel)
	if err != nil {
		return nil, fmt.Errorf("export parquet %s: %w", rel, err)
	}
	cw := &countWriter{w: f}
	fw, err := pqarrow.NewFileWriter(x.schema, cw, x.props, x.aprops)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("export parquet %s: %w", rel, err)
	}
	ef := &exportFile{File: File{Partition: k.p, WindowStart: ws, First: -1}, rel: rel, f: f, cw: cw, fw: fw}
	x.open[k] = ef
	x.order = append(x.order, k)
	return ef, nil
}

// closeFile completes the file of k and publishes it through the sink.
func (x *exporter) closeFile(k exportKey) error {
	ef := x.open[k]
	delete(x.open, k)
	for i, o := range x.order {
		if o == k {
			x.order = append(x.order[:i], x.order[i+1:]...)
			break
		}
	}
	err := ef.fw.Close() // closes ef.f too
	if err == nil {
		ef.Bytes = ef.cw.n
		name := fmt.Sprintf("part-%d-%d.parquet", ef.First, ef.Last)
		ef.Path, err = x.sink.commit(ef.f.Name(), ef.rel, name)
	}
	if err != nil {
		os.Remove(ef.f.Name())
		return fmt.Errorf("export parquet %s (offsets %d-%d): %w", ef.rel, ef.First, ef.Last, err)
	}
	x.done = append(x.done, ef.File)
	return nil
}

// closeAll completes every open file, oldest first.
func (x *exporter) closeAll() error {
	for len(x.order) > 0 {
		if err := x.closeFile(x.order[0]); err != nil {
			return err
		}
	}
	return nil
}

// abort removes the files still open and returns those done with err.
func (x *exporter) abort(err error) ([]File, error) {
	for k, ef := range x.open {
		ef.fw.Close()
		os.Remove(ef.f.Name())
		delete(x.open, k)
	}
	return x.done, err
}
