package topicapi

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/scan"
)

// Service implements TopicService on etcd.
type Service struct {
	meta        *metadata.Client
	index       *metadata.Cache
	toConnect   func(error) error
	recordLimit func(topic string, maxRecordBytes int32) error
}

// Config is what a Service works with.
type Config struct {
	Meta *metadata.Client
	// Index is the node's watched index (a fetch node's; nil without
	// one): descriptions count the partitions' blocks from it rather
	// than reading the topic's index and records from etcd.
	Index *metadata.Cache
	// ToConnect gives an error its Connect code (the node's mapping,
	// shared by every service).
	ToConnect func(error) error
	// RecordLimit refuses a topic's max_record_bytes that a produce
	// request of this node could not carry (nil: any).
	RecordLimit func(topic string, maxRecordBytes int32) error
}

// New returns the TopicService handler of cfg.
func New(cfg Config) *Service {
	s := &Service{meta: cfg.Meta, index: cfg.Index, toConnect: cfg.ToConnect, recordLimit: cfg.RecordLimit}
	if s.recordLimit == nil {
		s.recordLimit = func(string, int32) error { return nil }
	}
	return s
}

var _ varvev1connect.TopicServiceHandler = (*Service)(nil)

func badRequest(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

func topicToProto(t metadata.Topic) *varvev1.Topic {
	cp := varvev1.CleanupPolicy_CLEANUP_POLICY_DELETE
	if t.CleanupPolicy == metadata.CleanupCompact {
		cp = varvev1.CleanupPolicy_CLEANUP_POLICY_COMPACT
	}
	out := &varvev1.Topic{
		Name: t.Name, Partitions: t.Partitions, Id: t.ID, CreatedMs: t.CreatedMs,
		Config: &varvev1.TopicConfig{
			RetentionMs: t.RetentionMs, RetentionBytes: t.RetentionBytes,
			CleanupPolicy: cp, MaxRecordBytes: t.MaxRecordBytes,
			DeleteRetentionMs: t.DeleteRetentionMs, MinCompactionLagMs: t.MinCompactionLagMs,
		},
	}
	if t.Schema != nil {
		out.Config.Schema = &varvev1.TopicSchema{Format: varvev1.SchemaFormat_SCHEMA_FORMAT_JSON, Fields: t.Schema.Fields}
	}
	return out
}

// topicSchema checks a schema given over the API and returns its
// canonical form (scan.ParseTopicSchema).
func (s *Service) topicSchema(topic string, ts *varvev1.TopicSchema) (*metadata.TopicSchema, error) {
	ms := metadata.TopicSchema{Fields: ts.GetFields()}
	switch ts.GetFormat() {
	case varvev1.SchemaFormat_SCHEMA_FORMAT_JSON, varvev1.SchemaFormat_SCHEMA_FORMAT_UNSPECIFIED:
		ms.Format = metadata.SchemaJSON
	case varvev1.SchemaFormat_SCHEMA_FORMAT_PROTOBUF:
		ms.Format = "protobuf"
	case varvev1.SchemaFormat_SCHEMA_FORMAT_AVRO:
		ms.Format = "avro"
	default:
		return nil, badRequest("topic %q: unknown schema format %d", topic, ts.GetFormat())
	}
	vs, err := scan.ParseTopicSchema(ms)
	if err != nil {
		return nil, s.toConnect(fmt.Errorf("topic %q: %w", topic, err))
	}
	c := vs.Canonical()
	return &c, nil
}

func (s *Service) CreateTopic(ctx context.Context, req *connect.Request[varvev1.CreateTopicRequest]) (*connect.Response[varvev1.CreateTopicResponse], error) {
	m := req.Msg
	t := metadata.Topic{Name: m.GetName(), Partitions: m.GetPartitions()}
	if c := m.GetConfig(); c != nil {
		t.RetentionMs, t.RetentionBytes, t.MaxRecordBytes = c.GetRetentionMs(), c.GetRetentionBytes(), c.GetMaxRecordBytes()
		t.DeleteRetentionMs, t.MinCompactionLagMs = c.GetDeleteRetentionMs(), c.GetMinCompactionLagMs()
		switch c.GetCleanupPolicy() {
		case varvev1.CleanupPolicy_CLEANUP_POLICY_UNSPECIFIED, varvev1.CleanupPolicy_CLEANUP_POLICY_DELETE:
		case varvev1.CleanupPolicy_CLEANUP_POLICY_COMPACT:
			t.CleanupPolicy = metadata.CleanupCompact
		default:
			return nil, badRequest("unknown cleanup policy %d", c.GetCleanupPolicy())
		}
		if c.GetSchema() != nil {
			sch, err := s.topicSchema(m.GetName(), c.GetSchema())
			if err != nil {
				return nil, err
			}
			t.Schema = sch
		}
	}
	if err := s.recordLimit(t.Name, t.MaxRecordBytes); err != nil {
		return nil, s.toConnect(err)
	}
	created, err := s.meta.CreateTopic(ctx, t)
	if err != nil {
		return nil, s.toConnect(err)
	}
	return connect.NewResponse(&varvev1.CreateTopicResponse{Topic: topicToProto(created)}), nil
}

func (s *Service) ListTopics(ctx context.Context, _ *connect.Request[varvev1.ListTopicsRequest]) (*connect.Response[varvev1.ListTopicsResponse], error) {
	ts, err := s.meta.ListTopics(ctx)
	if err != nil {
		return nil, s.toConnect(err)
	}
	out := &varvev1.ListTopicsResponse{}
	for _, t := range ts {
		out.Topics = append(out.Topics, topicToProto(t))
	}
	return connect.NewResponse(out), nil
}

func (s *Service) DescribeTopic(ctx context.Context, req *connect.Request[varvev1.DescribeTopicRequest]) (*connect.Response[varvev1.DescribeTopicResponse], error) {
	t, err := s.meta.GetTopic(ctx, req.Msg.GetName())
	if err != nil {
		return nil, s.toConnect(err)
	}
	states, err := s.partitionFigures(ctx, t)
	if err != nil {
		return nil, s.toConnect(err)
	}
	out := &varvev1.DescribeTopicResponse{Topic: topicToProto(t)}
	for p := int32(0); p < t.Partitions; p++ {
		st := states[p]
		out.Partitions = append(out.Partitions, &varvev1.PartitionInfo{
			Partition: p, LogStartOffset: st.Start, NextOffset: st.Next, Bytes: st.Bytes, Segments: st.Segments,
		})
	}
	return connect.NewResponse(out), nil
}

// partitionFigures returns the high watermark, log start, stored bytes
// and blocks of t's partitions, whichever path committed them (direct,
// sequencer records, compacted index keys): from the watched index once
// it caught up with etcd, else read from etcd (metadata/describe.go).
func (s *Service) partitionFigures(ctx context.Context, t metadata.Topic) (map[int32]metadata.PartitionState, error) {
	if s.index != nil && s.index.CatchUp(ctx) == nil {
		if f, ok := s.index.PartitionFigures(t); ok {
			return f, nil
		}
	}
	return s.meta.PartitionFigures(ctx, t)
}

// UpdateTopic changes retention, the record size limit, the schema, the
// cleanup policy and the compaction settings in place, and grows
// partitions; the topic keeps its id and records.
func (s *Service) UpdateTopic(ctx context.Context, req *connect.Request[varvev1.UpdateTopicRequest]) (*connect.Response[varvev1.UpdateTopicResponse], error) {
	m := req.Msg
	if m.GetSchema() != nil && m.GetClearSchema() {
		return nil, badRequest("update topic %q: schema and clear_schema together", m.GetName())
	}
	if m.RetentionMs == nil && m.RetentionBytes == nil && m.MaxRecordBytes == nil && m.Partitions == nil && m.GetSchema() == nil && !m.GetClearSchema() &&
		m.CleanupPolicy == nil && m.DeleteRetentionMs == nil && m.MinCompactionLagMs == nil {
		return nil, badRequest("update topic %q: nothing to change", m.GetName())
	}
	var sch *metadata.TopicSchema
	if m.GetSchema() != nil {
		var err error
		if sch, err = s.topicSchema(m.GetName(), m.GetSchema()); err != nil {
			return nil, err
		}
	}
	t, err := s.meta.UpdateTopic(ctx, m.GetName(), func(t *metadata.Topic) error {
		set := metadata.TopicSettings{
			RetentionMs: m.RetentionMs, RetentionBytes: m.RetentionBytes, MaxRecordBytes: m.MaxRecordBytes,
			DeleteRetentionMs: m.DeleteRetentionMs, MinCompactionLagMs: m.MinCompactionLagMs,
		}
		if m.CleanupPolicy != nil {
			p, err := cleanupPolicy(t.Name, m.GetCleanupPolicy())
			if err != nil {
				return err
			}
			set.CleanupPolicy = &p
		}
		if err := set.ApplyUpdate(t); err != nil {
			return err
		}
		if m.MaxRecordBytes != nil {
			if err := s.recordLimit(t.Name, m.GetMaxRecordBytes()); err != nil {
				return err
			}
		}
		if m.Partitions != nil {
			t.Partitions = m.GetPartitions()
		}
		if sch != nil {
			t.Schema = sch
		}
		if m.GetClearSchema() {
			t.Schema = nil
		}
		return nil
	})
	if err != nil {
		return nil, s.toConnect(err)
	}
	return connect.NewResponse(&varvev1.UpdateTopicResponse{Topic: topicToProto(t)}), nil
}

func (s *Service) DeleteTopic(ctx context.Context, req *connect.Request[varvev1.DeleteTopicRequest]) (*connect.Response[varvev1.DeleteTopicResponse], error) {
	if err := s.meta.DeleteTopic(ctx, req.Msg.GetName()); err != nil {
		return nil, s.toConnect(err)
	}
	return connect.NewResponse(&varvev1.DeleteTopicResponse{}), nil
}

// cleanupPolicy is an update's cleanup policy as metadata stores it.
func cleanupPolicy(topic string, p varvev1.CleanupPolicy) (string, error) {
	switch p {
	case varvev1.CleanupPolicy_CLEANUP_POLICY_DELETE:
		return metadata.CleanupDelete, nil
	case varvev1.CleanupPolicy_CLEANUP_POLICY_COMPACT:
		return metadata.CleanupCompact, nil
	}
	return "", fmt.Errorf("%w: update topic %q: cleanup_policy must be DELETE or COMPACT, got %s", metadata.ErrInvalidArgument, topic, p)
}
