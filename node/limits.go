package node

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/varve-io/varve/metadata"
)

// Request limits. connect-go reads a request's body up to
// max_request_bytes (connect.WithReadMaxBytes) and then inflates it with the
// decompressor registered for its encoding (Content-Encoding of a Connect
// unary call, Connect-Content-Encoding or grpc-encoding of each enveloped
// message) into a bytes.Buffer that doubles as it fills: its own gzip
// reader inflates a message past the limit in full just to report its
// size, and eight requests at once may hold eight such buffers. The node
// registers its own gzip decompressor instead. It stops at the limit, and
// every buffer the inflating requests allocate (the ones they outgrew
// included, until they are collected) is drawn from one budget of
// max_request_bytes shared by all of them, before the buffer is grown: so
// inflation never holds more than max_request_bytes at once, and one
// compressed request inflates to at most a quarter to a half of it (the
// buffer doubles).

// inflateChunk is the most one Read of a decompressor inflates at a time.
const inflateChunk = 256 << 10

// busyRetry is the retry advice of a request refused because other
// requests hold the inflate budget.
const busyRetry = 100 * time.Millisecond

// requestOptions are the handler options that bound what one request may
// cost: its size, and its size once inflated.
func (n *Node) requestOptions() []connect.HandlerOption {
	b := &inflateBudget{limit: int64(n.cfg.MaxRequestBytes), capacity: int64(n.cfg.MaxRequestBytes)}
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(n.cfg.MaxRequestBytes),
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

// checkEnvelopes makes a request body of enveloped messages (gRPC,
// gRPC-Web, Connect streaming) that ends inside a message fail as
// InvalidArgument: connect-go reports a truncated envelope as Internal, as
// if the server had failed.
func checkEnvelopes(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		enveloped := strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/grpc-web-text") ||
			strings.HasPrefix(ct, "application/connect+")
		if r.Body != nil && enveloped {
			r.Body = &envelopeBody{ReadCloser: r.Body}
		}
		h.ServeHTTP(w, r)
	})
}

// envelopeBody follows the 5-byte prefixes (flags, big-endian length) of
// the messages it reads through.
type envelopeBody struct {
	io.ReadCloser
	prefix  [5]byte
	nprefix int   // bytes of the current prefix read
	left    int64 // bytes of the current message still to come
	size    int64 // the current message's length
}

func (b *envelopeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	for q := p[:n]; len(q) > 0; {
		if b.left > 0 {
			k := min(b.left, int64(len(q)))
			b.left -= k
			q = q[k:]
			continue
		}
		k := copy(b.prefix[b.nprefix:], q)
		b.nprefix += k
		q = q[k:]
		if b.nprefix == len(b.prefix) {
			b.nprefix = 0
			b.size = int64(binary.BigEndian.Uint32(b.prefix[1:]))
			b.left = b.size
		}
	}
	if errors.Is(err, io.EOF) {
		switch {
		case b.nprefix > 0:
			err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
				"truncated message: the request ended %d bytes into a 5-byte message prefix", b.nprefix))
		case b.left > 0:
			err = connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(
				"truncated message: the prefix promised %d bytes, the request ended after %d", b.size, b.size-b.left))
		}
	}
	return n, err
}

// Size limits that tie API requests and responses to records.
const (
	// RequestEnvelopeBytes is what a produce request needs besides its
	// records' bytes (topic, producer fields, sequences, protobuf framing):
	// a node accepts a topic's max_record_bytes only when a request with
	// one record of that size and this envelope fits max_request_bytes.
	RequestEnvelopeBytes = 1 << 20
	// DefaultMaxRequestBytes lets one request carry the largest record any
	// topic may allow (metadata.MaxMaxRecordBytes) with its envelope.
	DefaultMaxRequestBytes = metadata.MaxMaxRecordBytes + RequestEnvelopeBytes
	// DefaultFetchMaxBytes caps the max_bytes of one fetch, like Kafka's
	// fetch.max.bytes.
	DefaultFetchMaxBytes = 50 << 20
)

// checkRecordFitsRequest refuses a topic record limit that a produce
// request could not carry on this node: the record would be accepted by
// the topic and refused by the transport.
func checkRecordFitsRequest(topic string, maxRecord int32, maxRequest int) error {
	if maxRequest <= 0 || maxRecord <= 0 {
		return nil
	}
	if limit := maxRequest - RequestEnvelopeBytes; int(maxRecord) > limit {
		return fmt.Errorf("%w: topic %q: max_record_bytes %d does not fit in a produce request: this node's max_request_bytes %d allows records of at most %d bytes (max_request_bytes - %d bytes of request envelope); raise max_request_bytes or lower max_record_bytes",
			metadata.ErrInvalidArgument, topic, maxRecord, maxRequest, max(limit, 0), RequestEnvelopeBytes)
	}
	return nil
}

// fetchMaxBytes is the max_bytes a fetch is served with: the request's (0
// means fetch.DefaultMaxBytes) capped at the node's fetch_max_bytes.
func fetchMaxBytes(requested int32, capBytes int) int {
	n := int(requested)
	if capBytes > 0 && n > capBytes {
		return capBytes
	}
	return n
}
