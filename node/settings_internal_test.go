package node

import (
	"testing"
	"time"
)

func TestSettingHelpers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{{"1048576", 1 << 20, false}, {"8MiB", 8 << 20, false}, {"512KiB", 512 << 10, false}, {"4GiB", 4 << 30, false},
		{"1 MiB", 1 << 20, false}, {"lots", 0, true}, {"-1", 0, true}, {"1MB", 0, true}} {
		got, err := parseBytes(tc.in)
		if (err != nil) != tc.err || !tc.err && got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v", tc.in, got, err)
		}
	}
	for d, want := range map[time.Duration]string{time.Minute: "1m", 24 * time.Hour: "24h", 90 * time.Second: "1m30s", 100 * time.Millisecond: "100ms", Off: "off"} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	b := between(100*time.Millisecond, 5*time.Minute)
	if b(time.Second) != nil || b(time.Millisecond) == nil || b(time.Hour) == nil || b(time.Hour).Error() != "is above 5m" {
		t.Errorf("between: %v %v %v", b(time.Second), b(time.Millisecond), b(time.Hour))
	}
}
