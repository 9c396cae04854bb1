package placement

import (
	"fmt"
	"testing"
)

func TestValidKey(t *testing.T) {
	for _, k := range []string{"a", "0123456789abcdef", "A-b_c"} {
		if !ValidKey(k) {
			t.Errorf("ValidKey(%q) = false", k)
		}
	}
	long := fmt.Sprintf("%065d", 0)
	for _, k := range []string{"", long, "a b", "a/b", "é", "a\x00"} {
		if ValidKey(k) {
			t.Errorf("ValidKey(%q) = true", k)
		}
	}
}
