package reqlimit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// CheckEnvelopes makes a request body of enveloped messages (gRPC,
// gRPC-Web, Connect streaming) that ends inside a message fail as
// InvalidArgument: connect-go reports a truncated envelope as Internal, as
// if the server had failed.
func CheckEnvelopes(h http.Handler) http.Handler {
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
