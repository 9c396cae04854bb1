package strictjson

import (
	"strings"
	"testing"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// TestUnmarshalRefusesUnknownFields: a misspelled field is an error naming
// it; the same message spelled right decodes.
func TestUnmarshalRefusesUnknownFields(t *testing.T) {
	var c codec
	var m varvev1.ProduceRequest
	if err := c.Unmarshal([]byte(`{"topik":"t"}`), &m); err == nil || !strings.Contains(err.Error(), "unknown field") || !strings.Contains(err.Error(), "topik") {
		t.Fatalf("unknown field: %v; want an error naming topik", err)
	}
	if err := c.Unmarshal([]byte(`{"topic":"t"}`), &m); err != nil || m.GetTopic() != "t" {
		t.Fatalf("valid request: %v, topic %q", err, m.GetTopic())
	}
	if err := c.Unmarshal(nil, &m); err == nil {
		t.Fatal("empty payload decoded")
	}
}
