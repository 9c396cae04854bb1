package admin

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// Forever, as a retention, keeps records forever.
const Forever time.Duration = -1

// CleanupPolicy is what happens to a topic's old records.
type CleanupPolicy string

// Cleanup policies. The empty policy means the cluster default (delete).
const (
	// CleanupDelete drops records older than the retention.
	CleanupDelete CleanupPolicy = "delete"
	// CleanupCompact keeps the newest record of each key.
	CleanupCompact CleanupPolicy = "compact"
)

// SchemaFormat is how record values are laid out.
type SchemaFormat string

// Schema formats. Protobuf and Avro are refused (connect.CodeInvalidArgument)
// until supported.
const (
	SchemaJSON     SchemaFormat = "json"
	SchemaProtobuf SchemaFormat = "protobuf"
	SchemaAvro     SchemaFormat = "avro"
)

// Schema describes record values as typed columns for scans
// (docs/scan.md): Fields is a JSON list of fields such as
// [{"name": "user", "type": "utf8"}].
type Schema struct {
	Format SchemaFormat
	Fields string
}

// TopicConfig is a topic's settings. Zero fields take the cluster
// defaults.
type TopicConfig struct {
	// Retention keeps records this long (millisecond precision); Forever
	// keeps them forever.
	Retention time.Duration
	// RetentionBytes keeps at most this many bytes per partition; -1 (or
	// 0, the default) keeps any number.
	RetentionBytes int64
	CleanupPolicy  CleanupPolicy
	// MaxRecordBytes is the largest record (key + value + headers)
	// accepted.
	MaxRecordBytes int32
	// Schema, if set, types record values for scans.
	Schema *Schema
	// DeleteRetention (compacted topics) keeps a tombstone this long after
	// its timestamp; 0 means one day.
	DeleteRetention time.Duration
	// MinCompactionLag (compacted topics) is how old a record must be
	// before compaction may remove it.
	MinCompactionLag time.Duration
}

// Topic is a topic as the cluster stores it.
type Topic struct {
	Name       string
	ID         string
	Partitions int32
	Created    time.Time
	Config     TopicConfig
}

// PartitionState is the state of one partition of a topic.
type PartitionState struct {
	Partition      int32
	LogStartOffset int64
	// NextOffset is the high watermark.
	NextOffset int64
	Bytes      int64
	Segments   int64
}

// TopicDescription is a topic and the state of each of its partitions.
type TopicDescription struct {
	Topic      Topic
	Partitions []PartitionState
}

// TopicUpdate is a change of a topic's settings: the fields set change,
// the nil ones stay.
type TopicUpdate struct {
	Retention      *time.Duration
	RetentionBytes *int64
	MaxRecordBytes *int32
	// Partitions can only grow.
	Partitions *int32
	// Schema sets or replaces the schema; it applies to every record a scan
	// reads afterwards, old or new.
	Schema *Schema
	// ClearSchema removes the schema (refused together with Schema).
	ClearSchema bool
	// CleanupPolicy switches between delete and compact in place;
	// compaction and retention follow it from their next pass.
	CleanupPolicy *CleanupPolicy
	// DeleteRetention and MinCompactionLag change the compaction settings
	// (see TopicConfig).
	DeleteRetention  *time.Duration
	MinCompactionLag *time.Duration
}

// CreateTopic creates a topic with the given number of partitions. cfg may
// be nil for the cluster defaults. An existing topic is
// connect.CodeAlreadyExists, bad settings connect.CodeInvalidArgument.
func (a *Client) CreateTopic(ctx context.Context, name string, partitions int32, cfg *TopicConfig) (Topic, error) {
	req := &varvev1.CreateTopicRequest{Name: name, Partitions: partitions}
	if cfg != nil {
		c, err := cfg.proto()
		if err != nil {
			return Topic{}, fmt.Errorf("create topic %s: %w", name, err)
		}
		req.Config = c
	}
	res, err := a.topics.CreateTopic(ctx, connect.NewRequest(req))
	if err != nil {
		return Topic{}, fmt.Errorf("create topic %s: %w", name, err)
	}
	return topicOf(res.Msg.GetTopic()), nil
}

// ListTopics returns every topic.
func (a *Client) ListTopics(ctx context.Context) ([]Topic, error) {
	res, err := a.topics.ListTopics(ctx, connect.NewRequest(&varvev1.ListTopicsRequest{}))
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	out := make([]Topic, len(res.Msg.GetTopics()))
	for i, t := range res.Msg.GetTopics() {
		out[i] = topicOf(t)
	}
	return out, nil
}

// DescribeTopic returns a topic and the state of each of its partitions.
// An unknown topic is connect.CodeNotFound.
func (a *Client) DescribeTopic(ctx context.Context, name string) (TopicDescription, error) {
	res, err := a.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: name}))
	if err != nil {
		return TopicDescription{}, fmt.Errorf("describe topic %s: %w", name, err)
	}
	d := TopicDescription{Topic: topicOf(res.Msg.GetTopic())}
	for _, p := range res.Msg.GetPartitions() {
		d.Partitions = append(d.Partitions, PartitionState{
			Partition: p.GetPartition(), LogStartOffset: p.GetLogStartOffset(),
			NextOffset: p.GetNextOffset(), Bytes: p.GetBytes(), Segments: p.GetSegments(),
		})
	}
	return d, nil
}

// UpdateTopic changes a topic in place: the fields set in u change, the
// others stay. Bad values, a smaller partition count or an invalid schema
// are connect.CodeInvalidArgument, an unknown topic connect.CodeNotFound.
func (a *Client) UpdateTopic(ctx context.Context, name string, u TopicUpdate) (Topic, error) {
	schema, err := u.Schema.proto()
	if err != nil {
		return Topic{}, fmt.Errorf("update topic %s: %w", name, err)
	}
	req := &varvev1.UpdateTopicRequest{
		Name: name, RetentionBytes: u.RetentionBytes, MaxRecordBytes: u.MaxRecordBytes,
		Partitions: u.Partitions, Schema: schema, ClearSchema: u.ClearSchema,
	}
	if u.Retention != nil {
		ms := durationMs(*u.Retention)
		req.RetentionMs = &ms
	}
	if u.CleanupPolicy != nil {
		p, ok := policies[*u.CleanupPolicy]
		if !ok || *u.CleanupPolicy == "" {
			return Topic{}, fmt.Errorf("update topic %s: cleanup policy must be %q or %q, not %q", name, CleanupDelete, CleanupCompact, *u.CleanupPolicy)
		}
		req.CleanupPolicy = &p
	}
	if u.DeleteRetention != nil {
		ms := durationMs(*u.DeleteRetention)
		req.DeleteRetentionMs = &ms
	}
	if u.MinCompactionLag != nil {
		ms := durationMs(*u.MinCompactionLag)
		req.MinCompactionLagMs = &ms
	}
	res, err := a.topics.UpdateTopic(ctx, connect.NewRequest(req))
	if err != nil {
		return Topic{}, fmt.Errorf("update topic %s: %w", name, err)
	}
	return topicOf(res.Msg.GetTopic()), nil
}

// DeleteTopic deletes a topic and, eventually, its data.
func (a *Client) DeleteTopic(ctx context.Context, name string) error {
	if _, err := a.topics.DeleteTopic(ctx, connect.NewRequest(&varvev1.DeleteTopicRequest{Name: name})); err != nil {
		return fmt.Errorf("delete topic %s: %w", name, err)
	}
	return nil
}
