//go:build !unix

package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/varve-io/varve/tier"
)

// DevLockFile is the file in a `varve dev` data directory that holds the
// running process's pid (locked with flock on Unix).
const DevLockFile = "varve.lock"

// lockDataDir only records the pid here: flock is Unix's.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, DevLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if _, err := f.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write pid into %s: %w", path, err)
	}
	return f, nil
}

// withFreeSpaceReserve needs statfs, which is Unix's: no reserve here.
func withFreeSpaceReserve(s tier.Store, _ string, _ uint64) tier.Store { return s }
