package tier_test

import (
	"errors"
	"testing"

	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/storetest"
)

func TestRecorderStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tier.Store {
		s, _ := newFS(t)
		return tier.NewRecorder(s)
	})
}

func TestRecorderCounts(t *testing.T) {
	s, _ := newFS(t)
	r := tier.NewRecorder(s)
	ctx := t.Context()
	if err := r.PutIfAbsent(ctx, "a/1", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := r.PutIfAbsent(ctx, "a/1", []byte("again")); !errors.Is(err, tier.ErrExists) {
		t.Fatalf("second put error = %v, want ErrExists", err)
	}
	if _, err := r.GetRange(ctx, "a/1", 1, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Head(ctx, "missing"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("head error = %v", err)
	}
	if err := r.List(ctx, "a/", func(tier.ObjectInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, "a/1"); err != nil {
		t.Fatal(err)
	}

	for op, want := range map[tier.Op]int{tier.OpPut: 2, tier.OpGet: 1, tier.OpHead: 1, tier.OpList: 1, tier.OpDelete: 1} {
		if got := r.Count(op); got != want {
			t.Errorf("Count(%s) = %d, want %d", op, got, want)
		}
	}
	calls := r.Calls()
	if len(calls) != 6 {
		t.Fatalf("Calls() = %d calls, want 6: %+v", len(calls), calls)
	}
	if c := calls[0]; c.Op != tier.OpPut || c.Key != "a/1" || c.Bytes != 5 || c.Err != nil {
		t.Errorf("first call = %+v, want a 5-byte put of a/1", c)
	}
	if c := calls[1]; !errors.Is(c.Err, tier.ErrExists) {
		t.Errorf("second call error = %v, want ErrExists", c.Err)
	}
	if c := calls[2]; c.Op != tier.OpGet || c.Off != 1 || c.Len != 3 || c.Bytes != 3 {
		t.Errorf("get call = %+v, want bytes 1+3", c)
	}
	if c := calls[4]; c.Op != tier.OpList || c.Key != "a/" {
		t.Errorf("list call = %+v, want prefix a/", c)
	}

	calls[0].Key = "changed" // Calls returns a copy
	if r.Calls()[0].Key != "a/1" {
		t.Errorf("Calls() shares its slice with the recorder")
	}
	r.Reset()
	if n := len(r.Calls()); n != 0 || r.Count(tier.OpPut) != 0 {
		t.Errorf("after Reset: %d calls", n)
	}
}
