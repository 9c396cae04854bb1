package storetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/tier"
)

// Run runs the acceptance suite against the stores newStore returns. Each
// subtest calls newStore once and expects a fresh, empty store.
func Run(t *testing.T, newStore func(t *testing.T) tier.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s tier.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"EmptyObject", testEmptyObject},
		{"LargeObject", testLargeObject},
		{"RangedReads", testRangedReads},
		{"InvalidRanges", testInvalidRanges},
		{"Missing", testMissing},
		{"PutExisting", testPutExisting},
		{"PutRace", testPutRace},
		{"Head", testHead},
		{"List", testList},
		{"ListStops", testListStops},
		{"Delete", testDelete},
		{"InvalidKeys", testInvalidKeys},
		{"CancelledContext", testCancelledContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

// random returns n reproducible pseudo-random bytes.
func random(n int, seed uint64) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(key).Read(b)
	return b
}

func put(t *testing.T, s tier.Store, key string, data []byte) {
	t.Helper()
	if err := s.PutIfAbsent(t.Context(), key, data); err != nil {
		t.Fatalf("PutIfAbsent(%q, %d bytes): %v", key, len(data), err)
	}
}

func get(t *testing.T, s tier.Store, key string, off, length int64) []byte {
	t.Helper()
	b, err := s.GetRange(t.Context(), key, off, length)
	if err != nil {
		t.Fatalf("GetRange(%q, %d, %d): %v", key, off, length, err)
	}
	return b
}

// wantContent fails unless key holds exactly want.
func wantContent(t *testing.T, s tier.Store, key string, want []byte) {
	t.Helper()
	got := get(t, s, key, 0, -1)
	if !bytes.Equal(got, want) {
		t.Fatalf("%q holds %d bytes %.16x…, want %d bytes %.16x…", key, len(got), got, len(want), want)
	}
}

// wantMissing fails unless key is absent.
func wantMissing(t *testing.T, s tier.Store, key string) {
	t.Helper()
	if info, err := s.Head(t.Context(), key); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("Head(%q) = %+v, %v; want ErrNotFound", key, info, err)
	}
}

func testRoundTrip(t *testing.T, s tier.Store) {
	data := []byte("hello, varve")
	put(t, s, "segments/ab/0001.obj", data)
	data[0] = 'J' // the store must not keep the caller's slice
	wantContent(t, s, "segments/ab/0001.obj", []byte("hello, varve"))
}

func testEmptyObject(t *testing.T, s tier.Store) {
	put(t, s, "empty", nil)
	for _, r := range [][2]int64{{0, -1}, {0, 0}} {
		if b := get(t, s, "empty", r[0], r[1]); len(b) != 0 {
			t.Errorf("GetRange(empty, %d, %d) = %d bytes, want 0", r[0], r[1], len(b))
		}
	}
	for _, r := range [][2]int64{{0, 1}, {1, -1}, {1, 0}} {
		if _, err := s.GetRange(t.Context(), "empty", r[0], r[1]); !errors.Is(err, tier.ErrInvalidRange) {
			t.Errorf("GetRange(empty, %d, %d) error = %v, want ErrInvalidRange", r[0], r[1], err)
		}
	}
	info, err := s.Head(t.Context(), "empty")
	if err != nil || info.Size != 0 {
		t.Fatalf("Head(empty) = %+v, %v; want size 0", info, err)
	}
}

func testLargeObject(t *testing.T, s tier.Store) {
	data := random(8<<20, 1)
	put(t, s, "large", data)
	wantContent(t, s, "large", data)
	mid := int64(len(data) / 2)
	if got := get(t, s, "large", mid, 1<<20); !bytes.Equal(got, data[mid:mid+1<<20]) {
		t.Fatalf("1 MiB from the middle of an 8 MiB object differs")
	}
}

func testRangedReads(t *testing.T, s tier.Store) {
	data := random(1000, 2)
	put(t, s, "obj", data)
	for _, tc := range []struct {
		name        string
		off, length int64
		want        []byte
	}{
		{"start", 0, 10, data[:10]},
		{"middle", 400, 200, data[400:600]},
		{"end", 990, 10, data[990:]},
		{"last byte", 999, 1, data[999:]},
		{"whole", 0, 1000, data},
		{"to end", 0, -1, data},
		{"middle to end", 123, -1, data[123:]},
		{"empty at start", 0, 0, nil},
		{"empty in middle", 500, 0, nil},
		{"empty at end", 1000, 0, nil},
		{"to end from end", 1000, -1, nil},
	} {
		got, err := s.GetRange(t.Context(), "obj", tc.off, tc.length)
		if err != nil {
			t.Errorf("%s: GetRange(%d, %d): %v", tc.name, tc.off, tc.length, err)
			continue
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: GetRange(%d, %d) = %d bytes, want %d bytes of the object", tc.name, tc.off, tc.length, len(got), len(tc.want))
		}
	}
}

func testInvalidRanges(t *testing.T, s tier.Store) {
	data := random(100, 3)
	put(t, s, "obj", data)
	for _, r := range [][2]int64{
		{101, 0}, {101, -1}, {101, 1}, {200, 10}, // start past the end
		{100, 1}, {50, 51}, {0, 101}, {99, 2}, // end past the end
		{-1, 10}, {-1, -1}, // negative offset
	} {
		b, err := s.GetRange(t.Context(), "obj", r[0], r[1])
		if !errors.Is(err, tier.ErrInvalidRange) {
			t.Errorf("GetRange(%d, %d) = %d bytes, %v; want ErrInvalidRange", r[0], r[1], len(b), err)
		}
	}
	wantContent(t, s, "obj", data)
}

func testMissing(t *testing.T, s tier.Store) {
	put(t, s, "present", []byte("x"))
	for _, key := range []string{"absent", "present/child", "pre"} {
		if _, err := s.GetRange(t.Context(), key, 0, -1); !errors.Is(err, tier.ErrNotFound) {
			t.Errorf("GetRange(%q) error = %v, want ErrNotFound", key, err)
		}
		if _, err := s.GetRange(t.Context(), key, 0, 0); !errors.Is(err, tier.ErrNotFound) {
			t.Errorf("GetRange(%q, 0, 0) error = %v, want ErrNotFound", key, err)
		}
		wantMissing(t, s, key)
	}
}

func testPutExisting(t *testing.T, s tier.Store) {
	put(t, s, "k", []byte("first"))
	for _, data := range [][]byte{[]byte("second, longer"), []byte("first"), nil} {
		err := s.PutIfAbsent(t.Context(), "k", data)
		if !errors.Is(err, tier.ErrExists) {
			t.Fatalf("second PutIfAbsent(%q) error = %v, want ErrExists", data, err)
		}
	}
	wantContent(t, s, "k", []byte("first"))
}

func testPutRace(t *testing.T, s tier.Store) {
	const n = 16
	var (
		wg   sync.WaitGroup
		errs [n]error
		data [n][]byte
	)
	start := make(chan struct{})
	for i := range n {
		data[i] = random(64<<10+i, uint64(100+i))
		wg.Go(func() {
			<-start
			errs[i] = s.PutIfAbsent(t.Context(), "contended/key", data[i])
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("PutIfAbsent %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, tier.ErrExists):
			t.Errorf("PutIfAbsent %d error = %v, want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no PutIfAbsent succeeded")
	}
	wantContent(t, s, "contended/key", data[winner])
}

func testHead(t *testing.T, s tier.Store) {
	before := time.Now().Add(-time.Minute)
	put(t, s, "a/b", random(1234, 4))
	info, err := s.Head(t.Context(), "a/b")
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if info.Key != "a/b" || info.Size != 1234 {
		t.Errorf("Head = %+v, want key a/b, size 1234", info)
	}
	if info.Modified.Before(before) || info.Modified.After(time.Now().Add(time.Minute)) {
		t.Errorf("Head modified = %v, want about now", info.Modified)
	}
}

// listKeys returns the keys List reports for prefix, checking sizes.
func listKeys(t *testing.T, s tier.Store, prefix string, sizes map[string]int) []string {
	t.Helper()
	keys := []string{}
	err := s.List(t.Context(), prefix, func(o tier.ObjectInfo) error {
		if o.Size != int64(sizes[o.Key]) {
			t.Errorf("List(%q): %q has size %d, want %d", prefix, o.Key, o.Size, sizes[o.Key])
		}
		if o.Modified.IsZero() {
			t.Errorf("List(%q): %q has no modification time", prefix, o.Key)
		}
		keys = append(keys, o.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return keys
}

func testList(t *testing.T, s tier.Store) {
	// Chosen so that a directory walk in name order is not key order:
	// '-' and '.' sort before '/', '0' after it.
	keys := []string{
		"a/b/c/1", "a/b/c/2", "a/b/d", "a/b.x", "a/b-y", "a/b0", "a.c", "a-1",
		"b", "ab/x", "segments/00/0001.obj", "segments/00/0002.obj", "segments/01/0001.obj",
		"z/y/x/w/v/u", "a/.x/1", "a/..y", ".z",
	}
	sizes := map[string]int{}
	for i, k := range slices.Backward(keys) {
		sizes[k] = i * 7
		put(t, s, k, random(i*7, uint64(i)))
	}
	filter := func(prefix string) []string {
		out := []string{}
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return out
	}
	for _, prefix := range []string{
		"", "a", "a/", "a/b", "a/b/", "a/b/c", "a/b/c/", "a/b/c/1", "a.", "ab", "b",
		"segments/", "segments/0", "segments/00/", "segments/01/0001.obj",
		"z/y/x/", "zz", "nothing/here/", "../", ".tmp/", "/", "a//", "./", "a/.", "a/..", ".", "..", `a\`, "a\x00",
	} {
		got := listKeys(t, s, prefix, sizes)
		if want := filter(prefix); !slices.Equal(got, want) {
			t.Errorf("List(%q) =\n  %q\nwant\n  %q", prefix, got, want)
		}
	}
}

func testListStops(t *testing.T, s tier.Store) {
	for i := range 5 {
		put(t, s, fmt.Sprintf("k/%d", i), []byte{byte(i)})
	}
	stop := errors.New("stop here")
	var seen []string
	err := s.List(t.Context(), "k/", func(o tier.ObjectInfo) error {
		seen = append(seen, o.Key)
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("List error = %v, want the callback's error", err)
	}
	if want := []string{"k/0", "k/1"}; !slices.Equal(seen, want) {
		t.Fatalf("List visited %q before stopping, want %q", seen, want)
	}
}

func testDelete(t *testing.T, s tier.Store) {
	put(t, s, "d/1", []byte("one"))
	put(t, s, "d/2", []byte("two"))
	if err := s.Delete(t.Context(), "d/1"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, "d/1")
	if _, err := s.GetRange(t.Context(), "d/1", 0, -1); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("GetRange after Delete error = %v, want ErrNotFound", err)
	}
	wantContent(t, s, "d/2", []byte("two"))
	for _, key := range []string{"d/1", "never/written", "d"} {
		if err := s.Delete(t.Context(), key); err != nil {
			t.Errorf("Delete(%q) of a missing object = %v, want nil", key, err)
		}
	}
	// The key can be written again, and its parent removed and recreated.
	if err := s.Delete(t.Context(), "d/2"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	put(t, s, "d/1", []byte("again"))
	wantContent(t, s, "d/1", []byte("again"))
	if got := listKeys(t, s, "", map[string]int{"d/1": 5}); !slices.Equal(got, []string{"d/1"}) {
		t.Fatalf("List after deletes = %q, want [d/1]", got)
	}
}

// InvalidKeys are keys every Store refuses with tier.ErrInvalidKey.
var InvalidKeys = []string{
	"", "/abs", "/", "a//b", "a/", "../x", "a/../b", "a/..", "..", ".", "./a", "a/./b",
	`a\b`, "a\x00b", "\xff\xfe", strings.Repeat("k", tier.MaxKeyLen+1),
}

func testInvalidKeys(t *testing.T, s tier.Store) {
	ctx := t.Context()
	for _, key := range InvalidKeys {
		if err := s.PutIfAbsent(ctx, key, []byte("x")); !errors.Is(err, tier.ErrInvalidKey) {
			t.Errorf("PutIfAbsent(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.GetRange(ctx, key, 0, -1); !errors.Is(err, tier.ErrInvalidKey) {
			t.Errorf("GetRange(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.Head(ctx, key); !errors.Is(err, tier.ErrInvalidKey) {
			t.Errorf("Head(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, tier.ErrInvalidKey) {
			t.Errorf("Delete(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}
	if got := listKeys(t, s, "", nil); len(got) != 0 {
		t.Fatalf("invalid keys stored objects: %q", got)
	}
}

func testCancelledContext(t *testing.T, s tier.Store) {
	put(t, s, "k", []byte("data"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.PutIfAbsent(ctx, "new", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("PutIfAbsent error = %v, want context.Canceled", err)
	}
	if _, err := s.GetRange(ctx, "k", 0, -1); !errors.Is(err, context.Canceled) {
		t.Errorf("GetRange error = %v, want context.Canceled", err)
	}
	if _, err := s.Head(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Head error = %v, want context.Canceled", err)
	}
	if err := s.List(ctx, "", func(tier.ObjectInfo) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("List error = %v, want context.Canceled", err)
	}
	if err := s.Delete(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Delete error = %v, want context.Canceled", err)
	}
	wantMissing(t, s, "new")
	wantContent(t, s, "k", []byte("data"))
}
