//go:build unix

package node

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// DevLockFile is the file in a `varve dev` data directory that the running
// process holds an exclusive flock on; it contains that process's pid.
const DevLockFile = "varve.lock"

// lockDataDir takes the data directory's lock without waiting and writes
// this process's pid into the lock file. The lock lasts until the returned
// file is closed or the process ends (the kernel releases it, so a killed
// process leaves no stale lock).
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, DevLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if b, rerr := os.ReadFile(path); rerr == nil {
				if pid, perr := strconv.Atoi(string(bytes.TrimSpace(b))); perr == nil {
					holder = fmt.Sprintf("process %d", pid)
				}
			}
			return nil, fmt.Errorf("data directory %s is in use: %s holds the lock %s (another `varve dev`?); stop it or choose another --data-dir", dir, holder, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write pid into %s: %w", path, err)
	}
	return f, nil
}
