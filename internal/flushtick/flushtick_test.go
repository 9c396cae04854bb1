package flushtick

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	next, every, ok := Parse(Format(37*time.Millisecond, 100*time.Millisecond))
	if !ok || next != 37*time.Millisecond || every != 100*time.Millisecond {
		t.Fatalf("round trip: %v %v %v", next, every, ok)
	}
	if _, _, ok := Parse("every=100000;in=0"); !ok {
		t.Fatal("reordered fields, no spaces: not parsed")
	}
	for _, bad := range []string{
		"", "in=1", "every=100", "in=1; every=0", "in=-1; every=10", "in=11; every=10",
		"in=1; every=10; x=3", "in=a; every=10", "in 1; every=10", "in=1;; every=10",
	} {
		if _, _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) ok", bad)
		}
	}
}

func TestSendAt(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	k := Tick{At: t0, Every: 100 * time.Millisecond} // margin 10 ms
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	for _, c := range []struct{ in, want int }{
		{-50, -10},   // before the seal at t0: its send point
		{-10, -10},   // at the send point: now
		{-9, 90},     // inside the margin: the next seal's send point
		{0, 90},      // at the seal
		{35, 90},     // mid-tick
		{90, 90},     // the next send point
		{250, 290},   // two seals later
		{-301, -210}, // before At: the schedule runs backwards too
	} {
		if got := k.SendAt(ms(c.in)); !got.Equal(ms(c.want)) {
			t.Errorf("SendAt(t0%+d ms) = t0%+d ms, want t0%+d ms", c.in, got.Sub(t0).Milliseconds(), c.want)
		}
	}
	if got := (Tick{}).SendAt(ms(3)); !got.Equal(ms(3)) {
		t.Errorf("zero Tick held the batch: %v", got.Sub(t0))
	}
	short := Tick{At: t0, Every: 10 * time.Millisecond} // margin 5 ms: nothing to gain
	if got := short.SendAt(ms(3)); !got.Equal(ms(3)) {
		t.Errorf("10 ms tick held the batch: %v", got.Sub(t0))
	}
	if m := (Tick{Every: time.Second}).Margin(); m != 50*time.Millisecond {
		t.Errorf("margin of 1 s ticks: %v", m)
	}
}

func TestFromHeader(t *testing.T) {
	now := time.Now()
	k := FromHeader(Format(20*time.Millisecond, 100*time.Millisecond), now)
	if !k.At.Equal(now.Add(20*time.Millisecond)) || k.Every != 100*time.Millisecond {
		t.Fatalf("FromHeader: %+v", k)
	}
	if !k.Fresh(now.Add(MaxAge)) || k.Fresh(now.Add(MaxAge+time.Millisecond)) || (Tick{}).Fresh(now) {
		t.Fatalf("Fresh: a schedule is used for MaxAge after it was heard, and no schedule never")
	}
	if k := FromHeader("garbage", now); !k.At.IsZero() {
		t.Fatalf("garbage gave a schedule: %+v", k)
	}
}
