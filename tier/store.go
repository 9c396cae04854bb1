package tier

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors returned by every Store, wrapped with the key involved.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists: PutIfAbsent found an object already stored under the key.
	ErrExists = errors.New("object already exists")
	// ErrInvalidRange: a ranged read asked for bytes outside the object.
	ErrInvalidRange = errors.New("invalid range")
)

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key      string
	Size     int64
	Modified time.Time
}

// Store is the whole of what Varve needs from object storage. Objects are
// immutable: there is no overwrite, only create-if-absent and delete.
//
// Implementations must be safe for concurrent use. Metrics, retries and call
// recording are decorators around a Store, not part of a backend.
type Store interface {
	// PutIfAbsent stores data under key, atomically, only if no object exists
	// there; otherwise it returns an error wrapping ErrExists and changes
	// nothing. A reader never sees a partial object.
	PutIfAbsent(ctx context.Context, key string, data []byte) error
	// GetRange reads length bytes starting at off. length < 0 reads to the end.
	// A range past the end of the object wraps ErrInvalidRange; a missing
	// object wraps ErrNotFound.
	GetRange(ctx context.Context, key string, off, length int64) ([]byte, error)
	// Head returns the object's size and modification time, or ErrNotFound.
	Head(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix, in
	// lexicographic key order. An error from fn stops the listing and is
	// returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes the object. Deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
}
