package node

import (
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Request limits. connect-go reads a request's body up to
// max_request_bytes (connect.WithReadMaxBytes) and then inflates it with the
// decompressor registered for its encoding (Content-Encoding of a Connect
// unary call, Connect-Content-Encoding or grpc-encoding of each enveloped
// message): its own gzip reader inflates a message past the limit in full
// just to report its size, into buffers of up to the limit per request. The
// node registers its own gzip decompressor instead, which stops at the limit
// and draws every inflated byte from one budget of max_request_bytes shared
// by all requests, so that compressed requests in flight together never
// inflate more than that at once.

// inflateChunk is the most one Read of a decompressor inflates, and so
// draws from the budget, at a time.
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

// inflateBudget is the bytes that requests being decompressed may hold at
// once, and the most one message may inflate to.
type inflateBudget struct {
	limit    int64 // one message, inflated: max_request_bytes
	capacity int64 // all messages being inflated together

	mu   sync.Mutex
	used int64
}

// take draws n bytes for a decompressor that holds held already. It never
// waits: a request that holds bytes and waited for more could wait for
// another that waits for it.
func (b *inflateBudget) take(held, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.capacity && b.used != held {
		return false
	}
	b.used += n
	return true
}

func (b *inflateBudget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// boundedGzip is a connect.Decompressor that inflates gzip up to the
// budget's limit and fails past it, drawing what it inflates from the
// budget until it is closed or reset.
type boundedGzip struct {
	budget *inflateBudget
	zr     gzip.Reader
	out    int64 // bytes inflated of the current message
	held   int64 // bytes drawn from the budget
	err    error
}

func (d *boundedGzip) Reset(r io.Reader) error {
	d.budget.give(d.held)
	d.out, d.held, d.err = 0, 0, nil
	return d.zr.Reset(r)
}

func (d *boundedGzip) Close() error {
	d.budget.give(d.held)
	d.held = 0
	return d.zr.Close()
}

func (d *boundedGzip) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	room := d.budget.limit - d.out
	if room == 0 {
		return 0, d.checkEnd()
	}
	p = p[:min(int64(len(p)), room, inflateChunk)]
	if need := d.out + int64(len(p)) - d.held; need > 0 {
		if !d.budget.take(d.held, need) {
			d.err = d.busy()
			return 0, d.err
		}
		d.held += need
	}
	n, err := d.zr.Read(p)
	d.out += int64(n)
	if err == nil && d.out == d.budget.limit {
		// Tell a message larger than the limit now, before the caller
		// grows its buffer for more.
		err = d.checkEnd()
	}
	return n, err
}

// checkEnd is called at the limit: the message must end here.
func (d *boundedGzip) checkEnd() error {
	var one [1]byte
	n, err := io.ReadFull(&d.zr, one[:])
	switch {
	case n == 1:
		d.err = connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
			"request inflates to more than max_request_bytes (%d bytes); send less per request or raise the node's max_request_bytes", d.budget.limit))
	case errors.Is(err, io.EOF):
		return io.EOF
	default:
		d.err = err
	}
	return d.err
}

func (d *boundedGzip) busy() error {
	b := d.budget
	b.mu.Lock()
	used := b.used
	b.mu.Unlock()
	err := connect.NewError(connect.CodeResourceExhausted, fmt.Errorf(
		"other compressed requests are inflating %d bytes of the node's budget of %d (max_request_bytes); retry", used, b.capacity))
	if det, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(busyRetry)}); derr == nil {
		err.AddDetail(det)
	}
	return err
}

// checkEnvelopes makes a request body of enveloped messages (gRPC,
// gRPC-Web, Connect streaming) that ends inside a message fail as
// InvalidArgument: connect-go reports a truncated envelope as Internal, as
// if the server had failed.
func checkEnvelopes(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if r.Body != nil && (strings.HasPrefix(ct, "application/grpc") || strings.HasPrefix(ct, "application/connect+")) {
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
