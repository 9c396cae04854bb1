package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/scan"
)

// scanChunk is the most Arrow IPC bytes one ScanResponse carries, well
// below the 4 MiB default receive limit of gRPC clients.
const scanChunk = 1 << 20

// scanService implements ScanService on a scan.Reader: a Connect server
// stream whose arrow_ipc fields, concatenated, are one Arrow IPC stream.
type scanService struct {
	r *scan.Reader // nil without the fetch role
}

// scanReader is the fetch role's reader of scans (nil without the role).
func (n *Node) scanReader() *scan.Reader {
	if n.fetcher == nil {
		return nil
	}
	return scan.New(n.meta, n.index, n.fetcher.Blocks(), n.log)
}

var _ varvev1connect.ScanServiceHandler = (*scanService)(nil)

func (s *scanService) Scan(ctx context.Context, req *connect.Request[varvev1.ScanRequest], stream *connect.ServerStream[varvev1.ScanResponse]) error {
	if s.r == nil {
		return unavailable(RoleFetch)
	}
	m := req.Msg
	if m.GetMaxBatchRecords() < 0 {
		return badRequest("scan %q: max_batch_records %d is negative", m.GetTopic(), m.GetMaxBatchRecords())
	}
	sc, err := s.r.Scan(ctx, scan.Request{
		Topic: m.GetTopic(), Partitions: m.GetPartitions(),
		FromOffset: m.GetFromOffset(), ToOffset: m.GetToOffset(),
		FromTime: m.GetFromTimestampMs(), ToTime: m.GetToTimestampMs(),
		Keys: m.GetKeys(), MaxBatchRecords: int(m.GetMaxBatchRecords()), Columns: m.GetColumns(),
	})
	if err != nil {
		return toConnect(err)
	}
	defer sc.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(sc.Schema()))
	send := func(final bool) error {
		for buf.Len() > 0 {
			n := min(buf.Len(), scanChunk)
			p := sc.Progress()
			msg := &varvev1.ScanResponse{ArrowIpc: buf.Next(n), Progress: &varvev1.ScanProgress{
				BlocksTotal: p.BlocksTotal, BlocksDone: p.BlocksDone, RawBytesTotal: p.RawBytesTotal, RawBytesDone: p.RawBytesDone,
			}}
			if final && buf.Len() == 0 {
				// The last message reports the whole scan as done.
				msg.Progress.BlocksDone, msg.Progress.RawBytesDone = p.BlocksTotal, p.RawBytesTotal
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		buf.Reset()
		return nil
	}
	for sc.Next() {
		if err := w.Write(sc.RecordBatch()); err != nil {
			return connect.NewError(connect.CodeInternal, fmt.Errorf("scan %q: encode Arrow IPC: %w", m.GetTopic(), err))
		}
		if err := send(false); err != nil {
			return streamErr(ctx, err)
		}
	}
	if err := sc.Err(); err != nil {
		return toConnect(err)
	}
	if err := w.Close(); err != nil { // schema (if no batch) and end-of-stream
		return connect.NewError(connect.CodeInternal, fmt.Errorf("scan %q: encode Arrow IPC: %w", m.GetTopic(), err))
	}
	return streamErr(ctx, send(true))
}

// streamErr reports a failed Send: a client that went away is no error.
func streamErr(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return nil
	}
	return err
}
