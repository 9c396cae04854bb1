package blockcache

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Disk keeps blocks exactly as they are stored in their object (block
// header, CRC and compressed payload), one file per block under a
// directory, bounded in bytes, least recently used out first.
//
// It survives a restart: OpenDisk rebuilds its index from the
// directory, ordered by the files' modification times, which a read
// refreshes. Files are written to a temporary name and renamed into place,
// so a file under a block's name is whole or was torn by a crash of the
// machine; either way the reader checks the block's CRC (segment.DecodeBlock)
// and a file that fails is a miss, removed, never bad data. Files are not
// fsynced for the same reason.
//
// The bound counts file contents, not filesystem overhead. It is safe for
// concurrent use.
type Disk struct {
	dir string
	max int64

	mu    sync.Mutex
	size  int64
	ll    *list.List // front: most recently used
	items map[string]*list.Element
}

type diskEntry struct {
	name string
	size int64
}

const diskSuffix = ".blk"

// OpenDisk opens (creating it if needed) the cache directory dir,
// holding up to maxBytes, and indexes the blocks already there. Leftover
// temporary files are removed, and the oldest blocks when the directory
// holds more than maxBytes.
func OpenDisk(dir string, maxBytes int64) (*Disk, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("open disk cache %s: size %d must be positive", dir, maxBytes)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open disk cache: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open disk cache: %w", err)
	}
	type found struct {
		name string
		size int64
		mod  time.Time
	}
	var files []found
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if !strings.HasSuffix(name, diskSuffix) {
			if strings.HasSuffix(name, ".tmp") {
				_ = os.Remove(filepath.Join(dir, name)) // a write cut short
			}
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		files = append(files, found{name, info.Size(), info.ModTime()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	d := &Disk{dir: dir, max: maxBytes, ll: list.New(), items: map[string]*list.Element{}}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range files {
		d.items[f.name] = d.ll.PushFront(&diskEntry{name: f.name, size: f.size})
		d.size += f.size
	}
	d.evictLocked()
	return d, nil
}

// diskName is the file name of a block: a hash of its object key and byte
// range, so any key is a safe name and a range read back is the range asked.
func diskName(object string, off, length int64) string {
	h := sha256.New()
	h.Write([]byte(object))
	var b [17]byte
	binary.LittleEndian.PutUint64(b[1:], uint64(off))
	h.Write(b[:9])
	binary.LittleEndian.PutUint64(b[1:], uint64(length))
	h.Write(b[:9])
	return hex.EncodeToString(h.Sum(nil)[:20]) + diskSuffix
}

// Get returns the stored bytes of a block, when the cache has a file of
// the right length for it. The caller verifies them and calls Remove when
// they are corrupt.
func (d *Disk) Get(object string, off, length int64) ([]byte, bool) {
	name := diskName(object, off, length)
	d.mu.Lock()
	el, ok := d.items[name]
	if ok {
		d.ll.MoveToFront(el)
	}
	d.mu.Unlock()
	if !ok {
		return nil, false
	}
	path := filepath.Join(d.dir, name)
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) != length {
		d.Remove(object, off, length)
		return nil, false
	}
	// The access order survives a restart through the modification time.
	now := time.Now()
	_ = os.Chtimes(path, now, now)
	return b, true
}

// Put stores a block's bytes, evicting the least recently used blocks
// beyond the bound. A block larger than the whole cache is not kept.
func (d *Disk) Put(object string, off int64, b []byte) error {
	size := int64(len(b))
	if size > d.max || size == 0 {
		return nil
	}
	name := diskName(object, off, size)
	d.mu.Lock()
	if el, ok := d.items[name]; ok {
		d.ll.MoveToFront(el)
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	tmp, err := os.CreateTemp(d.dir, "block-*.tmp")
	if err != nil {
		return fmt.Errorf("cache block %s@%d on disk: %w", object, off, err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("cache block %s@%d on disk: %w", object, off, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.Rename(tmp.Name(), filepath.Join(d.dir, name)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("cache block %s@%d on disk: %w", object, off, err)
	}
	if el, ok := d.items[name]; ok { // written twice at once: same bytes
		d.ll.MoveToFront(el)
		return nil
	}
	d.items[name] = d.ll.PushFront(&diskEntry{name: name, size: size})
	d.size += size
	d.evictLocked()
	return nil
}

// Remove forgets a block and deletes its file.
func (d *Disk) Remove(object string, off, length int64) {
	name := diskName(object, off, length)
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.items[name]; ok {
		d.removeLocked(el)
	}
}

func (d *Disk) removeLocked(el *list.Element) {
	e := el.Value.(*diskEntry)
	d.ll.Remove(el)
	delete(d.items, e.name)
	d.size -= e.size
	// A file that cannot be removed stays on disk, uncounted, until the
	// next start indexes it again.
	_ = os.Remove(filepath.Join(d.dir, e.name))
}

func (d *Disk) evictLocked() {
	for d.size > d.max {
		d.removeLocked(d.ll.Back())
	}
}

// Size returns the bytes held.
func (d *Disk) Size() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.size
}

// Len returns the number of blocks held.
func (d *Disk) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.items)
}

// Dir returns the cache directory.
func (d *Disk) Dir() string { return d.dir }

// Path returns the file that holds (or would hold) a block, for tests and
// tools.
func (d *Disk) Path(object string, off, length int64) string {
	return filepath.Join(d.dir, diskName(object, off, length))
}
