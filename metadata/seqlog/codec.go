package seqlog

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed marks a record or checkpoint that does not decode.
var ErrMalformed = errors.New("malformed sequencer data")

// enc appends the primitive types of the format to a buffer.
type enc struct{ b []byte }

func (e *enc) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) byte1(v byte)     { e.b = append(e.b, v) }
func (e *enc) str(s string)     { e.uvarint(uint64(len(s))); e.b = append(e.b, s...) }

// dec reads them back; the first error sticks and every later read
// returns zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (d *dec) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) byte1(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) str(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads a count of items each at least min bytes long, refusing one
// the remaining bytes cannot hold (so a corrupt count allocates nothing).
func (d *dec) count(what string, min int) int {
	n := d.uvarint(what)
	if d.err != nil {
		return 0
	}
	if n > uint64(len(d.b)/min) {
		d.fail(what + ": count exceeds the data")
		return 0
	}
	return int(n)
}

// int32 reads a varint that must fit an int32.
func (d *dec) int32(what string) int32 {
	v := d.varint(what)
	if v < -1<<31 || v > 1<<31-1 {
		d.fail(what + ": out of range")
		return 0
	}
	return int32(v)
}

// table is the string table of one record: each distinct string once,
// referenced by index.
type table struct {
	idx  map[string]uint64
	strs []string
}

func (t *table) ref(s string) uint64 {
	if i, ok := t.idx[s]; ok {
		return i
	}
	if t.idx == nil {
		t.idx = map[string]uint64{}
	}
	t.idx[s] = uint64(len(t.strs))
	t.strs = append(t.strs, s)
	return t.idx[s]
}

func (d *dec) ref(strs []string, what string) string {
	i := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if i >= uint64(len(strs)) {
		d.fail(what + ": string reference out of range")
		return ""
	}
	return strs[i]
}
