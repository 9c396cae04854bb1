package scan

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Column writers that fill Arrow buffers directly, without the per-value
// bookkeeping of array builders: a scan appends millions of records a
// second. Buffers come from the scan's allocator, so its accounting holds.

// fixedCol is a column of fixed-width values without nulls.
type fixedCol[T int32 | int64] struct {
	alloc memory.Allocator
	buf   *memory.Buffer
	v     []T // a view of buf's bytes
	n     int
}

func newFixedCol[T int32 | int64](alloc memory.Allocator) *fixedCol[T] {
	return &fixedCol[T]{alloc: alloc}
}

func (c *fixedCol[T]) grow(need int) {
	var zero T
	size := int(unsafe.Sizeof(zero))
	if c.buf == nil {
		c.buf = memory.NewResizableBuffer(c.alloc)
	}
	c.buf.Reserve(need * size)
	b := c.buf.Buf()
	c.v = unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/size)
}

// reserve makes room for rows more values.
func (c *fixedCol[T]) reserve(rows int) {
	if need := c.n + rows; need > len(c.v) {
		c.grow(need)
	}
}

func (c *fixedCol[T]) append(x T) {
	if c.n == len(c.v) {
		c.grow(max(2*c.n, 64))
	}
	c.v[c.n] = x
	c.n++
}

// take hands the buffer over (sized to the values) and starts anew.
func (c *fixedCol[T]) take() *memory.Buffer {
	var zero T
	if c.buf == nil {
		c.grow(1)
	}
	buf := c.buf
	buf.ResizeNoShrink(c.n * int(unsafe.Sizeof(zero)))
	c.buf, c.v, c.n = nil, nil, 0
	return buf
}

func (c *fixedCol[T]) finish(dt arrow.DataType) arrow.Array {
	n := c.n
	buf := c.take()
	defer buf.Release()
	d := array.NewData(dt, n, []*memory.Buffer{nil, buf}, nil, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

func (c *fixedCol[T]) release() {
	if c.buf != nil {
		c.buf.Release()
		c.buf, c.v, c.n = nil, nil, 0
	}
}

// bitmap is a validity bitmap, allocated on the first null only.
type bitmap struct {
	alloc memory.Allocator
	buf   *memory.Buffer
	nulls int
}

// set records whether value i (appended in order) is valid.
func (m *bitmap) set(i int, valid bool) {
	if m.buf == nil {
		if valid {
			return
		}
		m.buf = memory.NewResizableBuffer(m.alloc)
		m.grow(i + 1)
		b := m.buf.Buf()
		for j := range i / 8 {
			b[j] = 0xff
		}
		for j := i / 8 * 8; j < i; j++ {
			b[j/8] |= 1 << (j % 8)
		}
	} else if (i+8)/8 > len(m.buf.Buf()) {
		m.grow(2 * (i + 1))
	}
	b := m.buf.Buf()
	if valid {
		b[i/8] |= 1 << (i % 8)
	} else {
		b[i/8] &^= 1 << (i % 8)
		m.nulls++
	}
}

func (m *bitmap) grow(bits int) {
	old := len(m.buf.Buf())
	m.buf.Reserve((bits + 7) / 8)
	b := m.buf.Buf()
	clear(b[old:])
}

// take hands the bitmap (nil without nulls) and null count over.
func (m *bitmap) take(n int) (*memory.Buffer, int) {
	buf, nulls := m.buf, m.nulls
	if buf != nil {
		buf.ResizeNoShrink((n + 7) / 8)
	}
	m.buf, m.nulls = nil, 0
	return buf, nulls
}

func (m *bitmap) release() {
	if m.buf != nil {
		m.buf.Release()
		m.buf, m.nulls = nil, 0
	}
}

// binCol is a binary or utf8 column (int32 offsets).
type binCol struct {
	alloc memory.Allocator
	offs  *fixedCol[int32]
	data  *memory.Buffer
	d     []byte // data's bytes
	dn    int    // bytes used
	valid bitmap
	n     int
}

func newBinCol(alloc memory.Allocator) *binCol {
	return &binCol{alloc: alloc, offs: newFixedCol[int32](alloc), valid: bitmap{alloc: alloc}}
}

func (c *binCol) growData(need int) {
	if c.data == nil {
		c.data = memory.NewResizableBuffer(c.alloc)
	}
	c.data.Reserve(need)
	c.d = c.data.Buf()
}

// reserve makes room for rows more values of about bytes bytes in all.
func (c *binCol) reserve(rows, bytes int) {
	c.offs.reserve(rows + 1)
	if c.offs.n == 0 {
		c.offs.append(0)
	}
	if need := c.dn + bytes; need > len(c.d) {
		c.growData(need)
	}
}

// append adds v; nil is null.
func (c *binCol) append(v []byte) {
	if v == nil {
		if c.offs.n == 0 {
			c.offs.append(0)
		}
		c.valid.set(c.n, false)
		c.offs.append(int32(c.dn))
		c.n++
		return
	}
	appendBin(c, v)
}

func (c *binCol) appendString(v string) { appendBin(c, v) }

// appendBin adds a non-null value, from bytes or a string without copying
// it twice.
func appendBin[T string | []byte](c *binCol, v T) {
	if c.offs.n == 0 {
		c.offs.append(0)
	}
	if c.valid.buf != nil {
		c.valid.set(c.n, true)
	}
	if need := c.dn + len(v); need > len(c.d) {
		c.growData(max(need, 2*len(c.d), 4096))
	}
	c.dn += copy(c.d[c.dn:], v)
	c.offs.append(int32(c.dn))
	c.n++
}

func (c *binCol) finishData(dt arrow.DataType) *array.Data {
	n := c.n
	if c.offs.n == 0 {
		c.offs.append(0)
	}
	if c.data == nil {
		c.growData(1)
	}
	data := c.data
	data.ResizeNoShrink(c.dn)
	offs := c.offs.take()
	valid, nulls := c.valid.take(n)
	c.data, c.d, c.dn, c.n = nil, nil, 0, 0
	d := array.NewData(dt, n, []*memory.Buffer{valid, offs, data}, nil, nulls, 0)
	data.Release()
	offs.Release()
	if valid != nil {
		valid.Release()
	}
	return d
}

func (c *binCol) finish(dt arrow.DataType) arrow.Array {
	d := c.finishData(dt)
	defer d.Release()
	return array.MakeFromData(d)
}

func (c *binCol) release() {
	c.offs.release()
	c.valid.release()
	if c.data != nil {
		c.data.Release()
		c.data, c.d, c.dn, c.n = nil, nil, 0, 0
	}
}

// headerCol is the headers column: list<struct<key: utf8, value: binary>>,
// never null (an empty list when a record has no headers).
type headerCol struct {
	lists *fixedCol[int32] // list offsets
	keys  *binCol
	vals  *binCol
	n     int // headers so far
}

func newHeaderCol(alloc memory.Allocator) *headerCol {
	return &headerCol{lists: newFixedCol[int32](alloc), keys: newBinCol(alloc), vals: newBinCol(alloc)}
}

func (c *headerCol) add(k, v []byte) {
	if k == nil {
		k = []byte{} // header keys are never null
	}
	c.keys.append(k)
	c.vals.append(v)
	c.n++
}

func (c *headerCol) addString(k string, v []byte) {
	c.keys.appendString(k)
	c.vals.append(v)
	c.n++
}

// endRow closes the current record's list.
func (c *headerCol) endRow() {
	if c.lists.n == 0 {
		c.lists.append(0)
	}
	c.lists.append(int32(c.n))
}

func (c *headerCol) finish(dt arrow.DataType) arrow.Array {
	lt := dt.(*arrow.ListType)
	st := lt.Elem().(*arrow.StructType)
	rows := c.lists.n - 1
	if c.lists.n == 0 {
		c.lists.append(0)
		rows = 0
	}
	kd := c.keys.finishData(st.Field(0).Type)
	vd := c.vals.finishData(st.Field(1).Type)
	sd := array.NewData(st, c.n, []*memory.Buffer{nil}, []arrow.ArrayData{kd, vd}, 0, 0)
	kd.Release()
	vd.Release()
	lists := c.lists.take()
	ld := array.NewData(lt, rows, []*memory.Buffer{nil, lists}, []arrow.ArrayData{sd}, 0, 0)
	lists.Release()
	sd.Release()
	c.n = 0
	defer ld.Release()
	return array.MakeFromData(ld)
}

func (c *headerCol) release() {
	c.lists.release()
	c.keys.release()
	c.vals.release()
}

// constString is a utf8 column of n copies of s.
func constString(alloc memory.Allocator, s string, n int) arrow.Array {
	c := newBinCol(alloc)
	c.reserve(n, n*len(s))
	for range n {
		c.appendString(s)
	}
	return c.finish(arrow.BinaryTypes.String)
}

// constInt32 is an int32 column of n copies of v.
func constInt32(alloc memory.Allocator, v int32, n int) arrow.Array {
	c := newFixedCol[int32](alloc)
	c.reserve(n)
	for i := range n {
		c.v[i] = v
	}
	c.n = n
	return c.finish(arrow.PrimitiveTypes.Int32)
}

// recycler is the allocator of a scan's column writers: buffers of
// batches the consumer released are handed out again, unzeroed (the
// writers write every byte they use), instead of fresh memory the Go
// runtime must zero. It keeps at most limit bytes; the rest, and
// everything once the scan is released, goes back to the scan's allocator,
// which accounts every byte either way. Array builders (typed columns)
// never use it: they expect zeroed memory.
type recycler struct {
	memory.Allocator
	mu     sync.Mutex
	free   map[int][][]byte // by size class
	held   int64
	limit  int64
	closed bool
}

func newRecycler(alloc memory.Allocator, limit int64) *recycler {
	return &recycler{Allocator: alloc, free: map[int][][]byte{}, limit: limit}
}

// sizeClass rounds n up to one of four sizes per power of two (at most 25%
// more), from 4 KiB; smaller buffers are not recycled (0).
func sizeClass(n int) int {
	if n < 4096 {
		return 0
	}
	e := bits.Len(uint(n - 1)) // 2^(e-1) < n <= 2^e
	step := 1 << (e - 3)
	return (n + step - 1) / step * step
}

func (r *recycler) Allocate(n int) []byte {
	c := sizeClass(n)
	if c == 0 {
		return r.Allocator.Allocate(n)
	}
	r.mu.Lock()
	if l := r.free[c]; len(l) > 0 {
		b := l[len(l)-1]
		r.free[c] = l[:len(l)-1]
		r.held -= int64(c)
		r.mu.Unlock()
		return b
	}
	r.mu.Unlock()
	return r.Allocator.Allocate(c)
}

func (r *recycler) Reallocate(n int, b []byte) []byte {
	if n <= len(b) {
		return b[:n]
	}
	nb := r.Allocate(n)
	copy(nb, b)
	r.Free(b)
	return nb
}

func (r *recycler) Free(b []byte) {
	c := len(b)
	if c == 0 || sizeClass(c) != c {
		r.Allocator.Free(b)
		return
	}
	r.mu.Lock()
	if r.closed || r.held+int64(c) > r.limit {
		r.mu.Unlock()
		r.Allocator.Free(b)
		return
	}
	r.free[c] = append(r.free[c], b)
	r.held += int64(c)
	r.mu.Unlock()
}

// close returns every kept buffer to the scan's allocator; buffers freed
// later go straight back too.
func (r *recycler) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for c, l := range r.free {
		for _, b := range l {
			r.Allocator.Free(b)
		}
		delete(r.free, c)
	}
	r.held = 0
}
