package reqlimit

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// inflateChunk is the most one Read of a decompressor inflates at a time.
const inflateChunk = 256 << 10

// busyRetry is the retry advice of a request refused because other
// requests hold the inflate budget.
const busyRetry = 100 * time.Millisecond

// Options are the handler options that bound what one request may cost:
// its size, and its size once inflated, both to maxBytes (the node's
// max_request_bytes, which the errors name). The handlers given the same
// Options share one inflate budget.
func Options(maxBytes int) []connect.HandlerOption {
	b := &inflateBudget{limit: int64(maxBytes), capacity: int64(maxBytes)}
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(maxBytes),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &boundedGzip{budget: b} },
			func() connect.Compressor { return gzip.NewWriter(io.Discard) }),
	}
}

// inflateBudget is the buffer bytes that requests being decompressed may
// hold at once, and the most one message may inflate to. A buffer given
// back counts as garbage until a garbage collection has run since: so the
// budget bounds memory, not only live buffers.
type inflateBudget struct {
	limit    int64 // one message, inflated: max_request_bytes
	capacity int64 // the buffers of all messages being inflated

	mu      sync.Mutex
	used    int64 // drawn by requests inflating now
	garbage int64 // given back since the last collection
	gc      sync.Mutex
}

// take draws n bytes; when the budget is short only because of garbage it
// collects it first. It never waits for other requests: one that holds
// bytes and waited for more could wait for another that waits for it.
// alone reports whether no other request holds any (held is the caller's
// share).
func (b *inflateBudget) take(held, n int64) (ok, alone bool) {
	for collected := false; ; collected = true {
		b.mu.Lock()
		if b.used+b.garbage+n <= b.capacity {
			b.used += n
			b.mu.Unlock()
			return true, false
		}
		alone = b.used == held
		fits := b.used+n <= b.capacity
		b.mu.Unlock()
		if collected || !fits {
			return false, alone
		}
		b.collect()
	}
}

// collect runs a garbage collection (one at a time) and forgets the
// garbage given back before it started.
func (b *inflateBudget) collect() {
	b.gc.Lock()
	defer b.gc.Unlock()
	b.mu.Lock()
	g := b.garbage
	b.mu.Unlock()
	if g == 0 {
		return
	}
	runtime.GC()
	b.mu.Lock()
	b.garbage -= g
	b.mu.Unlock()
}

func (b *inflateBudget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.garbage += n
	b.mu.Unlock()
}

// boundedGzip is a connect.Decompressor that inflates gzip up to the
// budget's limit and fails past it. connect-go reads it into a reset
// bytes.Buffer: the buffer holds what this message inflated so far and
// each Read is given its free room, so the decompressor knows the buffer's
// size, and that the buffer grows to twice that when the room drops below
// bytes.MinRead. It draws that growth from the budget first, when the
// message goes on, and fails instead when the budget cannot give it.
type boundedGzip struct {
	budget *inflateBudget
	zr     gzip.Reader
	out    int64 // bytes inflated of the current message
	bufCap int64 // size of the caller's buffer
	next   int64 // bytes drawn for the caller's next buffer
	held   int64 // bytes drawn from the budget
	peeked bool  // pb is the next inflated byte
	pb     byte
	err    error
}

func (d *boundedGzip) Reset(r io.Reader) error {
	d.release()
	d.out, d.bufCap, d.peeked, d.err = 0, 0, false, nil
	return d.zr.Reset(r)
}

func (d *boundedGzip) Close() error {
	d.release()
	return d.zr.Close()
}

// release gives back what the message drew.
func (d *boundedGzip) release() {
	d.budget.give(d.held)
	d.held, d.next = 0, 0
}

func (d *boundedGzip) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if c := d.out + int64(len(p)); c > d.bufCap {
		// The caller's first buffer came from its pool; a bigger one
		// replaces the last, which stays garbage until the next GC.
		if d.bufCap > 0 && c > d.next {
			if err := d.draw(c - d.next); err != nil {
				return 0, err
			}
		}
		d.bufCap, d.next = c, 0
	}
	room := d.budget.limit - d.out
	if room == 0 {
		return 0, d.tooLarge()
	}
	free := int64(len(p))
	p = p[:min(free, room, inflateChunk)]
	n, err := d.read(p)
	d.out += int64(n)
	switch {
	case err != nil:
		return n, err
	case d.out == d.budget.limit:
		return n, d.tooLarge()
	case free-int64(n) < bytes.MinRead:
		// The caller grows its buffer before its next Read, if the
		// message goes on.
		if ok, err := d.peek(); !ok {
			return n, err
		}
		grow := 2*d.bufCap + bytes.MinRead
		if err := d.draw(grow); err != nil {
			return n, err
		}
		d.next = grow
	}
	return n, nil
}

// read inflates into p, the peeked byte first.
func (d *boundedGzip) read(p []byte) (int, error) {
	if !d.peeked || len(p) == 0 {
		return d.zr.Read(p)
	}
	p[0], d.peeked = d.pb, false
	if len(p) == 1 {
		return 1, nil
	}
	n, err := d.zr.Read(p[1:])
	return n + 1, err
}

// peek reports whether the message goes on, reading its next byte ahead.
// It returns io.EOF at the message's end.
func (d *boundedGzip) peek() (bool, error) {
	if d.peeked {
		return true, nil
	}
	var one [1]byte
	n, err := io.ReadFull(&d.zr, one[:])
	if n == 1 {
		d.pb, d.peeked = one[0], true
		return true, nil
	}
	if errors.Is(err, io.EOF) {
		return false, io.EOF
	}
	d.err = err
	return false, err
}

// tooLarge is called at the limit: the message must end there.
func (d *boundedGzip) tooLarge() error {
	if ok, err := d.peek(); !ok {
		return err
	}
	d.err = connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"request inflates to more than max_request_bytes (%d bytes); send less per request or raise the node's max_request_bytes", d.budget.limit))
	return d.err
}

// draw takes n bytes of the budget for the caller's next buffer.
func (d *boundedGzip) draw(n int64) error {
	b := d.budget
	ok, alone := b.take(d.held, n)
	if ok {
		d.held += n
		return nil
	}
	if alone {
		d.err = connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"request inflates past %d bytes, whose buffers would pass max_request_bytes (%d bytes); send it uncompressed, send less per request or raise the node's max_request_bytes", d.out, b.capacity))
		return d.err
	}
	err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"other compressed requests are inflating into buffers of the node's max_request_bytes (%d bytes); retry", b.capacity))
	if det, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(busyRetry)}); derr == nil {
		err.AddDetail(det)
	}
	d.err = err
	return err
}
