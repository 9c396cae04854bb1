package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/varve-io/varve/parquet"
	"github.com/varve-io/varve/scan"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/tier"
)

func newScanCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scan TOPIC [--from TIME|OFFSET] [--to TIME|OFFSET] [--partition P]... [--key K]... [--columns C,...] [--format table|csv|jsonl|arrow|parquet] [-o FILE|DIR|s3://BUCKET/PREFIX]",
		Short: "Read a range of a topic for analysis (Arrow, Parquet, CSV, ...)",
		Long: `Read a range of a topic, as it is when the scan starts, in one of several
formats. The server reads only the blocks that overlap the range, in parallel.

--from and --to take an offset (an integer), a time in RFC 3339
(2026-01-02T15:04:05Z) or a duration before now (90m, 24h). --from is
inclusive and --to exclusive; an offset bound and a time bound may be mixed
(--from 2026-01-01T00:00:00Z --to 5000). Without them the scan reads every
partition from its log start to its current end.

--format:
  table    aligned columns for people (values cut at 60 characters; widths
           from the first 1000 rows)
  csv      topic,partition,offset,timestamp,key,value,headers with a header
           row; null is an empty field; headers are a JSON array
  jsonl    one JSON object per record, as 'varve consume --format json'
  arrow    an Arrow IPC stream (.arrows), readable by pyarrow, DuckDB, ...
  parquet  a Parquet file: zstd, column statistics (-o required). With
           --window DURATION, -o is a directory and gets one file per
           partition and window of record timestamps, Hive-style:
           DIR/topic=T/partition=P/date=2026-01-02/hour=15/part-<first>-<last>.parquet
           (no hour= level for windows of a day or more). -o s3://BUCKET/PREFIX
           writes the same tree to a bucket (one file per partition without
           --window), each file uploaded whole once complete; credentials
           come from the AWS environment (AWS_ACCESS_KEY_ID, ..., profiles,
           roles), the endpoint from --s3-endpoint (or VARVE_S3_ENDPOINT).

--columns picks columns (default: all for a topic without a schema; for a
topic with a schema topic, partition, offset, timestamp, key, its typed
fields and _error, the reason a value did not match). Columns come in
schema order.

A progress bar goes to stderr when it is a terminal (--progress always|never
to force).`,
		Args: cobra.ExactArgs(1),
		RunE: runScan,
	}
	addClientFlags(cmd)
	f := cmd.Flags()
	f.String("from", "", "start: offset, RFC 3339 time or duration before now (inclusive)")
	f.String("to", "", "end: offset, RFC 3339 time or duration before now (exclusive)")
	f.Int32Slice("partition", nil, "partitions to read, in this order (repeatable; default all)")
	f.StringArray("key", nil, "only records with this key (repeatable)")
	f.String("format", "table", "output: table, csv, jsonl, arrow or parquet")
	f.StringP("output", "o", "", "write to this file instead of stdout")
	f.String("progress", "auto", "progress bar on stderr: auto (when a terminal), always or never")
	f.Int32("batch", 0, "records per Arrow batch (0: the server's default)")
	f.Duration("window", 0, "with --format parquet: -o is a directory or bucket prefix, one file per partition and window")
	f.StringSlice("columns", nil, "columns to return (default: see above)")
	f.String("s3-endpoint", os.Getenv("VARVE_S3_ENDPOINT"), "S3 endpoint URL for -o s3://… on S3-compatible stores (env VARVE_S3_ENDPOINT)")
	f.String("s3-region", os.Getenv("VARVE_S3_REGION"), "S3 region for -o s3://… (env VARVE_S3_REGION; default: the AWS environment's)")
	f.Bool("s3-path-style", os.Getenv("VARVE_S3_PATH_STYLE") == "true", "path-style S3 addressing for -o s3://… (MinIO; env VARVE_S3_PATH_STYLE=true)")
	return cmd
}

// scanBound parses a --from/--to value into an offset or a time.
func scanBound(name, v string, now time.Time) (off int64, t time.Time, err error) {
	if v == "" {
		return 0, time.Time{}, nil
	}
	if n, perr := strconv.ParseInt(v, 10, 64); perr == nil {
		if n < 0 {
			return 0, time.Time{}, fmt.Errorf("--%s offset must not be negative, got %d", name, n)
		}
		return n, time.Time{}, nil
	}
	if tt, terr := time.Parse(time.RFC3339Nano, v); terr == nil {
		return 0, tt, nil
	}
	if d, derr := time.ParseDuration(v); derr == nil && d > 0 {
		return 0, now.Add(-d), nil
	}
	return 0, time.Time{}, fmt.Errorf("--%s must be an offset, an RFC 3339 time or a duration, not %q", name, v)
}

// scanFlags are the checked flags of varve scan.
type scanFlags struct {
	format, output, progress string
	window                   time.Duration
	bucket                   tier.Store // -o s3://…: the export's bucket
	opts                     sdk.ScanOptions
}

func runScan(cmd *cobra.Command, args []string) error {
	topic := args[0]
	sf, err := parseScanFlags(cmd)
	if err != nil {
		return err
	}
	bar := scanProgressBar(cmd, topic, sf.progress, &sf.opts)
	ctx := cmd.Context()
	client := newClient(cmd)
	defer client.Close()
	rd, err := client.Scan(ctx, topic, sf.opts)
	if err != nil {
		return clientError(cmd, topic, err)
	}
	defer rd.Release()
	if sf.window > 0 || sf.bucket != nil {
		return exportScan(cmd, topic, rd, sf, bar)
	}
	return writeScan(cmd, topic, rd, sf, bar)
}

// parseScanFlags checks the flags of varve scan and opens the bucket of an
// export to s3://.
func parseScanFlags(cmd *cobra.Command) (scanFlags, error) {
	var sf scanFlags
	f := cmd.Flags()
	sf.format, _ = f.GetString("format")
	sf.output, _ = f.GetString("output")
	sf.progress, _ = f.GetString("progress")
	batch, _ := f.GetInt32("batch")
	switch sf.format {
	case "table", "csv", "jsonl", "arrow", "parquet":
	default:
		return sf, fmt.Errorf("--format must be table, csv, jsonl, arrow or parquet, not %q", sf.format)
	}
	if sf.format == "parquet" && sf.output == "" {
		return sf, errors.New("--format parquet needs -o FILE")
	}
	sf.window, _ = f.GetDuration("window")
	if sf.window < 0 || (sf.window > 0 && sf.format != "parquet") {
		return sf, errors.New("--window is a positive duration, with --format parquet only")
	}
	toBucket := strings.HasPrefix(sf.output, "s3://")
	if toBucket && sf.format != "parquet" {
		return sf, errors.New("-o s3://… is for --format parquet only")
	}
	if toBucket {
		var s3c tier.S3Config
		s3c.Endpoint, _ = f.GetString("s3-endpoint")
		s3c.Region, _ = f.GetString("s3-region")
		s3c.PathStyle, _ = f.GetBool("s3-path-style")
		var err error
		if sf.bucket, err = tier.Open(cmd.Context(), sf.output, s3c); err != nil {
			return sf, err
		}
	}
	switch sf.progress {
	case "auto", "always", "never":
	default:
		return sf, fmt.Errorf("--progress must be auto, always or never, not %q", sf.progress)
	}
	var err error
	sf.opts, err = scanOptions(cmd, batch)
	return sf, err
}

// scanOptions reads the range, partitions, columns and keys of a scan.
func scanOptions(cmd *cobra.Command, batch int32) (sdk.ScanOptions, error) {
	f := cmd.Flags()
	now := time.Now()
	opts := sdk.ScanOptions{MaxBatchRecords: batch}
	fromS, _ := f.GetString("from")
	toS, _ := f.GetString("to")
	var err error
	if opts.FromOffset, opts.From, err = scanBound("from", fromS, now); err != nil {
		return opts, err
	}
	if opts.ToOffset, opts.To, err = scanBound("to", toS, now); err != nil {
		return opts, err
	}
	if toS != "" && opts.To.IsZero() && opts.ToOffset == 0 {
		return opts, errors.New("--to 0 would read nothing")
	}
	opts.Partitions, _ = f.GetInt32Slice("partition")
	opts.Columns, _ = f.GetStringSlice("columns")
	keys, _ := f.GetStringArray("key")
	for _, k := range keys {
		opts.Keys = append(opts.Keys, []byte(k))
	}
	return opts, nil
}

// scanProgressBar shows the scan's progress on stderr (always, or on a
// terminal with auto) and sets opts.Progress to move it; nil: no bar.
func scanProgressBar(cmd *cobra.Command, topic, progress string, opts *sdk.ScanOptions) *progressbar.ProgressBar {
	if progress != "always" && (progress != "auto" || !term.IsTerminal(int(os.Stderr.Fd()))) {
		return nil
	}
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(cmd.ErrOrStderr()),
		progressbar.OptionSetDescription("scan "+topic),
		progressbar.OptionShowBytes(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	opts.Progress = func(p sdk.ScanProgress) {
		if bar.GetMax64() != p.RawBytesTotal {
			bar.ChangeMax64(p.RawBytesTotal)
		}
		_ = bar.Set64(p.RawBytesDone)
	}
	return bar
}

// scanFailed is the error of a scan's output cut short: interrupted, or
// err as the node told it.
func scanFailed(cmd *cobra.Command, topic string, err error) error {
	if cmd.Context().Err() != nil {
		return errors.New("interrupted")
	}
	return clientError(cmd, topic, err)
}

// exportScan writes a scan as Parquet files, split by time window, under
// a directory or to a bucket.
func exportScan(cmd *cobra.Command, topic string, rd array.RecordReader, sf scanFlags, bar *progressbar.ProgressBar) error {
	ctx := cmd.Context()
	var files []parquet.File
	var err error
	if sf.bucket != nil {
		files, err = parquet.ExportBucket(ctx, rd, exportBucket{sf.bucket}, "", parquet.Options{Window: sf.window})
	} else {
		files, err = parquet.ExportDir(ctx, rd, sf.output, parquet.Options{Window: sf.window})
	}
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return scanFailed(cmd, topic, err)
	}
	var rows int64
	for _, ef := range files {
		rows += ef.Rows
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d records to %d files under %s\n", rows, len(files), sf.output)
	return nil
}

// exportBucket is a tier.Store as the bucket of a Parquet export.
type exportBucket struct{ tier.Store }

func (b exportBucket) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	err := b.Store.PutIfAbsent(ctx, key, data)
	if errors.Is(err, tier.ErrExists) {
		return fmt.Errorf("%w: %w", parquet.ErrExists, err)
	}
	return err
}

// writeScan writes a scan in one format to stdout, or to a file written
// under a temporary name and renamed when complete.
func writeScan(cmd *cobra.Command, topic string, rd array.RecordReader, sf scanFlags, bar *progressbar.ProgressBar) error {
	var w io.Writer = cmd.OutOrStdout()
	var file *os.File
	if sf.output != "" {
		var err error
		file, err = os.CreateTemp(dirOf(sf.output), ".varve-scan-*")
		if err != nil {
			return err
		}
		defer os.Remove(file.Name())
		defer file.Close()
		w = file
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	var rows int64
	var err error
	switch sf.format {
	case "parquet":
		rows, err = parquet.Write(bw, rd, parquet.Options{})
	case "arrow":
		rows, err = writeArrow(bw, rd)
	default:
		rows, err = writeText(bw, rd, sf.format)
	}
	if err == nil {
		err = rd.Err()
	}
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return scanFailed(cmd, topic, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if file == nil {
		return nil
	}
	if err := publishFile(file, sf.output); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d records to %s\n", rows, sf.output)
	return nil
}

// publishFile closes the temporary file tmp and renames it to path, an
// ordinary file (CreateTemp made it 0600).
func publishFile(tmp *os.File, path string) error {
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, os.PathSeparator); i >= 0 {
		return path[:i+1]
	}
	return "."
}

func writeArrow(w io.Writer, rd array.RecordReader) (int64, error) {
	iw := ipc.NewWriter(w, ipc.WithSchema(rd.Schema()))
	var rows int64
	for rd.Next() {
		if err := iw.Write(rd.RecordBatch()); err != nil {
			return rows, err
		}
		rows += rd.RecordBatch().NumRows()
	}
	if err := rd.Err(); err != nil {
		return rows, err
	}
	return rows, iw.Close()
}

// scanCols are the columns of a scan batch.
type scanCols struct {
	topic *array.String
	part  *array.Int32
	off   *array.Int64
	ts    *array.Timestamp
	key   *array.Binary
	value *array.Binary
	hl    *array.List
	hk    *array.String
	hv    *array.Binary
}

func colsOf(rec arrow.RecordBatch) scanCols {
	hl := rec.Column(6).(*array.List)
	hs := hl.ListValues().(*array.Struct)
	return scanCols{
		topic: rec.Column(0).(*array.String), part: rec.Column(1).(*array.Int32), off: rec.Column(2).(*array.Int64),
		ts: rec.Column(3).(*array.Timestamp), key: rec.Column(4).(*array.Binary), value: rec.Column(5).(*array.Binary),
		hl: hl, hk: hs.Field(0).(*array.String), hv: hs.Field(1).(*array.Binary),
	}
}

func binAt(a *array.Binary, i int) []byte {
	if a.IsNull(i) {
		return nil
	}
	return append([]byte{}, a.Value(i)...)
}

// record rebuilds row i as an SDK record (for the shared JSON shape).
func (c scanCols) record(i int) sdk.Record {
	r := sdk.Record{
		Topic: c.topic.Value(i), Partition: c.part.Value(i), Offset: c.off.Value(i),
		Timestamp: time.UnixMilli(int64(c.ts.Value(i))), Key: binAt(c.key, i), Value: binAt(c.value, i),
	}
	s, e := c.hl.ValueOffsets(i)
	for j := int(s); j < int(e); j++ {
		r.Headers = append(r.Headers, sdk.Header{Key: c.hk.Value(j), Value: binAt(c.hv, j)})
	}
	return r
}

// text shows bytes for people: the text when UTF-8, else base64:….
func text(b []byte, null string) string {
	if b == nil {
		return null
	}
	if utf8.Valid(b) {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}

func writeText(w io.Writer, rd array.RecordReader, format string) (int64, error) {
	if !rd.Schema().Equal(scan.RecordSchema) {
		return writeColumns(w, rd, format)
	}
	var rows int64
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	var cw *csv.Writer
	var tw *tableWriter
	switch format {
	case "csv":
		cw = csv.NewWriter(w)
		_ = cw.Write([]string{"topic", "partition", "offset", "timestamp", "key", "value", "headers"})
	case "table":
		tw = newTableWriter(w)
		tw.row("PARTITION", "OFFSET", "TIMESTAMP", "KEY", "VALUE", "HEADERS")
	}
	for rd.Next() {
		rec := rd.RecordBatch()
		c := colsOf(rec)
		for i := range int(rec.NumRows()) {
			r := c.record(i)
			switch format {
			case "jsonl":
				if err := enc.Encode(toJSONRecord(r)); err != nil {
					return rows, err
				}
			case "csv":
				hs := "[]"
				if len(r.Headers) > 0 {
					b, _ := json.Marshal(toJSONRecord(r).Headers)
					hs = string(b)
				}
				if err := cw.Write([]string{r.Topic, strconv.Itoa(int(r.Partition)), strconv.FormatInt(r.Offset, 10),
					r.Timestamp.UTC().Format(time.RFC3339Nano), text(r.Key, ""), text(r.Value, ""), hs}); err != nil {
					return rows, err
				}
			case "table":
				var hs []string
				for _, h := range r.Headers {
					hs = append(hs, h.Key+"="+cut(text(h.Value, "(null)"), 20))
				}
				tw.row(strconv.Itoa(int(r.Partition)), strconv.FormatInt(r.Offset, 10), r.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z"),
					cut(text(r.Key, "(null)"), 30), cut(text(r.Value, "(null)"), 60), strings.Join(hs, " "))
				if tw.err != nil {
					return rows, tw.err
				}
			}
			rows++
		}
	}
	return rows, flushTables(tw, cw)
}

// tableWindow rows set a table's column widths before it prints.
const tableWindow = 1000

// tableWriter writes aligned columns. The widths come from the header and
// the first tableWindow rows (or every row, when fewer) and only grow
// after, so the batches of a scan line up with each other, and a long scan
// prints long before its end.
type tableWriter struct {
	w       io.Writer
	widths  []int
	pending [][]string
	started bool
	line    []byte
	err     error
}

func newTableWriter(w io.Writer) *tableWriter { return &tableWriter{w: w} }

// row adds a row; cells may be reused by the caller afterwards.
func (t *tableWriter) row(cells ...string) {
	if t.started {
		t.fit(cells)
		t.print(cells)
		return
	}
	t.pending = append(t.pending, slices.Clone(cells))
	if len(t.pending) > tableWindow {
		_ = t.flush()
	}
}

// flush prints the rows held back for the widths.
func (t *tableWriter) flush() error {
	for _, r := range t.pending {
		t.fit(r)
	}
	for _, r := range t.pending {
		t.print(r)
	}
	t.pending, t.started = nil, true
	return t.err
}

func (t *tableWriter) fit(cells []string) {
	for i, c := range cells {
		if i == len(t.widths) {
			t.widths = append(t.widths, 0)
		}
		t.widths[i] = max(t.widths[i], utf8.RuneCountInString(c))
	}
}

func (t *tableWriter) print(cells []string) {
	if t.err != nil {
		return
	}
	t.line = t.line[:0]
	for i, c := range cells {
		t.line = append(t.line, c...)
		if i < len(cells)-1 {
			t.line = append(t.line, strings.Repeat(" ", t.widths[i]-utf8.RuneCountInString(c)+2)...)
		}
	}
	t.line = append(bytes.TrimRight(t.line, " "), '\n')
	_, t.err = t.w.Write(t.line)
}

// cut shortens s to n runes, on one line.
func cut(s string, n int) string {
	s = strings.NewReplacer("\n", `\n`, "\t", `\t`, "\r", `\r`).Replace(s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// writeColumns writes any scan schema (typed columns, a column subset) as
// text: a column per field, in order. Binary cells are text when UTF-8,
// else base64:…; headers a JSON array; typed cells as Arrow prints them
// (JSON values in jsonl). Null is an empty field in CSV, (null) in a
// table, null in JSON.
func writeColumns(w io.Writer, rd array.RecordReader, format string) (int64, error) {
	fields := rd.Schema().Fields()
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	var cw *csv.Writer
	var tw *tableWriter
	switch format {
	case "csv":
		cw = csv.NewWriter(w)
		_ = cw.Write(names)
	case "table":
		tw = newTableWriter(w)
		upper := make([]string, len(names))
		for i, n := range names {
			upper[i] = strings.ToUpper(n)
		}
		tw.row(upper...)
	}
	var rows int64
	var line []byte
	cells := make([]string, len(fields))
	for rd.Next() {
		rec := rd.RecordBatch()
		for i := range int(rec.NumRows()) {
			if format == "jsonl" {
				line = append(line[:0], '{')
				for c, f := range fields {
					if c > 0 {
						line = append(line, ',')
					}
					k, _ := json.Marshal(f.Name)
					line = append(append(line, k...), ':')
					v, err := json.Marshal(jsonCell(rec.Column(c), i))
					if err != nil {
						return rows, fmt.Errorf("column %s: %w", f.Name, err)
					}
					line = append(line, v...)
				}
				line = append(line, '}', '\n')
				if _, err := w.Write(line); err != nil {
					return rows, err
				}
			} else {
				for c := range fields {
					cells[c] = textCell(rec.Column(c), i, format == "table")
				}
				if cw != nil {
					if err := cw.Write(cells); err != nil {
						return rows, err
					}
				} else {
					tw.row(cells...)
					if tw.err != nil {
						return rows, tw.err
					}
				}
			}
			rows++
		}
	}
	return rows, flushTables(tw, cw)
}

// flushTables flushes whichever of the table and CSV writers is in use.
func flushTables(tw *tableWriter, cw *csv.Writer) error {
	if tw != nil {
		if err := tw.flush(); err != nil {
			return err
		}
	}
	if cw != nil {
		cw.Flush()
		return cw.Error()
	}
	return nil
}

// jsonCell is row i of a as a JSON-marshalable value.
func jsonCell(a arrow.Array, i int) any {
	if a.IsNull(i) {
		return nil
	}
	switch a := a.(type) {
	case *array.Binary:
		return text(a.Value(i), "")
	case *array.Timestamp:
		unit := a.DataType().(*arrow.TimestampType).Unit
		return a.Value(i).ToTime(unit).UTC().Format(time.RFC3339Nano)
	case *array.List:
		if hs, ok := headersOf(a, i); ok {
			return hs
		}
	}
	return a.GetOneForMarshal(i)
}

// headersOf reads row i of a headers column (list<struct<key, value>>).
func headersOf(a *array.List, i int) ([]jsonHeader, bool) {
	st, ok := a.ListValues().(*array.Struct)
	if !ok || st.NumField() != 2 {
		return nil, false
	}
	hk, ok1 := st.Field(0).(*array.String)
	hv, ok2 := st.Field(1).(*array.Binary)
	if !ok1 || !ok2 {
		return nil, false
	}
	s, e := a.ValueOffsets(i)
	out := []jsonHeader{}
	for j := int(s); j < int(e); j++ {
		h := jsonHeader{Key: hk.Value(j)}
		h.Value, h.ValueEncoding = jsonBytes(binAt(hv, j))
		out = append(out, h)
	}
	return out, true
}

// textCell is row i of a for CSV (null: empty) or a table (null: (null),
// cut to 60 characters).
func textCell(a arrow.Array, i int, table bool) string {
	null := ""
	if table {
		null = "(null)"
	}
	if a.IsNull(i) {
		return null
	}
	var s string
	switch v := jsonCell(a, i).(type) {
	case string:
		s = v
	case []jsonHeader:
		if table {
			var hs []string
			for _, h := range v {
				hv := "(null)"
				if h.Value != nil {
					hv = *h.Value
				}
				hs = append(hs, h.Key+"="+cut(hv, 20))
			}
			s = strings.Join(hs, " ")
		} else {
			b, _ := json.Marshal(v)
			s = string(b)
		}
	default:
		s = a.ValueStr(i)
		if _, ok := a.(*array.Struct); ok || a.DataType().ID() == arrow.LIST {
			b, _ := json.Marshal(v)
			s = string(b)
		}
	}
	if table {
		return cut(s, 60)
	}
	return s
}
