package groupapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/fetch"
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/apierr"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
)

// Service implements GroupService on etcd (metadata's group sessions
// and fenced commits). Any node serves any group: there is no coordinator.
type Service struct {
	meta    *metadata.Client
	groups  *groups.Groups
	fetcher *fetch.Fetcher // nil without the fetch role: no reset by time
	node    string
	log     *slog.Logger
	conv    func(error) error
	noFetch func() error
}

// Config is what a Service works with.
type Config struct {
	Meta   *metadata.Client
	Groups *groups.Groups
	// Fetcher resets offsets by time; nil without the fetch role (such a
	// reset then fails with NoFetch's error).
	Fetcher *fetch.Fetcher
	Node    string // the node's id, recorded with each member
	Log     *slog.Logger
	// ToConnect gives an error of the packages below its Connect code (the
	// node's mapping, shared by every service); Service adds the ErrorInfo
	// reason of group errors.
	ToConnect func(error) error
	// NoFetch is the error of a request that needs the fetch role.
	NoFetch func() error
}

// New returns the GroupService handler of cfg.
func New(cfg Config) *Service {
	return &Service{meta: cfg.Meta, groups: cfg.Groups, fetcher: cfg.Fetcher, node: cfg.Node, log: cfg.Log,
		conv: cfg.ToConnect, noFetch: cfg.NoFetch}
}

func badRequest(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

var _ varvev1connect.GroupServiceHandler = (*Service)(nil)

// Reasons of group errors, in an ErrorInfo detail (domain varve.io), so
// clients can tell a zombie (UNKNOWN_MEMBER, join again) from a rebalance
// in progress (STALE_GENERATION, wait for the next generation).
var groupReasons = []struct {
	err    error
	reason string
}{
	{groups.ErrUnknownMember, apierr.UnknownMember},
	{groups.ErrStaleGeneration, apierr.StaleGeneration},
	{groups.ErrNotAssigned, apierr.NotAssigned},
	{groups.ErrGroupActive, apierr.GroupActive},
	{groups.ErrOffsetRegress, apierr.OffsetRegress},
	{groups.ErrInconsistentStrategy, apierr.InconsistentStrategy},
	{groups.ErrGroupNotFound, apierr.GroupNotFound},
}

// groupErr is Config.ToConnect plus the ErrorInfo reason of a group error.
func (s *Service) groupErr(err error) error {
	out := s.conv(err)
	var ce *connect.Error
	if !errors.As(out, &ce) {
		return out
	}
	for _, r := range groupReasons {
		if errors.Is(err, r.err) {
			apierr.WithReason(ce, r.reason)
			break
		}
	}
	return out
}

func toTopicPartitions(a groups.Assignment) []*varvev1.TopicPartitions {
	topics := make([]string, 0, len(a))
	for t := range a {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	out := make([]*varvev1.TopicPartitions, 0, len(topics))
	for _, t := range topics {
		out = append(out, &varvev1.TopicPartitions{Topic: t, Partitions: a[t]})
	}
	return out
}

func (s *Service) JoinGroup(ctx context.Context, req *connect.Request[varvev1.JoinGroupRequest], stream *connect.ServerStream[varvev1.JoinGroupResponse]) error {
	m := req.Msg
	timeout := time.Duration(m.GetSessionTimeoutMs()) * time.Millisecond
	if m.GetSessionTimeoutMs() < 0 {
		return badRequest("join group %q: negative session timeout %d ms", m.GetGroup(), m.GetSessionTimeoutMs())
	}
	sess, err := s.groups.Join(ctx, groups.JoinSpec{
		Group: m.GetGroup(), Topics: m.GetTopics(), Strategy: m.GetStrategy(),
		SessionTimeout: timeout, ClientID: m.GetClientId(), Node: s.node,
	})
	if err != nil {
		return s.groupErr(err)
	}
	if timeout == 0 {
		timeout = groups.DefaultSessionTimeout
	}
	s.log.Info("group member joined", "group", m.GetGroup(), "member", sess.ID(), "client", m.GetClientId())
	defer func() {
		// The stream ended (the client left, died or this node drains):
		// the member leaves at once rather than after its session timeout.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := sess.Leave(lctx); err != nil {
			s.log.Warn("group member leave failed; its session will expire", "group", m.GetGroup(), "member", sess.ID(), "err", err)
		} else {
			s.log.Info("group member left", "group", m.GetGroup(), "member", sess.ID())
		}
	}()
	var gen int64
	for {
		g, err := sess.Next(ctx, gen)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, groups.ErrClosedSession) {
				return nil // the client left (LeaveGroup) or went away
			}
			return s.groupErr(err)
		}
		gen = g.Generation
		if err := stream.Send(&varvev1.JoinGroupResponse{
			MemberId: sess.ID(), Generation: g.Generation, Members: int32(g.Members), Strategy: g.Strategy,
			Assignment: toTopicPartitions(g.Assigned), Revoked: toTopicPartitions(g.Revoked),
			SessionTimeoutMs:    int32(timeout / time.Millisecond),
			HeartbeatIntervalMs: int32(timeout / 3 / time.Millisecond),
		}); err != nil {
			return nil // the client is gone
		}
	}
}

func (s *Service) Heartbeat(ctx context.Context, req *connect.Request[varvev1.HeartbeatRequest]) (*connect.Response[varvev1.HeartbeatResponse], error) {
	gen, err := s.groups.Heartbeat(ctx, req.Msg.GetGroup(), req.Msg.GetMemberId())
	if err != nil {
		return nil, s.groupErr(err)
	}
	return connect.NewResponse(&varvev1.HeartbeatResponse{Generation: gen}), nil
}

func (s *Service) LeaveGroup(ctx context.Context, req *connect.Request[varvev1.LeaveGroupRequest]) (*connect.Response[varvev1.LeaveGroupResponse], error) {
	if err := s.groups.Leave(ctx, req.Msg.GetGroup(), req.Msg.GetMemberId()); err != nil {
		return nil, s.groupErr(err)
	}
	return connect.NewResponse(&varvev1.LeaveGroupResponse{}), nil
}

func (s *Service) CommitOffsets(ctx context.Context, req *connect.Request[varvev1.CommitOffsetsRequest]) (*connect.Response[varvev1.CommitOffsetsResponse], error) {
	m := req.Msg
	offs := make([]groups.OffsetCommit, len(m.GetOffsets()))
	for i, o := range m.GetOffsets() {
		offs[i] = groups.OffsetCommit{Topic: o.GetTopic(), Partition: o.GetPartition(), Offset: o.GetOffset(), Metadata: o.GetMetadata()}
	}
	if err := s.groups.CommitOffsets(ctx, m.GetGroup(), m.GetMemberId(), m.GetGeneration(), offs); err != nil {
		return nil, s.groupErr(err)
	}
	return connect.NewResponse(&varvev1.CommitOffsetsResponse{}), nil
}

func committedToProto(o groups.CommittedOffset) *varvev1.CommittedOffset {
	return &varvev1.CommittedOffset{
		Topic: o.Topic, Partition: o.Partition, Offset: o.Offset, Metadata: o.Metadata,
		Generation: o.Generation, CommittedMs: o.CommittedMs,
	}
}

func (s *Service) FetchCommitted(ctx context.Context, req *connect.Request[varvev1.FetchCommittedRequest]) (*connect.Response[varvev1.FetchCommittedResponse], error) {
	parts := map[string][]int32{}
	for _, tp := range req.Msg.GetPartitions() {
		parts[tp.GetTopic()] = append(parts[tp.GetTopic()], tp.GetPartitions()...)
	}
	offs, err := s.groups.FetchCommitted(ctx, req.Msg.GetGroup(), parts)
	if err != nil {
		return nil, s.groupErr(err)
	}
	out := &varvev1.FetchCommittedResponse{}
	for _, o := range offs {
		out.Offsets = append(out.Offsets, committedToProto(o))
	}
	return connect.NewResponse(out), nil
}

func summary(st groups.State) *varvev1.GroupSummary {
	state := "empty"
	if st.Active() {
		state = "stable"
	}
	return &varvev1.GroupSummary{
		Group: st.Name, State: state, Members: int32(len(st.Members)),
		Generation: st.Meta.Generation, Strategy: st.Meta.Strategy,
	}
}

func (s *Service) ListGroups(ctx context.Context, _ *connect.Request[varvev1.ListGroupsRequest]) (*connect.Response[varvev1.ListGroupsResponse], error) {
	names, err := s.groups.List(ctx)
	if err != nil {
		return nil, s.groupErr(err)
	}
	out := &varvev1.ListGroupsResponse{}
	for _, g := range names {
		st, err := s.groups.State(ctx, g)
		if err != nil {
			return nil, s.groupErr(err)
		}
		if st.Exists {
			out.Groups = append(out.Groups, summary(st))
		}
	}
	return connect.NewResponse(out), nil
}

func (s *Service) DescribeGroup(ctx context.Context, req *connect.Request[varvev1.DescribeGroupRequest]) (*connect.Response[varvev1.DescribeGroupResponse], error) {
	g := req.Msg.GetGroup()
	st, err := s.groups.State(ctx, g)
	if err != nil {
		return nil, s.groupErr(err)
	}
	if !st.Exists {
		return nil, s.groupErr(fmt.Errorf("describe group %q: %w", g, groups.ErrGroupNotFound))
	}
	out := &varvev1.DescribeGroupResponse{Summary: summary(st)}
	type tp struct {
		t string
		p int32
	}
	rows := map[tp]*varvev1.GroupPartition{}
	row := func(t string, p int32) *varvev1.GroupPartition {
		r := rows[tp{t, p}]
		if r == nil {
			r = &varvev1.GroupPartition{Topic: t, Partition: p, CommittedOffset: -1}
			rows[tp{t, p}] = r
		}
		return r
	}
	for _, m := range st.Members {
		a := st.Meta.Assignment[m.ID]
		out.Members = append(out.Members, &varvev1.GroupMember{
			MemberId: m.ID, ClientId: m.ClientID, Topics: m.Topics, Assignment: toTopicPartitions(a),
			JoinedMs: m.JoinedMs, SessionTimeoutMs: m.SessionTimeoutMs, Node: m.Node,
		})
		for t, ps := range a {
			for _, p := range ps {
				row(t, p).MemberId = m.ID
			}
		}
	}
	for _, o := range st.Offsets {
		r := row(o.Topic, o.Partition)
		r.CommittedOffset, r.CommittedMs = o.Offset, o.CommittedMs
	}
	states := map[string]map[int32]metadata.PartitionState{}
	for k, r := range rows {
		if _, ok := states[k.t]; !ok {
			if states[k.t], err = s.meta.PartitionStates(ctx, k.t); err != nil {
				return nil, s.groupErr(err)
			}
		}
		ps := states[k.t][k.p]
		r.EndOffset = ps.Next
		from := r.CommittedOffset
		if from < 0 {
			from = ps.Start
		}
		r.Lag = max(0, ps.Next-from)
		out.Partitions = append(out.Partitions, r)
	}
	slices.SortFunc(out.Partitions, func(a, b *varvev1.GroupPartition) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	})
	return connect.NewResponse(out), nil
}

func (s *Service) ResetOffsets(ctx context.Context, req *connect.Request[varvev1.ResetOffsetsRequest]) (*connect.Response[varvev1.ResetOffsetsResponse], error) {
	m := req.Msg
	g, topic := m.GetGroup(), m.GetTopic()
	if err := groups.ValidateName(g); err != nil {
		return nil, s.groupErr(err)
	}
	t, err := s.meta.GetTopic(ctx, topic)
	if err != nil {
		return nil, s.groupErr(fmt.Errorf("reset offsets of group %q: %w", g, err))
	}
	parts := slices.Clone(m.GetPartitions())
	if len(parts) == 0 {
		for p := range t.Partitions {
			parts = append(parts, p)
		}
	}
	for _, p := range parts {
		if p < 0 || p >= t.Partitions {
			return nil, s.groupErr(fmt.Errorf("reset offsets of group %q on %s/%d: %w: the topic has %d partitions", g, topic, p, metadata.ErrPartitionOutOfRange, t.Partitions))
		}
	}
	target := map[int32]int64{}
	switch m.GetSpec() {
	case varvev1.ResetSpec_RESET_SPEC_OFFSET:
		for _, p := range parts {
			target[p] = m.GetOffset()
		}
	case varvev1.ResetSpec_RESET_SPEC_EARLIEST, varvev1.ResetSpec_RESET_SPEC_LATEST:
		states, err := s.meta.PartitionStates(ctx, topic)
		if err != nil {
			return nil, s.groupErr(err)
		}
		for _, p := range parts {
			target[p] = states[p].Start
			if m.GetSpec() == varvev1.ResetSpec_RESET_SPEC_LATEST {
				target[p] = states[p].Next
			}
		}
	case varvev1.ResetSpec_RESET_SPEC_TIMESTAMP:
		if s.fetcher == nil {
			return nil, s.noFetch()
		}
		offs, err := s.fetcher.ListOffsets(ctx, topic, parts, fetch.ByTimestamp, m.GetTimestampMs())
		if err != nil {
			return nil, s.groupErr(err)
		}
		for _, o := range offs {
			target[o.Partition] = o.Offset
		}
	default:
		return nil, badRequest("reset offsets of group %q: spec must be EARLIEST, LATEST, TIMESTAMP or OFFSET, got %v", g, m.GetSpec())
	}
	offs, err := s.groups.ResetOffsets(ctx, g, topic, target)
	if err != nil {
		return nil, s.groupErr(err)
	}
	out := &varvev1.ResetOffsetsResponse{}
	for _, o := range offs {
		out.Offsets = append(out.Offsets, committedToProto(o))
	}
	return connect.NewResponse(out), nil
}

func (s *Service) DeleteGroup(ctx context.Context, req *connect.Request[varvev1.DeleteGroupRequest]) (*connect.Response[varvev1.DeleteGroupResponse], error) {
	if err := s.groups.Delete(ctx, req.Msg.GetGroup()); err != nil {
		return nil, s.groupErr(err)
	}
	return connect.NewResponse(&varvev1.DeleteGroupResponse{}), nil
}
