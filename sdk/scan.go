package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/parquet"
)

// ScanOptions select what Client.Scan reads. A record is returned when its
// offset is in [FromOffset, ToOffset), its timestamp in [From, To) and, with
// Keys, its key equals one of them. Zero values do not limit.
type ScanOptions struct {
	// Partitions to read, in this order; empty means all, ascending.
	Partitions []int32
	FromOffset int64
	// ToOffset is exclusive; 0 means each partition's end when the scan
	// starts.
	ToOffset int64
	From     time.Time
	// To is exclusive; the zero time means no bound.
	To   time.Time
	Keys [][]byte
	// Columns to return, in schema order whatever the order given (empty:
	// the default; see docs/scan.md). A topic with a schema adds its typed
	// columns and _error; an unknown name is connect.CodeInvalidArgument.
	Columns []string
	// MaxBatchRecords caps the rows of a batch (0: the server's default).
	MaxBatchRecords int32
	// Progress, if set, is called from the reading goroutine after each
	// message of the stream with how much of the scan the server has read.
	Progress func(ScanProgress)
	// Alloc allocates the batches (nil: memory.DefaultAllocator).
	Alloc memory.Allocator
}

// ScanProgress counts the blocks of a scan: the server reads only those
// that overlap the range.
type ScanProgress struct {
	BlocksTotal, BlocksDone     int64
	RawBytesTotal, RawBytesDone int64
}

// Scan reads a range of a topic as Arrow record batches over the
// server-streaming ScanService.Scan RPC. Columns: topic, partition, offset,
// timestamp (ms, UTC), key, value (binary, null when null) and headers
// (list of key/value structs); for a topic with a schema, by default
// topic, partition, offset, timestamp, key, one typed column per schema
// field and _error (why a value did not match; null when it did).
// Batches of a partition come in offset order.
//
// Bad input (unknown topic: connect.CodeNotFound; inverted or negative
// ranges, bad partitions: connect.CodeInvalidArgument) fails here. A
// failure mid-stream ends the reader: Next returns false and Err returns
// the error (connect.CodeDataLoss naming the object for a corrupt block).
// A batch is valid until the next call to Next; Release the reader when
// done (it cancels the stream).
func (c *Client) Scan(ctx context.Context, topic string, opts ScanOptions) (array.RecordReader, error) {
	req := &varvev1.ScanRequest{
		Topic: topic, Partitions: opts.Partitions, FromOffset: opts.FromOffset, ToOffset: opts.ToOffset,
		Keys: opts.Keys, MaxBatchRecords: opts.MaxBatchRecords, Columns: opts.Columns,
	}
	if !opts.From.IsZero() {
		req.FromTimestampMs = opts.From.UnixMilli()
	}
	if !opts.To.IsZero() {
		req.ToTimestampMs = opts.To.UnixMilli()
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.scan.Scan(sctx, connect.NewRequest(req))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("scan %s: %w", topic, err)
	}
	sr := &scanStream{stream: stream, progress: opts.Progress}
	alloc := opts.Alloc
	if alloc == nil {
		alloc = memory.DefaultAllocator
	}
	// Reads the schema: the first message, or the error that ended the
	// stream before it.
	rd, err := ipc.NewReader(sr, ipc.WithAllocator(alloc))
	if err != nil {
		cancel()
		stream.Close()
		if sr.err != nil {
			err = sr.err
		}
		return nil, fmt.Errorf("scan %s: %w", topic, err)
	}
	out := &scanReader{rd: rd, sr: sr, cancel: cancel, topic: topic}
	out.refs.Store(1)
	return out, nil
}

// ExportParquet scans topic (see Scan; the scan must keep the topic,
// partition and offset columns, and timestamp with a Window) and writes it
// to the local directory dir as Parquet files in a Hive-style layout:
// topic=T/partition=P[/date=YYYY-MM-DD[/hour=HH]]/part-<first>-<last>.parquet,
// split by po.Window and po.MaxFileBytes. Each file is written under a
// temporary name and renamed once complete; an existing file is never
// overwritten. It returns the files written (those complete before an
// error, too).
func (c *Client) ExportParquet(ctx context.Context, topic, dir string, opts ScanOptions, po parquet.Options) ([]parquet.File, error) {
	rd, err := c.Scan(ctx, topic, opts)
	if err != nil {
		return nil, err
	}
	defer rd.Release()
	return parquet.ExportDir(ctx, rd, dir, po)
}

// WriteParquet scans topic (see Scan) and writes it to w as one Parquet
// file. It returns the rows written.
func (c *Client) WriteParquet(ctx context.Context, w io.Writer, topic string, opts ScanOptions) (int64, error) {
	rd, err := c.Scan(ctx, topic, opts)
	if err != nil {
		return 0, err
	}
	defer rd.Release()
	return parquet.Write(w, rd, parquet.Options{})
}

// scanStream reads the arrow_ipc bytes of a Scan stream as one io.Reader.
type scanStream struct {
	stream   *connect.ServerStreamForClient[varvev1.ScanResponse]
	buf      []byte
	progress func(ScanProgress)
	err      error // the stream's error, as is
}

func (s *scanStream) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if !s.stream.Receive() {
			s.err = s.stream.Err()
			if s.err == nil {
				s.err = io.EOF
			}
			continue
		}
		m := s.stream.Msg()
		s.buf = m.GetArrowIpc()
		if pr := m.GetProgress(); pr != nil && s.progress != nil {
			s.progress(ScanProgress{BlocksTotal: pr.GetBlocksTotal(), BlocksDone: pr.GetBlocksDone(), RawBytesTotal: pr.GetRawBytesTotal(), RawBytesDone: pr.GetRawBytesDone()})
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// scanReader is the array.RecordReader Scan returns.
type scanReader struct {
	rd     *ipc.Reader
	sr     *scanStream
	cancel context.CancelFunc
	topic  string
	refs   atomic.Int64
	once   sync.Once
}

func (r *scanReader) Retain() { r.refs.Add(1) }

func (r *scanReader) Release() {
	if r.refs.Add(-1) != 0 {
		return
	}
	r.once.Do(func() {
		r.rd.Release()
		r.cancel()
		r.sr.stream.Close()
	})
}

func (r *scanReader) Schema() *arrow.Schema          { return r.rd.Schema() }
func (r *scanReader) Next() bool                     { return r.rd.Next() }
func (r *scanReader) RecordBatch() arrow.RecordBatch { return r.rd.RecordBatch() }

// Record returns the current batch.
//
// Deprecated: use RecordBatch.
func (r *scanReader) Record() arrow.RecordBatch { return r.rd.RecordBatch() }

// Err returns what ended the stream early: the server's error (a
// *connect.Error) when there was one, else a decoding error.
func (r *scanReader) Err() error {
	if err := r.sr.err; err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("scan %s: %w", r.topic, err)
	}
	if err := r.rd.Err(); err != nil {
		return fmt.Errorf("scan %s: %w", r.topic, err)
	}
	return nil
}
