package testenv

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/varve-io/varve/tier"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if modulePath(filepath.Join(root, "go.mod")) != ModulePath {
		t.Fatalf("RepoRoot() = %s, whose go.mod is not %s", root, ModulePath)
	}
	// From a subdirectory too.
	t.Chdir(filepath.Join(root, "internal"))
	if again, err := RepoRoot(); err != nil || again != root {
		t.Fatalf("RepoRoot() from internal/ = %q, %v; want %q", again, err, root)
	}
}

func TestMinIO(t *testing.T) {
	m := MinIO(t)
	if again := MinIO(t); again != m {
		t.Fatalf("MinIO started a second server")
	}
	b1, b2 := m.NewBucket(t), m.NewBucket(t)
	if b1 == b2 {
		t.Fatalf("NewBucket returned %q twice", b1)
	}
	s, err := tier.NewS3(t.Context(), m.S3Config(b1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutIfAbsent(t.Context(), "hello", []byte("world")); err != nil {
		t.Fatal(err)
	}
	s2, err := tier.NewS3(t.Context(), m.S3Config(b2))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s2.List(t.Context(), "", func(tier.ObjectInfo) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("a new bucket holds %d objects (%v), want 0", n, err)
	}
}

func TestStartMinIOStops(t *testing.T) {
	srv, stop, err := StartMinIO(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	stop()
	stop() // safe twice
	if _, err := tier.NewS3(t.Context(), srv.S3Config("x")); err != nil {
		t.Fatal(err)
	}
	s, _ := tier.NewS3(t.Context(), srv.S3Config("x"))
	if err := s.PutIfAbsent(t.Context(), "k", nil); err == nil {
		t.Fatalf("the stopped server still answers")
	}
}

func TestMinIOBinaryMissing(t *testing.T) {
	t.Setenv("VARVE_MINIO_BIN", filepath.Join(t.TempDir(), "no-minio"))
	_, _, err := StartMinIO(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("StartMinIO with a missing binary: error = %v, want advice to run make tools", err)
	}
}

var allocSink [][]byte

// TestAllocsPerRunCountsOnlyF: AllocsPerRun counts f's own allocations
// (three per call here) while another goroutine allocates all the time,
// which testing.AllocsPerRun would count too.
func TestAllocsPerRunCountsOnlyF(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	var noise [][]byte
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				noise = append(noise[:0], make([]byte, 64))
				runtime.Gosched()
			}
		}
	}()
	n := AllocsPerRun(100, func() {
		allocSink = [][]byte{make([]byte, 100), make([]byte, 200)}
	})
	close(stop)
	<-done
	if n != 3 {
		t.Fatalf("%v allocations per call, want 3", n)
	}
}
