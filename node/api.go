package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/varve-io/varve/fetch"
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/flushtick"
	"github.com/varve-io/varve/tier/segment"
)

// maxFetchWait caps long-polls so a forgotten request cannot hold a
// connection forever.
const maxFetchWait = 60 * time.Second

func badRequest(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

func unavailable(role string) error {
	return connect.NewError(connect.CodeUnimplemented, fmt.Errorf("this node does not run the %s role", role))
}

// produceService implements ProduceService on an Ingester.
type produceService struct {
	in    *ingest.Ingester
	place *placer // nil: no placement
}

var _ varvev1connect.ProduceServiceHandler = (*produceService)(nil)

func (s *produceService) Produce(ctx context.Context, req *connect.Request[varvev1.ProduceRequest]) (*connect.Response[varvev1.ProduceResponse], error) {
	if s.in == nil {
		return nil, unavailable(RoleIngest)
	}
	m := req.Msg
	if len(m.GetBatches()) > 0 {
		return s.produceBatches(ctx, req.Header(), m)
	}
	recs := make([]ingest.Record, len(m.GetRecords()))
	for i, pr := range m.GetRecords() {
		r := pr.GetRecord()
		if r == nil {
			return nil, badRequest("produce to %q: record %d has no record body", m.GetTopic(), i)
		}
		if r.GetOffset() != 0 {
			return nil, badRequest("produce to %q: record %d sets offset %d; offsets are assigned by the cluster", m.GetTopic(), i, r.GetOffset())
		}
		if r.GetTimestampMs() < 0 {
			return nil, badRequest("produce to %q: record %d has negative timestamp %d", m.GetTopic(), i, r.GetTimestampMs())
		}
		rec := segment.Record{Key: r.Key, Value: r.Value, Timestamp: r.GetTimestampMs()}
		if r.Key != nil && len(r.Key) == 0 {
			rec.Key = []byte{}
		}
		if r.Value != nil && len(r.Value) == 0 {
			rec.Value = []byte{}
		}
		for _, h := range r.GetHeaders() {
			hv := h.Value
			if hv != nil && len(hv) == 0 {
				hv = []byte{}
			}
			rec.Headers = append(rec.Headers, segment.Header{Key: h.GetKey(), Value: hv})
		}
		// Unset (or -1, as older clients send) lets the ingester place the
		// record: murmur2 of the key, sticky without one.
		part := int32(-1)
		if pr.Partition != nil {
			part = pr.GetPartition()
		}
		recs[i] = ingest.Record{Partition: part, Record: rec}
	}
	var res []ingest.Result
	var err error
	if m.GetProducerId() == 0 {
		if m.GetProducerEpoch() != 0 || len(m.GetSequences()) > 0 {
			return nil, badRequest("produce to %q: producer_epoch and sequences need a producer_id", m.GetTopic())
		}
		res, err = s.in.Produce(ctx, m.GetTopic(), recs)
	} else {
		idem, ierr := requestIdempotence(m)
		if ierr != nil {
			return nil, ierr
		}
		res, err = s.in.ProduceIdempotent(ctx, m.GetTopic(), recs, *idem)
	}
	if err != nil {
		return nil, toConnect(err)
	}
	out := &varvev1.ProduceResponse{Results: make([]*varvev1.ProduceResult, len(res))}
	for i, r := range res {
		out.Results[i] = &varvev1.ProduceResult{Partition: r.Partition, Offset: r.Offset}
	}
	return s.answer(req.Header(), out), nil
}

// requestIdempotence returns the request's idempotence (nil without a
// producer id).
func requestIdempotence(m *varvev1.ProduceRequest) (*ingest.Idempotence, error) {
	if m.GetProducerId() == 0 {
		if m.GetProducerEpoch() != 0 || len(m.GetSequences()) > 0 {
			return nil, badRequest("produce to %q: producer_epoch and sequences need a producer_id", m.GetTopic())
		}
		return nil, nil
	}
	idem := &ingest.Idempotence{ProducerID: m.GetProducerId(), Epoch: m.GetProducerEpoch(), Sequences: make(map[int32]int32, len(m.GetSequences()))}
	for _, ps := range m.GetSequences() {
		if _, dup := idem.Sequences[ps.GetPartition()]; dup {
			return nil, badRequest("produce to %q: partition %d has two sequences", m.GetTopic(), ps.GetPartition())
		}
		idem.Sequences[ps.GetPartition()] = ps.GetFirstSequence()
	}
	return idem, nil
}

// produceBatches serves the batch form: the entries' Kafka RecordBatch v2
// bytes go to the ingester as they are, and each record is answered.
func (s *produceService) produceBatches(ctx context.Context, h http.Header, m *varvev1.ProduceRequest) (*connect.Response[varvev1.ProduceResponse], error) {
	if len(m.GetRecords()) > 0 {
		return nil, badRequest("produce to %q: a request carries records or batches, not both", m.GetTopic())
	}
	idem, err := requestIdempotence(m)
	if err != nil {
		return nil, err
	}
	bs := make([]ingest.Batches, len(m.GetBatches()))
	for i, e := range m.GetBatches() {
		bs[i] = ingest.Batches{Partition: e.GetPartition(), Bytes: e.GetRecordBatches()}
	}
	res, err := s.in.ProduceBatches(ctx, m.GetTopic(), bs, idem)
	if err != nil {
		return nil, toConnect(err)
	}
	n := 0
	for _, r := range res {
		n += r.Records
	}
	out := &varvev1.ProduceResponse{Results: make([]*varvev1.ProduceResult, 0, n)}
	slab := make([]varvev1.ProduceResult, n)
	for _, r := range res {
		for j := range r.Records {
			pr := &slab[len(out.Results)]
			pr.Partition, pr.Offset = r.Partition, r.Base+int64(j)
			out.Results = append(out.Results, pr)
		}
	}
	return s.answer(h, out), nil
}

// answer is a Produce response with the hint of when this node seals its
// next file (internal/flushtick): records that arrive before then are
// acknowledged together, so the producer can send them as one batch just
// before. It also names the node the client belongs on, when that is
// another (placement.go); h is the request's header.
func (s *produceService) answer(h http.Header, out *varvev1.ProduceResponse) *connect.Response[varvev1.ProduceResponse] {
	resp := connect.NewResponse(out)
	s.place.placeAnswer(h, resp.Header())
	if next, every := s.in.NextFlush(time.Now()); every > 0 { // none while files fill before their tick
		resp.Header().Set(flushtick.Header, flushtick.Format(next, every))
	}
	return resp
}

func (s *produceService) InitProducer(ctx context.Context, req *connect.Request[varvev1.InitProducerRequest]) (*connect.Response[varvev1.InitProducerResponse], error) {
	if s.in == nil {
		return nil, unavailable(RoleIngest)
	}
	p, err := s.in.InitProducer(ctx, req.Msg.GetProducerId())
	if err != nil {
		return nil, toConnect(err)
	}
	resp := connect.NewResponse(&varvev1.InitProducerResponse{
		ProducerId: p.ID, ProducerEpoch: p.Epoch, StateTtlMs: p.TTL.Milliseconds(),
	})
	// A producer's first call: it moves to its writer before its first
	// batch (placement.go).
	s.place.placeAnswer(req.Header(), resp.Header())
	return resp, nil
}

// fetchService implements FetchService on a Fetcher.
type fetchService struct {
	f *fetch.Fetcher
	// maxBytes is the node's fetch_max_bytes: the cap of a request's
	// max_bytes (0: no cap).
	maxBytes int
}

var _ varvev1connect.FetchServiceHandler = (*fetchService)(nil)

func recordsToProto(recs []fetch.Record) []*varvev1.Record {
	out := make([]*varvev1.Record, len(recs))
	for i, r := range recs {
		pr := &varvev1.Record{Key: r.Key, Value: r.Value, TimestampMs: r.Timestamp, Partition: r.Partition, Offset: r.Offset}
		for _, h := range r.Headers {
			pr.Headers = append(pr.Headers, &varvev1.Header{Key: h.Key, Value: h.Value})
		}
		out[i] = pr
	}
	return out
}

func (s *fetchService) Fetch(ctx context.Context, req *connect.Request[varvev1.FetchRequest]) (*connect.Response[varvev1.FetchResponse], error) {
	if s.f == nil {
		return nil, unavailable(RoleFetch)
	}
	m := req.Msg
	if m.GetMaxBytes() < 0 {
		return nil, badRequest("fetch %s/%d: max_bytes %d is negative", m.GetTopic(), m.GetPartition(), m.GetMaxBytes())
	}
	if m.GetMaxWaitMs() < 0 {
		return nil, badRequest("fetch %s/%d: max_wait_ms %d is negative", m.GetTopic(), m.GetPartition(), m.GetMaxWaitMs())
	}
	wait := min(time.Duration(m.GetMaxWaitMs())*time.Millisecond, maxFetchWait)
	if m.GetRecordBatches() {
		// The stored batches as they are, for clients that decode them.
		res, err := s.f.FetchBatches(ctx, m.GetTopic(), m.GetPartition(), m.GetOffset(), fetchMaxBytes(m.GetMaxBytes(), s.maxBytes), wait)
		if err != nil {
			return nil, toConnect(err)
		}
		return connect.NewResponse(&varvev1.FetchResponse{
			RecordBatches: res.Batches, NextOffset: res.Next,
			LogStartOffset: res.LogStartOffset, HighWatermark: res.HighWatermark,
		}), nil
	}
	res, err := s.f.Fetch(ctx, m.GetTopic(), m.GetPartition(), m.GetOffset(), fetchMaxBytes(m.GetMaxBytes(), s.maxBytes), wait)
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&varvev1.FetchResponse{
		Records: recordsToProto(res.Records), NextOffset: res.Next,
		LogStartOffset: res.LogStartOffset, HighWatermark: res.HighWatermark,
	}), nil
}

// FetchPartitions serves many partitions of a topic in one call: bad
// input fails the call, each partition's failure is its own result's error.
func (s *fetchService) FetchPartitions(ctx context.Context, req *connect.Request[varvev1.FetchPartitionsRequest]) (*connect.Response[varvev1.FetchPartitionsResponse], error) {
	if s.f == nil {
		return nil, unavailable(RoleFetch)
	}
	m := req.Msg
	if m.GetMaxBytes() < 0 {
		return nil, badRequest("fetch %q: max_bytes %d is negative", m.GetTopic(), m.GetMaxBytes())
	}
	if m.GetMaxWaitMs() < 0 {
		return nil, badRequest("fetch %q: max_wait_ms %d is negative", m.GetTopic(), m.GetMaxWaitMs())
	}
	parts := make([]fetch.PartitionFetch, len(m.GetPartitions()))
	for i, p := range m.GetPartitions() {
		if p.GetMaxBytes() < 0 {
			return nil, badRequest("fetch %s/%d: max_bytes %d is negative", m.GetTopic(), p.GetPartition(), p.GetMaxBytes())
		}
		parts[i] = fetch.PartitionFetch{Partition: p.GetPartition(), Offset: p.GetOffset(), MaxBytes: fetchMaxBytes(p.GetMaxBytes(), s.maxBytes)}
	}
	total := fetchMaxBytes(m.GetMaxBytes(), s.maxBytes)
	if total == 0 {
		total = s.maxBytes
		if total == 0 {
			total = DefaultFetchMaxBytes
		}
	}
	wait := min(time.Duration(m.GetMaxWaitMs())*time.Millisecond, maxFetchWait)
	res, err := s.f.FetchPartitions(ctx, m.GetTopic(), parts, total, wait, m.GetRecordBatches())
	if err != nil {
		return nil, toConnect(err)
	}
	out := &varvev1.FetchPartitionsResponse{Partitions: make([]*varvev1.FetchPartitionResult, len(res))}
	for i, r := range res {
		pr := &varvev1.FetchPartitionResult{Partition: r.Partition}
		if r.Err != nil {
			pr.Error = partitionError(toConnect(r.Err))
		} else {
			pr.NextOffset, pr.LogStartOffset, pr.HighWatermark = r.Next, r.LogStartOffset, r.HighWatermark
			pr.RecordBatches = r.Batches
			if len(r.Records) > 0 {
				pr.Records = recordsToProto(r.Records)
			}
		}
		out.Partitions[i] = pr
	}
	return connect.NewResponse(out), nil
}

// partitionError is a Connect error as one partition's error of a
// FetchPartitions answer: its code, message and details.
func partitionError(err error) *varvev1.FetchPartitionError {
	ce := connect.NewError(connect.CodeInternal, err)
	errors.As(err, &ce)
	pe := &varvev1.FetchPartitionError{Code: int32(ce.Code()), Message: ce.Message()}
	for _, d := range ce.Details() {
		pe.Details = append(pe.Details, &anypb.Any{TypeUrl: "type.googleapis.com/" + d.Type(), Value: d.Bytes()})
	}
	return pe
}

func (s *fetchService) Subscribe(ctx context.Context, req *connect.Request[varvev1.SubscribeRequest], stream *connect.ServerStream[varvev1.SubscribeResponse]) error {
	if s.f == nil {
		return unavailable(RoleFetch)
	}
	m := req.Msg
	if m.GetMaxBytes() < 0 {
		return badRequest("subscribe %s/%d: max_bytes %d is negative", m.GetTopic(), m.GetPartition(), m.GetMaxBytes())
	}
	offset := m.GetOffset()
	maxBytes := fetchMaxBytes(m.GetMaxBytes(), s.maxBytes)
	// Bad input fails before the stream starts; then the response headers go
	// out at once so the client's call returns while it waits for records.
	first, err := s.f.Fetch(ctx, m.GetTopic(), m.GetPartition(), offset, maxBytes, 0)
	if err != nil {
		return toConnect(err)
	}
	if len(first.Records) == 0 {
		if err := stream.Send(nil); err != nil {
			return nil
		}
	}
	for ctx.Err() == nil {
		res, err := first, error(nil)
		if len(first.Records) == 0 {
			res, err = s.f.Fetch(ctx, m.GetTopic(), m.GetPartition(), offset, maxBytes, 30*time.Second)
		}
		first = fetch.Result{}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return toConnect(err)
		}
		if len(res.Records) == 0 {
			continue
		}
		if err := stream.Send(&varvev1.SubscribeResponse{
			Records: recordsToProto(res.Records), NextOffset: res.Next,
			LogStartOffset: res.LogStartOffset, HighWatermark: res.HighWatermark,
		}); err != nil {
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		offset = res.Next
	}
	return nil
}

func (s *fetchService) ListOffsets(ctx context.Context, req *connect.Request[varvev1.ListOffsetsRequest]) (*connect.Response[varvev1.ListOffsetsResponse], error) {
	if s.f == nil {
		return nil, unavailable(RoleFetch)
	}
	out, err := listOffsets(ctx, s.f, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

// listOffsets answers a ListOffsets request from f (FetchService's, and
// BlockService's for the Kafka listener of a node without the fetch role).
func listOffsets(ctx context.Context, f *fetch.Fetcher, m *varvev1.ListOffsetsRequest) (*varvev1.ListOffsetsResponse, error) {
	var spec fetch.OffsetSpec
	switch m.GetSpec() {
	case varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST:
		spec = fetch.Earliest
	case varvev1.OffsetSpec_OFFSET_SPEC_LATEST:
		spec = fetch.Latest
	case varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP:
		spec = fetch.ByTimestamp
	default:
		return nil, badRequest("list offsets of %q: spec must be EARLIEST, LATEST or TIMESTAMP, got %v", m.GetTopic(), m.GetSpec())
	}
	offs, err := f.ListOffsets(ctx, m.GetTopic(), m.GetPartitions(), spec, m.GetTimestampMs())
	if err != nil {
		return nil, toConnect(err)
	}
	out := &varvev1.ListOffsetsResponse{}
	for _, o := range offs {
		out.Offsets = append(out.Offsets, &varvev1.PartitionOffset{Partition: o.Partition, Offset: o.Offset, TimestampMs: o.Timestamp})
	}
	return out, nil
}
