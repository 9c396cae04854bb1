package tier_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/storetest"
)

func newFS(t *testing.T) (*tier.FS, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := tier.NewFS(dir)
	if err != nil {
		t.Fatalf("NewFS: %v", err)
	}
	return s, dir
}

func TestFS(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tier.Store {
		s, _ := newFS(t)
		return s
	})
}

// files returns the paths of the regular files under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFSInvalidKeysWriteNothing(t *testing.T) {
	s, dir := newFS(t)
	ctx := t.Context()
	keys := append(slices.Clone(storetest.InvalidKeys), ".tmp", ".tmp/x", "../escape", "a/../../escape")
	for _, key := range keys {
		if err := s.PutIfAbsent(ctx, key, []byte("x")); !errors.Is(err, tier.ErrInvalidKey) {
			t.Errorf("PutIfAbsent(%q) error = %v, want ErrInvalidKey", key, err)
		}
		if _, err := s.GetRange(ctx, key, 0, -1); !errors.Is(err, tier.ErrInvalidKey) {
			t.Errorf("GetRange(%q) error = %v, want ErrInvalidKey", key, err)
		}
	}
	if got := files(t, filepath.Dir(dir)); len(got) != 0 {
		t.Fatalf("invalid keys wrote files: %q", got)
	}
}

func TestFSLayoutAndTmpNotListed(t *testing.T) {
	s, dir := newFS(t)
	ctx := t.Context()
	if err := s.PutIfAbsent(ctx, "segments/ab/0001.vseg", []byte("seg")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "segments", "ab", "0001.vseg"))
	if err != nil || string(b) != "seg" {
		t.Fatalf("key not stored at its path: %q, %v", b, err)
	}
	// A leftover from a crashed write is never listed.
	if err := os.WriteFile(filepath.Join(dir, ".tmp", "put-123"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := s.List(ctx, "", func(o tier.ObjectInfo) error { keys = append(keys, o.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []string{"segments/ab/0001.vseg"}; !slices.Equal(keys, want) {
		t.Fatalf("List = %q, want %q", keys, want)
	}
	if got := files(t, filepath.Join(dir, ".tmp")); !slices.Equal(got, []string{"put-123"}) {
		t.Fatalf("successful puts left temp files: %q", got)
	}
	// Deleting the last object removes the directories it left empty.
	if err := s.Delete(ctx, "segments/ab/0001.vseg"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "segments")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty directories left after delete: %v", err)
	}
}

func TestFSKeyUsedAsDirectory(t *testing.T) {
	s, _ := newFS(t)
	ctx := t.Context()
	if err := s.PutIfAbsent(ctx, "a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// "a" is a directory here: neither an existing object nor writable.
	if _, err := s.Head(ctx, "a"); !errors.Is(err, tier.ErrNotFound) {
		t.Fatalf("Head(a) error = %v, want ErrNotFound", err)
	}
	if err := s.PutIfAbsent(ctx, "a", []byte("y")); err == nil || errors.Is(err, tier.ErrExists) {
		t.Fatalf("PutIfAbsent(a) error = %v, want a non-ErrExists error", err)
	}
	if err := s.PutIfAbsent(ctx, "a/b/c", []byte("z")); err == nil || errors.Is(err, tier.ErrExists) {
		t.Fatalf("PutIfAbsent(a/b/c) error = %v, want a non-ErrExists error", err)
	}
}

func TestOpenFS(t *testing.T) {
	for _, spec := range []string{"fs:" + t.TempDir(), "file://" + t.TempDir()} {
		s, err := tier.Open(t.Context(), spec, tier.S3Config{})
		if err != nil {
			t.Fatalf("Open(%q): %v", spec, err)
		}
		if _, ok := s.(*tier.FS); !ok {
			t.Fatalf("Open(%q) = %T, want *tier.FS", spec, s)
		}
	}
	for _, spec := range []string{"", "fs:", "file://", "gs://bucket", "s3://", "s3:///prefix", "/just/a/path", "s3://b?region=x", "s3://b/a//b", "s3://b/../x"} {
		if s, err := tier.Open(t.Context(), spec, tier.S3Config{}); err == nil {
			t.Errorf("Open(%q) = %T, want an error", spec, s)
		}
	}
}
