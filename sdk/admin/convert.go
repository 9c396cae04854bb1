package admin

import (
	"fmt"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// The conversions between the admin types and the generated API types.

// durationMs is d in milliseconds for the API: Forever is -1, and a
// positive d under a millisecond rounds up (0 would mean the default).
func durationMs(d time.Duration) int64 {
	if d == Forever {
		return -1
	}
	if d > 0 && d < time.Millisecond {
		return 1
	}
	return d.Milliseconds()
}

// msDuration is the inverse of durationMs.
func msDuration(ms int64) time.Duration {
	if ms == -1 {
		return Forever
	}
	return time.Duration(ms) * time.Millisecond
}

// msTime is a timestamp in milliseconds; 0 is the zero time.
func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

var policies = map[CleanupPolicy]varvev1.CleanupPolicy{
	"":             varvev1.CleanupPolicy_CLEANUP_POLICY_UNSPECIFIED,
	CleanupDelete:  varvev1.CleanupPolicy_CLEANUP_POLICY_DELETE,
	CleanupCompact: varvev1.CleanupPolicy_CLEANUP_POLICY_COMPACT,
}

var formats = map[SchemaFormat]varvev1.SchemaFormat{
	"":             varvev1.SchemaFormat_SCHEMA_FORMAT_UNSPECIFIED,
	SchemaJSON:     varvev1.SchemaFormat_SCHEMA_FORMAT_JSON,
	SchemaProtobuf: varvev1.SchemaFormat_SCHEMA_FORMAT_PROTOBUF,
	SchemaAvro:     varvev1.SchemaFormat_SCHEMA_FORMAT_AVRO,
}

func policyOf(p varvev1.CleanupPolicy) CleanupPolicy {
	for k, v := range policies {
		if v == p {
			return k
		}
	}
	return CleanupPolicy(p.String())
}

func (s *Schema) proto() (*varvev1.TopicSchema, error) {
	if s == nil {
		return nil, nil
	}
	f, ok := formats[s.Format]
	if !ok {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("schema format %q: it is json, protobuf or avro", s.Format))
	}
	return &varvev1.TopicSchema{Format: f, Fields: s.Fields}, nil
}

func schemaOf(s *varvev1.TopicSchema) *Schema {
	if s == nil {
		return nil
	}
	out := &Schema{Format: SchemaFormat(s.GetFormat().String()), Fields: s.GetFields()}
	for k, v := range formats {
		if v == s.GetFormat() {
			out.Format = k
		}
	}
	return out
}

// proto converts c; an unknown policy or schema format is
// connect.CodeInvalidArgument.
func (c *TopicConfig) proto() (*varvev1.TopicConfig, error) {
	policy, ok := policies[c.CleanupPolicy]
	if !ok {
		return nil, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("cleanup policy %q: it is delete or compact", c.CleanupPolicy))
	}
	schema, err := c.Schema.proto()
	if err != nil {
		return nil, err
	}
	return &varvev1.TopicConfig{
		RetentionMs: durationMs(c.Retention), RetentionBytes: c.RetentionBytes,
		CleanupPolicy: policy, MaxRecordBytes: c.MaxRecordBytes, Schema: schema,
		DeleteRetentionMs: durationMs(c.DeleteRetention), MinCompactionLagMs: durationMs(c.MinCompactionLag),
	}, nil
}

func topicOf(t *varvev1.Topic) Topic {
	c := t.GetConfig()
	return Topic{
		Name: t.GetName(), ID: t.GetId(), Partitions: t.GetPartitions(), Created: msTime(t.GetCreatedMs()),
		Config: TopicConfig{
			Retention: msDuration(c.GetRetentionMs()), RetentionBytes: c.GetRetentionBytes(),
			CleanupPolicy: policyOf(c.GetCleanupPolicy()), MaxRecordBytes: c.GetMaxRecordBytes(),
			Schema: schemaOf(c.GetSchema()), DeleteRetention: msDuration(c.GetDeleteRetentionMs()),
			MinCompactionLag: msDuration(c.GetMinCompactionLagMs()),
		},
	}
}
