package tier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tmpDirName is the directory under the root that holds files being written.
// It is never listed, and keys inside it are refused.
const tmpDirName = ".tmp"

// staleTmpAge is how old a leftover temporary file (from a crash during
// PutIfAbsent) must be before NewFS removes it.
const staleTmpAge = time.Hour

// FS is a Store backed by a local directory: the embedded default. The key
// "segments/ab/0001.obj" is the file dir/segments/ab/0001.obj.
//
// Writes are atomic and durable: the data is written and fsynced in a
// temporary file under dir/.tmp, hard-linked into place (which fails if the
// key exists) and the directory is fsynced. A key cannot also be a "directory"
// of other keys ("a" and "a/b" cannot both exist), unlike in S3.
type FS struct {
	dir string
	tmp string
	// durable remembers directories known to exist with their entry synced.
	durable sync.Map
}

var _ Store = (*FS)(nil)

// NewFS opens (creating it if needed) a filesystem store rooted at dir. It
// removes temporary files older than an hour left by an earlier crash.
func NewFS(dir string) (*FS, error) {
	if dir == "" {
		return nil, errors.New("fs store: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fs store %s: %w", dir, err)
	}
	s := &FS{dir: abs, tmp: filepath.Join(abs, tmpDirName)}
	if err := os.MkdirAll(s.tmp, 0o755); err != nil {
		return nil, fmt.Errorf("fs store %s: %w", dir, err)
	}
	s.removeStaleTmp()
	return s, nil
}

// Dir returns the absolute root directory of the store.
func (s *FS) Dir() string { return s.dir }

func (s *FS) removeStaleTmp() {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err == nil && time.Since(info.ModTime()) > staleTmpAge {
			_ = os.Remove(filepath.Join(s.tmp, e.Name()))
		}
	}
}

// path validates key and returns its file path.
func (s *FS) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	if key == tmpDirName || strings.HasPrefix(key, tmpDirName+"/") {
		return "", fmt.Errorf("key %q: %s/ is reserved by the fs store: %w", key, tmpDirName, ErrInvalidKey)
	}
	return filepath.Join(s.dir, filepath.FromSlash(key)), nil
}

// PutIfAbsent implements Store.
func (s *FS) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	final, err := s.path(key)
	if err != nil {
		return fmt.Errorf("fs put: %w", err)
	}
	tmp, err := s.writeTemp(data)
	if err != nil {
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	defer os.Remove(tmp)

	// A concurrent Delete may remove the parent directories we just created
	// (it prunes empty ones), so a link that finds no directory is retried.
	for attempt := 0; ; attempt++ {
		if err := s.mkdirs(filepath.Dir(final)); err != nil {
			return fmt.Errorf("fs put %s: %w", key, err)
		}
		err = os.Link(tmp, final)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == 3 {
			break
		}
		// A Delete pruned the directory: forget it and its parents.
		for d := filepath.Dir(final); d != s.dir && d != filepath.Dir(d); d = filepath.Dir(d) {
			s.durable.Delete(d)
		}
	}
	switch {
	case errors.Is(err, fs.ErrExist):
		if info, serr := os.Lstat(final); serr == nil && info.IsDir() {
			return fmt.Errorf("fs put %s: other keys use it as a directory", key)
		}
		// When an earlier attempt of this very put linked the file and then
		// failed, the caller takes "exists" as stored: make sure it is.
		if err := syncDir(filepath.Dir(final)); err != nil {
			return fmt.Errorf("fs put %s: %w", key, err)
		}
		return fmt.Errorf("fs put %s: %w", key, ErrExists)
	case err != nil:
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	if err := syncDir(filepath.Dir(final)); err != nil {
		return fmt.Errorf("fs put %s: %w", key, err)
	}
	return nil
}

// writeTemp writes data to a new, fsynced file under the temporary directory
// and returns its path.
func (s *FS) writeTemp(data []byte) (string, error) {
	f, err := os.CreateTemp(s.tmp, "put-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// mkdirs creates dir and any missing parents under the root, fsyncing each
// parent after creating a child so the new path survives a crash.
func (s *FS) mkdirs(dir string) error {
	if dir == s.dir {
		return nil
	}
	if _, ok := s.durable.Load(dir); ok {
		return nil
	}
	info, err := os.Stat(dir)
	switch {
	case err == nil && !info.IsDir():
		return fmt.Errorf("%s is an object, not a directory", strings.TrimPrefix(dir, s.dir+string(filepath.Separator)))
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return err
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirs(parent); err != nil {
		return err
	}
	if err != nil { // it did not exist
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	// Whoever created dir (this call, a concurrent one, another process) may
	// not have synced its parent yet: sync it once before relying on it.
	if err := syncDir(parent); err != nil {
		return err
	}
	s.durable.Store(dir, struct{}{})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// GetRange implements Store.
func (s *FS) GetRange(ctx context.Context, key string, off, length int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("fs get %s: %w", key, err)
	}
	p, err := s.path(key)
	if err != nil {
		return nil, fmt.Errorf("fs get: %w", err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("fs get %s: %w", key, notFound(err))
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("fs get %s: %w", key, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("fs get %s: %w", key, ErrNotFound)
	}
	size := info.Size()
	if length < 0 && off >= 0 && off <= size {
		length = size - off
	}
	if off < 0 || length < 0 || off > size || length > size-off {
		return nil, fmt.Errorf("fs get %s bytes %d+%d of %d: %w", key, off, length, size, ErrInvalidRange)
	}
	buf := make([]byte, length)
	if _, err := f.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && length == 0) {
		return nil, fmt.Errorf("fs get %s bytes %d+%d: %w", key, off, length, err)
	}
	return buf, nil
}

// notFound maps a missing file, or a path through a file, to ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return ErrNotFound
	}
	return err
}

// Head implements Store.
func (s *FS) Head(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("fs head %s: %w", key, err)
	}
	p, err := s.path(key)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("fs head: %w", err)
	}
	info, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("fs head %s: %w", key, notFound(err))
	}
	if !info.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("fs head %s: %w", key, ErrNotFound)
	}
	return ObjectInfo{Key: key, Size: info.Size(), Modified: info.ModTime()}, nil
}

// List implements Store. Keys are visited in lexicographic (byte) order: the
// entries of each directory are sorted with a "/" after directory names, so
// "a.b" comes before "a/b" as it does in S3.
func (s *FS) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs list %q: %w", prefix, err)
	}
	if !couldPrefixKey(prefix) {
		return nil
	}
	// Start at the deepest directory the prefix names, unless that is .tmp.
	start := ""
	if i := strings.LastIndexByte(prefix, '/'); i > 0 {
		if _, err := s.path(prefix[:i]); err == nil {
			start = prefix[:i+1]
		}
	}
	err := s.walk(ctx, start, prefix, fn)
	var stop errStop
	if errors.As(err, &stop) {
		return stop.err // fn's own error, unwrapped
	}
	if err != nil {
		return fmt.Errorf("fs list %q: %w", prefix, err)
	}
	return nil
}

// errStop carries an error returned by List's fn out of the walk.
type errStop struct{ err error }

func (e errStop) Error() string { return e.err.Error() }

// walk visits, in key order, the objects in the directory for the key prefix
// dir (empty or ending in "/") whose keys start with prefix.
func (s *FS) walk(ctx context.Context, dir, prefix string, fn func(ObjectInfo) error) error {
	entries, err := os.ReadDir(filepath.Join(s.dir, filepath.FromSlash(dir)))
	if err != nil {
		if dir != "" && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
			return nil // removed while listing, or a file
		}
		return err
	}
	sortKey := func(e fs.DirEntry) string {
		if e.IsDir() {
			return e.Name() + "/"
		}
		return e.Name()
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(sortKey(a), sortKey(b)) })
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		key := dir + e.Name()
		switch {
		case dir == "" && e.Name() == tmpDirName:
			continue
		case e.IsDir():
			sub := key + "/"
			if strings.HasPrefix(sub, prefix) || strings.HasPrefix(prefix, sub) {
				if err := s.walk(ctx, sub, prefix, fn); err != nil {
					return err
				}
			}
		case e.Type().IsRegular() && strings.HasPrefix(key, prefix):
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted while listing
			}
			if err != nil {
				return err
			}
			if err := fn(ObjectInfo{Key: key, Size: info.Size(), Modified: info.ModTime()}); err != nil {
				return errStop{err}
			}
		}
	}
	return nil
}

// Delete implements Store. Directories left empty are removed.
func (s *FS) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs delete %s: %w", key, err)
	}
	p, err := s.path(key)
	if err != nil {
		return fmt.Errorf("fs delete: %w", err)
	}
	info, err := os.Lstat(p)
	if err != nil {
		if errors.Is(notFound(err), ErrNotFound) {
			return nil
		}
		return fmt.Errorf("fs delete %s: %w", key, err)
	}
	if info.IsDir() {
		return nil // not an object: a directory of other keys
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fs delete %s: %w", key, err)
	}
	// Prune parents that are now empty; Remove fails on a non-empty one.
	for d := filepath.Dir(p); d != s.dir; d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	return nil
}
