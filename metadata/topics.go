package metadata

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Sentinel errors callers branch on. They are wrapped with the names involved.
var (
	ErrTopicNotFound       = errors.New("topic not found")
	ErrTopicExists         = errors.New("topic already exists")
	ErrInvalidArgument     = errors.New("invalid argument")
	ErrPartitionOutOfRange = errors.New("partition out of range")
)

// Limits on topics.
const (
	MaxTopicNameLen    = 249
	MaxPartitions      = 10000
	DefaultMaxRecord   = 1 << 20
	MaxMaxRecordBytes  = 64 << 20
	CleanupDelete      = "delete"
	CleanupCompact     = "compact"
	DefaultRetentionMs = int64(7 * 24 * time.Hour / time.Millisecond)
	// DefaultDeleteRetentionMs is Kafka's delete.retention.ms default.
	DefaultDeleteRetentionMs = int64(24 * time.Hour / time.Millisecond)
)

// Topic is a topic's configuration as stored at topics/<name>.
type Topic struct {
	Name           string `json:"name"`
	ID             string `json:"id"`
	Partitions     int32  `json:"partitions"`
	CreatedMs      int64  `json:"created_ms"`
	RetentionMs    int64  `json:"retention_ms"`
	RetentionBytes int64  `json:"retention_bytes"`
	CleanupPolicy  string `json:"cleanup_policy"`
	MaxRecordBytes int32  `json:"max_record_bytes"`
	// DeleteRetentionMs is how long compaction of a compacted topic keeps a
	// tombstone (a record with a null value) after its timestamp; 0 (topics
	// with cleanup policy delete, or stored by an older version) means
	// DefaultDeleteRetentionMs.
	DeleteRetentionMs int64 `json:"delete_retention_ms,omitempty"`
	// MinCompactionLagMs is how old a record of a compacted topic must be
	// before compaction may remove it (superseded by a newer record of its
	// key).
	MinCompactionLagMs int64 `json:"min_compaction_lag_ms,omitempty"`
	// Schema, when set, describes record values for typed scans. This
	// package stores it as given; the API checks it (query.ParseTopicSchema)
	// before it gets here.
	Schema *TopicSchema `json:"schema,omitempty"`
}

// Schema formats of TopicSchema.Format.
const (
	SchemaJSON = "json"
)

// TopicSchema is a topic's value schema: a format and the fields' canonical
// JSON definition (docs/scan.md).
type TopicSchema struct {
	Format string `json:"format"`
	Fields string `json:"fields"`
}

// ValidateTopicName applies Kafka's rules: 1 to 249 characters from
// [a-zA-Z0-9._-], and not "." or "..".
func ValidateTopicName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: topic name is empty", ErrInvalidArgument)
	}
	if len(name) > MaxTopicNameLen {
		return fmt.Errorf("%w: topic name is %d characters, the limit is %d", ErrInvalidArgument, len(name), MaxTopicNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: topic name %q is not allowed", ErrInvalidArgument, name)
	}
	for i, c := range name { // by character: a UTF-8 name is reported as written
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("%w: topic name %q has character %q at byte %d; allowed are ASCII letters, digits, '.', '_' and '-'", ErrInvalidArgument, name, c, i)
		}
	}
	return nil
}

// ValidatePartitions checks a topic's partition count: 1 to MaxPartitions.
func ValidatePartitions(topic string, n int32) error {
	if n < 1 || n > MaxPartitions {
		return fmt.Errorf("%w: topic %q: partitions must be between 1 and %d, got %d", ErrInvalidArgument, topic, MaxPartitions, n)
	}
	return nil
}

// CheckTopic validates t as CreateTopic does and returns it with the
// defaults filled in, without storing anything (a dry run of a create).
func CheckTopic(t Topic) (Topic, error) {
	if t.Schema != nil {
		s := *t.Schema
		t.Schema = &s
	}
	if err := t.normalize(); err != nil {
		return Topic{}, err
	}
	return t, nil
}

// CheckTopicUpdate applies update to a copy of old and validates the result
// as UpdateTopic does, returning it: name, id and creation time cannot
// change, partitions can only grow, and the settings must be valid. It
// stores nothing (UpdateTopic uses it; a dry run of an update calls it
// with the stored topic). An error from update is returned as is.
func CheckTopicUpdate(old Topic, update func(*Topic) error) (Topic, error) {
	t := old
	if old.Schema != nil {
		s := *old.Schema
		t.Schema = &s
	}
	if err := update(&t); err != nil {
		return Topic{}, err
	}
	switch {
	case t.Name != old.Name || t.ID != old.ID || t.CreatedMs != old.CreatedMs:
		return Topic{}, fmt.Errorf("%w: update topic %q: name, id and creation time cannot change", ErrInvalidArgument, old.Name)
	case t.Partitions < old.Partitions:
		return Topic{}, fmt.Errorf("%w: update topic %q: partitions can only grow: it has %d, asked %d", ErrInvalidArgument, old.Name, old.Partitions, t.Partitions)
	}
	if err := t.normalize(); err != nil {
		return Topic{}, err
	}
	return t, nil
}

// normalize validates t and fills defaults.
func (t *Topic) normalize() error {
	if err := ValidateTopicName(t.Name); err != nil {
		return err
	}
	if err := ValidatePartitions(t.Name, t.Partitions); err != nil {
		return err
	}
	switch {
	case t.RetentionMs == 0:
		t.RetentionMs = DefaultRetentionMs
	case t.RetentionMs < -1:
		return fmt.Errorf("%w: topic %q: retention_ms must be -1 (forever) or positive, got %d", ErrInvalidArgument, t.Name, t.RetentionMs)
	}
	switch {
	case t.RetentionBytes == 0:
		t.RetentionBytes = -1
	case t.RetentionBytes < -1:
		return fmt.Errorf("%w: topic %q: retention_bytes must be -1 (unlimited) or positive, got %d", ErrInvalidArgument, t.Name, t.RetentionBytes)
	}
	switch t.CleanupPolicy {
	case "":
		t.CleanupPolicy = CleanupDelete
	case CleanupDelete, CleanupCompact:
	default:
		return fmt.Errorf("%w: topic %q: cleanup_policy must be %q or %q, got %q", ErrInvalidArgument, t.Name, CleanupDelete, CleanupCompact, t.CleanupPolicy)
	}
	switch {
	case t.DeleteRetentionMs == 0 && t.CleanupPolicy == CleanupCompact:
		t.DeleteRetentionMs = DefaultDeleteRetentionMs
	case t.DeleteRetentionMs < 0:
		return fmt.Errorf("%w: topic %q: delete_retention_ms must be positive (0: the default of %d), got %d", ErrInvalidArgument, t.Name, DefaultDeleteRetentionMs, t.DeleteRetentionMs)
	}
	if t.MinCompactionLagMs < 0 {
		return fmt.Errorf("%w: topic %q: min_compaction_lag_ms must be 0 or positive, got %d", ErrInvalidArgument, t.Name, t.MinCompactionLagMs)
	}
	switch {
	case t.MaxRecordBytes == 0:
		t.MaxRecordBytes = DefaultMaxRecord
	case t.MaxRecordBytes < 0 || t.MaxRecordBytes > MaxMaxRecordBytes:
		return fmt.Errorf("%w: topic %q: max_record_bytes must be between 1 and %d, got %d", ErrInvalidArgument, t.Name, MaxMaxRecordBytes, t.MaxRecordBytes)
	}
	return nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CreateTopic validates t, fills defaults and stores it, unless a topic of the
// same name exists (ErrTopicExists). Partition state is created lazily by the
// first commit, so a topic of any size is created in one small transaction.
func (c *Client) CreateTopic(ctx context.Context, t Topic) (Topic, error) {
	if err := t.normalize(); err != nil {
		return Topic{}, err
	}
	t.ID = newID()
	t.CreatedMs = time.Now().UnixMilli()
	v, err := json.Marshal(t)
	if err != nil {
		return Topic{}, err
	}
	k := topicKey(t.Name)
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(v))).
		Commit()
	if err != nil {
		return Topic{}, fmt.Errorf("create topic %q: %w", t.Name, err)
	}
	if !resp.Succeeded {
		return Topic{}, fmt.Errorf("create topic %q: %w", t.Name, ErrTopicExists)
	}
	return t, nil
}

// UpdateTopic changes a topic in place: it reads the topic, lets update
// change the copy, validates it and writes it back if the topic was not
// changed meanwhile (a ModRevision comparison; it retries otherwise). Name,
// id and creation time cannot change; partitions can only
// grow. An error from update is returned as is and nothing changes.
func (c *Client) UpdateTopic(ctx context.Context, name string, update func(*Topic) error) (Topic, error) {
	if err := ValidateTopicName(name); err != nil {
		return Topic{}, err
	}
	k := topicKey(name)
	for {
		resp, err := c.cli.Get(ctx, k)
		if err != nil {
			return Topic{}, fmt.Errorf("update topic %q: %w", name, err)
		}
		if len(resp.Kvs) == 0 {
			return Topic{}, fmt.Errorf("update topic %q: %w", name, ErrTopicNotFound)
		}
		var old Topic
		if err := json.Unmarshal(resp.Kvs[0].Value, &old); err != nil {
			return Topic{}, fmt.Errorf("decode topic %q: %w", name, err)
		}
		t, err := CheckTopicUpdate(old, update)
		if err != nil {
			return Topic{}, err
		}
		v, err := json.Marshal(t)
		if err != nil {
			return Topic{}, err
		}
		tr, err := c.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(k), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpPut(k, string(v))).
			Commit()
		if err != nil {
			return Topic{}, fmt.Errorf("update topic %q: %w", name, err)
		}
		if tr.Succeeded {
			return t, nil
		}
		// Changed (or deleted) meanwhile: read it again.
	}
}

// GetTopic reads a topic with a linearizable read.
func (c *Client) GetTopic(ctx context.Context, name string) (Topic, error) {
	if err := ValidateTopicName(name); err != nil {
		return Topic{}, err
	}
	resp, err := c.cli.Get(ctx, topicKey(name))
	if err != nil {
		return Topic{}, fmt.Errorf("get topic %q: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return Topic{}, fmt.Errorf("topic %q: %w", name, ErrTopicNotFound)
	}
	var t Topic
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return Topic{}, fmt.Errorf("decode topic %q: %w", name, err)
	}
	return t, nil
}

// ListTopics returns every topic, sorted by name.
func (c *Client) ListTopics(ctx context.Context) ([]Topic, error) {
	resp, err := c.cli.Get(ctx, topicsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	out := make([]Topic, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var t Topic
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return nil, fmt.Errorf("decode topic at %s: %w", kv.Key, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// DeleteTopic removes the topic, its partition state and its index in one
// transaction. The objects its index pointed at are left to garbage
// collection. Commits racing with the delete fail their topic comparison.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	if err := ValidateTopicName(name); err != nil {
		return err
	}
	k := topicKey(name)
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), ">", 0)).
		Then(
			clientv3.OpDelete(k),
			clientv3.OpDelete(partitionsPrefix(name), clientv3.WithPrefix()),
			clientv3.OpDelete(indexTopicPrefix(name), clientv3.WithPrefix()),
		).Commit()
	if err != nil {
		return fmt.Errorf("delete topic %q: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("delete topic %q: %w", name, ErrTopicNotFound)
	}
	return nil
}
