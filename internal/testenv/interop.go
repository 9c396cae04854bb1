package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// InteropDir returns the repository's interop/ directory (JavaScript readers
// of Varve's output: npm apache-arrow and @duckdb/node-api), running
// `npm ci` there first when its packages are missing — one test binary at a
// time. Without node and npm the test fails with the reason.
func InteropDir(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "interop")
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the interop test needs %s on PATH (apt-get install nodejs npm): %v", tool, err)
		}
	}
	// Test binaries of several packages run at once: one npm ci at a time.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "varve-interop-npm.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatalf("lock for npm ci: %v", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	for _, pkg := range []string{"apache-arrow", "@duckdb/node-api"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", filepath.FromSlash(pkg), "package.json")); err == nil {
			continue
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
		break
	}
	return dir
}
