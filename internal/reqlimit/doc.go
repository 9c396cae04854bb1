// Package reqlimit bounds what one request to a Connect server may cost
// and refuses a malformed one precisely. It owns the request size limit,
// the gzip decompressor that inflates no further than that limit from one
// budget shared by every request inflating at once, and the check that a
// body of enveloped messages does not end inside one. It knows nothing of
// Varve's API: the node passes its max_request_bytes and mounts these.
//
// Why a decompressor of its own: connect-go reads a request's body up to
// the read limit (connect.WithReadMaxBytes) and then inflates it with the
// decompressor registered for its encoding (Content-Encoding of a Connect
// unary call, Connect-Content-Encoding or grpc-encoding of each enveloped
// message) into a bytes.Buffer that doubles as it fills: its own gzip
// reader inflates a message past the limit in full just to report its
// size, and eight requests at once may hold eight such buffers. This
// decompressor stops at the limit, and every buffer the inflating requests
// allocate (the ones they outgrew included, until they are collected) is
// drawn from one budget of the limit shared by all of them, before the
// buffer is grown: so inflation never holds more than the limit at once,
// and one compressed request inflates to at most a quarter to a half of it
// (the buffer doubles).
//
// It must never import Varve's server packages: the limits are plain
// Connect and HTTP middleware.
package reqlimit
