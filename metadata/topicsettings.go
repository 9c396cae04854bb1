package metadata

import "fmt"

// TopicSettings are settings of a topic given explicitly: an update
// through the TopicService (UpdateTopic), or a create or an alter of
// configs through the Kafka listener. A nil field is not given. Both APIs
// share these checks so that a setting means the same through either.
type TopicSettings struct {
	RetentionMs    *int64
	RetentionBytes *int64
	MaxRecordBytes *int32
	// CleanupPolicy is CleanupDelete or CleanupCompact.
	CleanupPolicy      *string
	DeleteRetentionMs  *int64
	MinCompactionLagMs *int64
}

// ApplyUpdate sets the given settings on t, a topic being updated. A
// stored 0 means "the default" for most settings, so a 0 given is refused
// rather than read as that: -1 and positive values are what retention
// takes. The rest (ranges, the cleanup policy's values) is checked when
// the topic is validated (CheckTopicUpdate, UpdateTopic).
func (s TopicSettings) ApplyUpdate(t *Topic) error { return s.apply("update", t) }

// ApplyCreate is ApplyUpdate for a topic about to be created (CheckTopic,
// CreateTopic): errors say "create topic".
func (s TopicSettings) ApplyCreate(t *Topic) error { return s.apply("create", t) }

func (s TopicSettings) apply(verb string, t *Topic) error {
	if s.RetentionMs != nil {
		if *s.RetentionMs == 0 {
			return fmt.Errorf("%w: %s topic %q: retention_ms 0; give -1 (forever) or a positive value", ErrInvalidArgument, verb, t.Name)
		}
		t.RetentionMs = *s.RetentionMs
	}
	if s.RetentionBytes != nil {
		if *s.RetentionBytes == 0 {
			return fmt.Errorf("%w: %s topic %q: retention_bytes 0; give -1 (unlimited) or a positive value", ErrInvalidArgument, verb, t.Name)
		}
		t.RetentionBytes = *s.RetentionBytes
	}
	if s.MaxRecordBytes != nil {
		if *s.MaxRecordBytes == 0 {
			return fmt.Errorf("%w: %s topic %q: max_record_bytes 0; give a positive value", ErrInvalidArgument, verb, t.Name)
		}
		t.MaxRecordBytes = *s.MaxRecordBytes
	}
	if s.CleanupPolicy != nil {
		switch *s.CleanupPolicy {
		case CleanupDelete, CleanupCompact:
			t.CleanupPolicy = *s.CleanupPolicy
		default:
			return fmt.Errorf("%w: %s topic %q: cleanup_policy must be %q or %q, got %q", ErrInvalidArgument, verb, t.Name, CleanupDelete, CleanupCompact, *s.CleanupPolicy)
		}
	}
	if s.DeleteRetentionMs != nil {
		if *s.DeleteRetentionMs <= 0 {
			return fmt.Errorf("%w: %s topic %q: delete_retention_ms must be positive, got %d", ErrInvalidArgument, verb, t.Name, *s.DeleteRetentionMs)
		}
		t.DeleteRetentionMs = *s.DeleteRetentionMs
	}
	if s.MinCompactionLagMs != nil {
		t.MinCompactionLagMs = *s.MinCompactionLagMs
	}
	return nil
}
