package testenv

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// BuildVarve builds ./cmd/varve from the repository into dir and returns the
// binary's path, for tests that drive the binary as a user or a benchmark
// would.
func BuildVarve(dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("find the repository root: %w", err)
	}
	bin := filepath.Join(dir, "varve")
	build := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "./cmd/varve")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("`go build -o %s ./cmd/varve` in %s: %w\n%s", bin, root, err, out)
	}
	return bin, nil
}
