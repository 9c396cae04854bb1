// Package bounded gives every unary etcd call of a metadata client a
// deadline of its own (the client's request timeout) and turns its expiry
// into ErrUnavailable, so an etcd outage is answered in bounded time; it
// records since when etcd has not answered (Health).
//
// It wraps the etcd client's KV, Lease and Maintenance and nothing else:
// streams (watches, keep-alives) resume by themselves and stay unbounded.
package bounded
