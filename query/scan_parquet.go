package query

import (
	"context"
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
)

// Parquet defaults.
const (
	// DefaultParquetRowGroupRows bounds a row group, and so the memory a
	// writer buffers before flushing one.
	DefaultParquetRowGroupRows = 128 << 10
	// maxOpenParquet bounds the files an export keeps open at once.
	maxOpenParquet = 32
)

// ParquetOptions tune Parquet output.
type ParquetOptions struct {
	// RowGroupRows caps the rows of a row group (0: 128 Ki).
	RowGroupRows int64
	// Window, for ExportParquet, splits each partition's records into files
	// by timestamp: one file per window of this length (0: one file per
	// partition).
	Window time.Duration
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

// ExportedFile is one Parquet file written by ExportParquet.
type ExportedFile struct {
	Path      string
	Partition int32
	// WindowStart is the start of the file's time window (zero without a
	// window).
	WindowStart time.Time
	Rows        int64
	Bytes       int64
}

type exportKey struct {
	p      int32
	window int64
}

type exportFile struct {
	ExportedFile
	f  *os.File
	fw *pqarrow.FileWriter
}

// ExportParquet writes a scan (of ScanSchema) to dir in a Hive-style layout:
// dir/topic=T/partition=P/part.parquet, or with a window
// dir/topic=T/partition=P/window=20260102T150000Z.parquet, a file per window
// of record timestamps. Files are written to a temporary name and renamed
// once complete. At most 32 files are open at once; a window that comes
// back after its file was closed gets a further file (…-1.parquet).
func ExportParquet(ctx context.Context, rd array.RecordReader, dir string, o ParquetOptions) ([]ExportedFile, error) {
	if !rd.Schema().Equal(ScanSchema) {
		return nil, fmt.Errorf("%w: export parquet: not a scan schema: %s", metadata.ErrInvalidArgument, rd.Schema())
	}
	props := ParquetProperties(o)
	aprops := pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
	open := map[exportKey]*exportFile{}
	var order []exportKey // open files, oldest first
	seq := map[exportKey]int{}
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
			var st os.FileInfo
			if st, err = os.Stat(ef.f.Name()); err == nil {
				ef.Bytes = st.Size()
				err = os.Rename(ef.f.Name(), ef.Path)
			}
		}
		if err != nil {
			os.Remove(ef.f.Name())
			return fmt.Errorf("export parquet %s: %w", ef.Path, err)
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
		pdir := filepath.Join(dir, "topic="+topic, "partition="+strconv.Itoa(int(k.p)))
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return nil, fmt.Errorf("export parquet: %w", err)
		}
		name := "part"
		var ws time.Time
		if o.Window > 0 {
			ws = time.UnixMilli(k.window).UTC()
			name = "window=" + ws.Format("20060102T150405Z")
		}
		if n := seq[k]; n > 0 {
			name += "-" + strconv.Itoa(n)
		}
		seq[k]++
		path := filepath.Join(pdir, name+".parquet")
		f, err := os.CreateTemp(pdir, ".tmp-*.parquet")
		if err != nil {
			return nil, fmt.Errorf("export parquet: %w", err)
		}
		fw, err := pqarrow.NewFileWriter(ScanSchema, f, props, aprops)
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("export parquet %s: %w", path, err)
		}
		ef := &exportFile{ExportedFile: ExportedFile{Path: path, Partition: k.p, WindowStart: ws}, f: f, fw: fw}
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
		topics := rec.Column(0).(*array.String)
		parts := rec.Column(1).(*array.Int32)
		ts := rec.Column(3).(*array.Timestamp)
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
				return abort(fmt.Errorf("export parquet %s: %w", ef.Path, err))
			}
			ef.Rows += int64(j - i)
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
