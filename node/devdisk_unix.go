//go:build unix

package node

import (
	"context"
	"fmt"
	"syscall"

	"github.com/varve-io/varve/tier"
)

// reserveStore refuses to write an object that would leave less than
// minFree bytes free on the file system of dir. Its error wraps ENOSPC, so
// producers get RESOURCE_EXHAUSTED naming the segment, and writes resume by
// themselves once space returns.
type reserveStore struct {
	tier.Store
	dir     string
	minFree uint64
}

// withFreeSpaceReserve wraps s so that it keeps minFree bytes free on dir's
// file system.
func withFreeSpaceReserve(s tier.Store, dir string, minFree uint64) tier.Store {
	if minFree == 0 {
		return s
	}
	return &reserveStore{Store: s, dir: dir, minFree: minFree}
}

func (s *reserveStore) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err == nil {
		free := st.Bavail * uint64(st.Bsize)
		if need := uint64(len(data)) + s.minFree; free < need {
			return fmt.Errorf("fs put %s: %w: %d bytes free on %s, %d needed (%d for the object, %d kept free for etcd: --min-free-bytes)",
				key, syscall.ENOSPC, free, s.dir, need, len(data), s.minFree)
		}
	}
	return s.Store.PutIfAbsent(ctx, key, data)
}
