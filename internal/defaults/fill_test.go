package defaults

import (
	"testing"
	"time"
)

func TestPositiveAndZero(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{{0, time.Second}, {-1, time.Second}, {2 * time.Second, 2 * time.Second}} {
		v := c.in
		Positive(&v, time.Second)
		if v != c.want {
			t.Errorf("Positive(%v): %v, want %v", c.in, v, c.want)
		}
	}
	s, kept := "", "x"
	Zero(&s, "def")
	Zero(&kept, "def")
	if s != "def" || kept != "x" {
		t.Errorf("Zero: %q %q, want def x", s, kept)
	}
}
