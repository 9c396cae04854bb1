package tier

import (
	"context"
	"slices"
	"sync"
)

// Op names a Store method in a recorded Call.
type Op string

// The operations a Recorder records, one per Store method.
const (
	OpPut    Op = "put"
	OpGet    Op = "get"
	OpHead   Op = "head"
	OpList   Op = "list"
	OpDelete Op = "delete"
)

// Call is one recorded Store call.
type Call struct {
	// Op is the method called.
	Op Op
	// Key is the key, or the prefix for OpList.
	Key string
	// Off and Len are the requested range of an OpGet.
	Off, Len int64
	// Bytes is the size of the data written (OpPut) or returned (OpGet).
	Bytes int
	// Err is the error the call returned.
	Err error
}

// Recorder is a Store that passes every call to another Store and records it,
// so tests can assert which requests reached object storage ("one PUT per
// flush"). It is safe for concurrent use.
type Recorder struct {
	store Store

	mu    sync.Mutex
	calls []Call
}

var _ Store = (*Recorder)(nil)

// NewRecorder returns a Recorder wrapping s.
func NewRecorder(s Store) *Recorder { return &Recorder{store: s} }

func (r *Recorder) record(c Call) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// Calls returns a copy of the calls recorded so far, in the order they
// returned.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// Count returns how many calls of op were recorded.
func (r *Recorder) Count(op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if c.Op == op {
			n++
		}
	}
	return n
}

// Reset forgets the calls recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
}

// PutIfAbsent implements Store.
func (r *Recorder) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	err := r.store.PutIfAbsent(ctx, key, data)
	r.record(Call{Op: OpPut, Key: key, Bytes: len(data), Err: err})
	return err
}

// GetRange implements Store.
func (r *Recorder) GetRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	b, err := r.store.GetRange(ctx, key, off, length)
	r.record(Call{Op: OpGet, Key: key, Off: off, Len: length, Bytes: len(b), Err: err})
	return b, err
}

// Head implements Store.
func (r *Recorder) Head(ctx context.Context, key string) (ObjectInfo, error) {
	info, err := r.store.Head(ctx, key)
	r.record(Call{Op: OpHead, Key: key, Err: err})
	return info, err
}

// List implements Store. The whole listing is one call.
func (r *Recorder) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	err := r.store.List(ctx, prefix, fn)
	r.record(Call{Op: OpList, Key: prefix, Err: err})
	return err
}

// Delete implements Store.
func (r *Recorder) Delete(ctx context.Context, key string) error {
	err := r.store.Delete(ctx, key)
	r.record(Call{Op: OpDelete, Key: key, Err: err})
	return err
}
