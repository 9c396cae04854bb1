package admin

import (
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

func TestDurations(t *testing.T) {
	for _, c := range []struct {
		d  time.Duration
		ms int64
	}{{0, 0}, {Forever, -1}, {time.Hour, 3600_000}, {time.Microsecond, 1}, {-5 * time.Millisecond, -5}} {
		if got := durationMs(c.d); got != c.ms {
			t.Errorf("durationMs(%v) = %d, want %d", c.d, got, c.ms)
		}
	}
	for _, ms := range []int64{0, -1, 1, 3600_000} {
		if got := durationMs(msDuration(ms)); got != ms {
			t.Errorf("%d ms round-trips to %d", ms, got)
		}
	}
}

func TestTopicConfigConversion(t *testing.T) {
	cfg := TopicConfig{
		Retention: time.Hour, RetentionBytes: 1 << 30, CleanupPolicy: CleanupCompact, MaxRecordBytes: 2048,
		Schema: &Schema{Format: SchemaJSON, Fields: `[]`}, DeleteRetention: time.Minute, MinCompactionLag: time.Second,
	}
	pc, err := cfg.proto()
	if err != nil {
		t.Fatal(err)
	}
	if pc.GetCleanupPolicy() != varvev1.CleanupPolicy_CLEANUP_POLICY_COMPACT || pc.GetSchema().GetFormat() != varvev1.SchemaFormat_SCHEMA_FORMAT_JSON ||
		pc.GetRetentionMs() != 3600_000 || pc.GetDeleteRetentionMs() != 60_000 || pc.GetMinCompactionLagMs() != 1000 {
		t.Fatalf("proto %v", pc)
	}
	back := topicOf(&varvev1.Topic{Name: "t", Config: pc}).Config
	if back.Retention != cfg.Retention || back.CleanupPolicy != cfg.CleanupPolicy || *back.Schema != *cfg.Schema ||
		back.DeleteRetention != cfg.DeleteRetention || back.MinCompactionLag != cfg.MinCompactionLag {
		t.Fatalf("round trip %+v, want %+v", back, cfg)
	}
	for _, bad := range []TopicConfig{{CleanupPolicy: "shred"}, {Schema: &Schema{Format: "yaml"}}} {
		if _, err := bad.proto(); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%+v: %v, want InvalidArgument", bad, err)
		}
	}
}
