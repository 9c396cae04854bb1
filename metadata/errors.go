package metadata

import "github.com/varve-io/varve/metadata/internal/bounded"

// ErrUnavailable marks a request etcd did not answer in time: etcd is
// down, unreachable or without a leader. It is worth a retry.
var ErrUnavailable = bounded.ErrUnavailable

// IsUnavailable reports whether err is etcd failing to answer (no leader,
// connection lost, too many requests, timed out): worth a retry, as opposed
// to a request etcd refused. ErrUnavailable (no answer within the
// client's request timeout) is one.
func IsUnavailable(err error) bool { return bounded.IsUnavailable(err) }
