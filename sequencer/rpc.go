package sequencer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"connectrpc.com/connect"
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/seqlog"
)

// The internal API (proto/varve/v1/sequencer.proto): a node serves its
// Sequencer with NewHandler; ingest nodes reach the leader with
// NewDialer, the leader's id being its internal API's base URL. Errors
// cross as codes: InvalidArgument (refused, do not retry), Unavailable
// (not written: not the leader, or it changed), Aborted (the leader's
// write went without an answer: retry, the record answers). An error
// caused by the leader's etcd not answering within its request timeout
// (metadata.ErrUnavailable) also carries etcdTimedOutHeader, so the
// client can tell the outage has been waited out once already.

// etcdTimedOutHeader marks an error whose cause was the leader's etcd
// request going unanswered for its request timeout.
const etcdTimedOutHeader = "Varve-Etcd-Timed-Out"

// NewHandler serves svc as the SequencerService.
func NewHandler(svc Service, opts ...connect.HandlerOption) (string, http.Handler) {
	return varvev1connect.NewSequencerServiceHandler(rpcServer{svc}, opts...)
}

type rpcServer struct{ svc Service }

func (s rpcServer) Commit(ctx context.Context, req *connect.Request[varvev1.SequencerServiceCommitRequest]) (*connect.Response[varvev1.SequencerServiceCommitResponse], error) {
	res, err := s.svc.Commit(ctx, req.Msg.GetCommitId(), appendsFromProto(req.Msg.GetBlocks()))
	if err != nil {
		return nil, toConnect(err)
	}
	return connect.NewResponse(&varvev1.SequencerServiceCommitResponse{Results: resultsToProto(res)}), nil
}

func (s rpcServer) ReadProducer(ctx context.Context, req *connect.Request[varvev1.SequencerServiceReadProducerRequest]) (*connect.Response[varvev1.SequencerServiceReadProducerResponse], error) {
	m := req.Msg
	v, err := s.svc.ReadProducer(ctx, m.GetProducerId(), m.GetEpoch(), m.GetFresh(), m.GetTopic(), m.GetPartitions())
	if err != nil {
		return nil, toConnect(err)
	}
	epoch, known := v.Epoch()
	out := &varvev1.SequencerServiceReadProducerResponse{Known: known, Epoch: epoch, Held: v.Held()}
	for _, p := range m.GetPartitions() {
		st := v.State(p)
		if st == nil {
			continue
		}
		ps := &varvev1.SequencerProducerState{Partition: p, Epoch: st.Epoch, NextSequence: st.Next}
		for _, r := range st.Recent {
			ps.Recent = append(ps.Recent, &varvev1.SequencerRecentBatch{FirstSequence: r.Seq, Base: r.Base, Count: r.Count})
		}
		out.States = append(out.States, ps)
	}
	return connect.NewResponse(out), nil
}

func toConnect(err error) error {
	code := connect.CodeInternal
	switch {
	case errors.Is(err, metadata.ErrInvalidArgument):
		code = connect.CodeInvalidArgument
	case errors.Is(err, metadata.ErrCommitUnknown):
		code = connect.CodeAborted
	case isRetriable(err):
		code = connect.CodeUnavailable
	}
	ce := connect.NewError(code, err)
	if errors.Is(err, metadata.ErrUnavailable) {
		ce.Meta().Set(etcdTimedOutHeader, "1")
	}
	return ce
}

// fromConnect maps an RPC error back to the errors Client retries on.
func fromConnect(err error) error {
	if ce := new(connect.Error); errors.As(err, &ce) && ce.Meta().Get(etcdTimedOutHeader) != "" {
		err = fmt.Errorf("%w: %w", metadata.ErrUnavailable, err)
	}
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument:
		return fmt.Errorf("%w: %s", metadata.ErrInvalidArgument, connect.NewError(connect.CodeInvalidArgument, err).Message())
	case connect.CodeUnavailable, connect.CodeUnimplemented:
		// Unimplemented: a node restarted on the leader's address serves
		// HTTP before it mounts the SequencerService (a 404), while the
		// election still names it: not the leader (yet), ask again.
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case connect.CodeAborted, connect.CodeUnknown, connect.CodeDeadlineExceeded, connect.CodeCanceled:
		return fmt.Errorf("%w: %w", metadata.ErrCommitUnknown, err)
	}
	return err
}

// NewDialer returns a Dialer that calls the SequencerService at the
// leader's id, a base URL, through client.
func NewDialer(client connect.HTTPClient, opts ...connect.ClientOption) Dialer {
	var mu sync.Mutex
	clients := map[string]Service{}
	return func(_ context.Context, id string) (Service, error) {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := clients[id]; ok {
			return c, nil
		}
		c := rpcClient{varvev1connect.NewSequencerServiceClient(client, id, opts...)}
		clients[id] = c
		return c, nil
	}
}

type rpcClient struct {
	c varvev1connect.SequencerServiceClient
}

func (c rpcClient) Commit(ctx context.Context, commitID string, appends []metadata.Append) ([]metadata.AppendResult, error) {
	resp, err := c.c.Commit(ctx, connect.NewRequest(&varvev1.SequencerServiceCommitRequest{CommitId: commitID, Blocks: appendsToProto(appends)}))
	if err != nil {
		return nil, fromConnect(err)
	}
	if n := len(resp.Msg.GetResults()); n != len(appends) {
		return nil, fmt.Errorf("%w: sequencer answered %d results for %d blocks", metadata.ErrCommitUnknown, n, len(appends))
	}
	return resultsFromProto(resp.Msg.GetResults()), nil
}

func (c rpcClient) ReadProducer(ctx context.Context, id int64, epoch int32, fresh bool, topic string, partitions []int32) (*metadata.ProducerView, error) {
	resp, err := c.c.ReadProducer(ctx, connect.NewRequest(&varvev1.SequencerServiceReadProducerRequest{ProducerId: id, Epoch: epoch, Fresh: fresh, Topic: topic, Partitions: partitions}))
	if err != nil {
		return nil, fromConnect(err)
	}
	states := map[int32]*metadata.ProducerState{}
	for _, ps := range resp.Msg.GetStates() {
		st := &metadata.ProducerState{Epoch: ps.GetEpoch(), Next: ps.GetNextSequence()}
		for _, r := range ps.GetRecent() {
			st.Recent = append(st.Recent, metadata.RecentBatch{Seq: r.GetFirstSequence(), Base: r.GetBase(), Count: r.GetCount()})
		}
		states[ps.GetPartition()] = st
	}
	return metadata.NewProducerView(id, topic, resp.Msg.GetKnown(), resp.Msg.GetEpoch(), states).WithHeld(resp.Msg.GetHeld()), nil
}

func appendsToProto(appends []metadata.Append) []*varvev1.SequencerBlock {
	out := make([]*varvev1.SequencerBlock, len(appends))
	for i, a := range appends {
		b := &varvev1.SequencerBlock{Topic: a.Topic, Partition: a.Partition, Object: a.Object, Offset: a.Off, Length: a.Len,
			Records: a.Records, MinTimestamp: a.MinTS, MaxTimestamp: a.MaxTS, RawBytes: a.RawBytes}
		for _, pb := range a.Batches {
			b.Batches = append(b.Batches, &varvev1.SequencerProducerBatch{ProducerId: pb.ID, Epoch: pb.Epoch, FirstSequence: pb.FirstSeq, Count: pb.Count, Index: pb.Index})
		}
		out[i] = b
	}
	return out
}

func appendsFromProto(blocks []*varvev1.SequencerBlock) []metadata.Append {
	out := make([]metadata.Append, len(blocks))
	for i, b := range blocks {
		a := metadata.Append{Topic: b.GetTopic(), Partition: b.GetPartition(), Object: b.GetObject(), Off: b.GetOffset(), Len: b.GetLength(),
			Records: b.GetRecords(), MinTS: b.GetMinTimestamp(), MaxTS: b.GetMaxTimestamp(), RawBytes: b.GetRawBytes()}
		for _, pb := range b.GetBatches() {
			a.Batches = append(a.Batches, metadata.ProducerBatch{ID: pb.GetProducerId(), Epoch: pb.GetEpoch(), FirstSeq: pb.GetFirstSequence(), Count: pb.GetCount(), Index: pb.GetIndex()})
		}
		out[i] = a
	}
	return out
}

func refusalToProto(err error) *varvev1.SequencerRefusal {
	if err == nil {
		return nil
	}
	return &varvev1.SequencerRefusal{Code: varvev1.SequencerRefusalCode(seqlog.RefusalCode(err)), Message: err.Error()}
}

func refusalFromProto(r *varvev1.SequencerRefusal) error {
	if r == nil {
		return nil
	}
	code := r.GetCode()
	if code <= 0 || code > 255 { // a refusal without a known code is still one
		code = 255
	}
	return seqlog.RefusalError(byte(code), r.GetMessage())
}

func resultsToProto(res []metadata.AppendResult) []*varvev1.SequencerBlockResult {
	out := make([]*varvev1.SequencerBlockResult, len(res))
	for i, r := range res {
		br := &varvev1.SequencerBlockResult{Base: r.Base, Refusal: refusalToProto(r.Err)}
		for _, b := range r.Batches {
			br.Batches = append(br.Batches, &varvev1.SequencerBatchResult{Base: b.Base, Duplicate: b.Duplicate, Refusal: refusalToProto(b.Err)})
		}
		out[i] = br
	}
	return out
}

func resultsFromProto(res []*varvev1.SequencerBlockResult) []metadata.AppendResult {
	out := make([]metadata.AppendResult, len(res))
	for i, r := range res {
		ar := metadata.AppendResult{Base: r.GetBase(), Err: refusalFromProto(r.GetRefusal())}
		for _, b := range r.GetBatches() {
			ar.Batches = append(ar.Batches, metadata.BatchResult{Base: b.GetBase(), Duplicate: b.GetDuplicate(), Err: refusalFromProto(b.GetRefusal())})
		}
		out[i] = ar
	}
	return out
}
