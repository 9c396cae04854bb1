package metadata_test

import (
	"strings"
	"testing"

	"github.com/varve-io/varve/metadata"
)

// TestTopicNameErrorsKeepUTF8: a name with a non-ASCII character is refused
// naming that character as written, not as the mojibake of its first byte.
func TestTopicNameErrorsKeepUTF8(t *testing.T) {
	for name, want := range map[string]string{
		"café":    `topic name "café" has character 'é' at byte 3`,
		"主题":      `topic name "主题" has character '主' at byte 0`,
		"a b":     `topic name "a b" has character ' ' at byte 1`,
		"grüße.x": `'ü' at byte 2`,
	} {
		err := metadata.ValidateTopicName(name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %s", name, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "Ã") {
			t.Errorf("%q: mojibake in %v", name, err)
		}
	}
}
