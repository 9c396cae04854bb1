package compact

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier"
)

// A level-0 object holds one block of every partition its flush wrote
// (and a group's object one block of each partition of the group,
// group.go): compacting 1,000 partitions one after the other with ranged
// GETs reads each object 1,000 times, a few hundred bytes at a time. A
// pass instead reads each object that blocks of several of its
// partitions live in once, whole, and every job of the pass slices its
// blocks out of it. The objects are kept for the pass, up to
// ObjectCacheBytes (the planned entries' objects, in plan order); a block
// of any other object is read with a ranged GET as before.

// passObjectsKey carries a pass's *passObjects in the context of its jobs.
type passObjectsKey struct{}

// sharedGetTimeout bounds the GET of a shared object: it serves every job
// of the pass, not only the one that started it, so it does not end with
// that job's context.
const sharedGetTimeout = time.Minute

type passObjects struct {
	store tier.Store
	limit int64 // bytes of the objects shared, at most
	mu    sync.Mutex
	objs  map[string]*sharedObject
	size  int64
}

type sharedObject struct {
	done chan struct{} // nil until a job starts the GET; closed when it ends
	data []byte
	err  error
}

func newPassObjects(store tier.Store, limit int64) *passObjects {
	return &passObjects{store: store, limit: limit, objs: map[string]*sharedObject{}}
}

// share adds the objects to share for the next jobs, planned to read
// planned (one slice per partition): those whose blocks belong to at
// least two of the partitions, oldest entries first, while the shared
// objects' estimated size (each object's furthest block end seen) stays
// within the limit. Objects shared for earlier jobs of the pass stay.
func (po *passObjects) share(planned [][]metadata.IndexEntry) {
	type use struct {
		parts int
		size  int64
	}
	uses := map[string]*use{}
	var order []string
	for _, entries := range planned {
		seen := map[string]bool{}
		for _, e := range entries {
			u := uses[e.Object]
			if u == nil {
				u = &use{}
				uses[e.Object] = u
				order = append(order, e.Object)
			}
			u.size = max(u.size, e.Off+e.Len)
			if !seen[e.Object] {
				seen[e.Object] = true
				u.parts++
			}
		}
	}
	po.mu.Lock()
	defer po.mu.Unlock()
	for _, key := range order {
		u := uses[key]
		if _, ok := po.objs[key]; ok || u.parts < 2 || po.size+u.size > po.limit {
			continue
		}
		po.size += u.size
		po.objs[key] = &sharedObject{}
	}
}

// block returns the bytes [off, off+n) of a shared object, reading it
// whole the first time any job asks. ok is false when the object is not
// shared (or its GET failed): read the range yourself.
func (po *passObjects) block(ctx context.Context, key string, off, n int64) (b []byte, ok bool, err error) {
	if po == nil {
		return nil, false, nil
	}
	po.mu.Lock()
	o := po.objs[key]
	if o == nil {
		po.mu.Unlock()
		return nil, false, nil
	}
	first := o.done == nil
	if first {
		o.done = make(chan struct{})
	}
	po.mu.Unlock()
	if first {
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedGetTimeout)
		o.data, o.err = po.store.GetRange(gctx, key, 0, -1)
		cancel()
		close(o.done)
	} else {
		select {
		case <-o.done:
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
	}
	if o.err != nil {
		// Every job falls back to its own ranged GETs of this object.
		return nil, false, nil
	}
	if off < 0 || n < 0 || off+n > int64(len(o.data)) {
		return nil, true, fmt.Errorf("object %s is %d bytes, the index names bytes %d+%d", key, len(o.data), off, n)
	}
	return o.data[off : off+n : off+n], true, nil
}
