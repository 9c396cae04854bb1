package tier_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/storetest"
)

func newS3(t *testing.T, cfg tier.S3Config) *tier.S3 {
	t.Helper()
	s, err := tier.NewS3(t.Context(), cfg)
	if err != nil {
		t.Fatalf("NewS3: %v", err)
	}
	return s
}

func TestS3MinIO(t *testing.T) {
	minio := testenv.MinIO(t)
	storetest.Run(t, func(t *testing.T) tier.Store {
		return newS3(t, minio.S3Config(minio.NewBucket(t)))
	})
}

func TestS3PrefixIsolation(t *testing.T) {
	minio := testenv.MinIO(t)
	bucket := minio.NewBucket(t)
	cfg := minio.S3Config("ignored")
	ctx := t.Context()
	open := func(spec string) tier.Store {
		t.Helper()
		s, err := tier.Open(ctx, spec, cfg)
		if err != nil {
			t.Fatalf("Open(%q): %v", spec, err)
		}
		return s
	}
	a := open("s3://" + bucket + "/cluster-a")
	b := open("s3://" + bucket + "/cluster-b/")
	root := open("s3://" + bucket)

	for s, data := range map[tier.Store]string{a: "from a", b: "from b"} {
		if err := s.PutIfAbsent(ctx, "segments/0001", []byte(data)); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	for s, want := range map[tier.Store]string{a: "from a", b: "from b"} {
		got, err := s.GetRange(ctx, "segments/0001", 0, -1)
		if err != nil || string(got) != want {
			t.Errorf("get = %q, %v; want %q", got, err, want)
		}
	}
	if err := a.PutIfAbsent(ctx, "only-a", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Head(ctx, "only-a"); !errors.Is(err, tier.ErrNotFound) {
		t.Errorf("b sees a's object: %v", err)
	}
	list := func(s tier.Store) []string {
		var keys []string
		if err := s.List(ctx, "", func(o tier.ObjectInfo) error { keys = append(keys, o.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	if got, want := list(a), []string{"only-a", "segments/0001"}; !slices.Equal(got, want) {
		t.Errorf("a lists %q, want %q", got, want)
	}
	if got, want := list(b), []string{"segments/0001"}; !slices.Equal(got, want) {
		t.Errorf("b lists %q, want %q", got, want)
	}
	if got, want := list(root), []string{"cluster-a/only-a", "cluster-a/segments/0001", "cluster-b/segments/0001"}; !slices.Equal(got, want) {
		t.Errorf("the bucket holds %q, want %q", got, want)
	}
	if err := b.Delete(ctx, "segments/0001"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Head(ctx, "segments/0001"); err != nil {
		t.Errorf("deleting b's object touched a's: %v", err)
	}
}

func TestS3MissingBucket(t *testing.T) {
	minio := testenv.MinIO(t)
	s := newS3(t, minio.S3Config("no-such-bucket"))
	// A missing bucket is a configuration error, not a missing object.
	if _, err := s.GetRange(t.Context(), "k", 0, -1); err == nil || errors.Is(err, tier.ErrNotFound) {
		t.Errorf("GetRange on a missing bucket error = %v, want a non-ErrNotFound error", err)
	}
	if err := s.PutIfAbsent(t.Context(), "k", []byte("x")); err == nil || errors.Is(err, tier.ErrExists) {
		t.Errorf("PutIfAbsent on a missing bucket error = %v, want a non-ErrExists error", err)
	}
}
