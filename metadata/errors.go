package metadata

import (
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/varve-io/varve/metadata/internal/bounded"
)

// ErrUnavailable marks a request etcd did not answer in time: etcd is
// down, unreachable or without a leader. It is worth a retry.
var ErrUnavailable = bounded.ErrUnavailable

// IsUnavailable reports whether err is etcd failing to answer (no leader,
// connection lost, too many requests, timed out): worth a retry, as opposed
// to a request etcd refused. ErrUnavailable (no answer within the
// client's request timeout) is one.
func IsUnavailable(err error) bool { return bounded.IsUnavailable(err) }

// EtcdRefusal returns etcd's own reason when err is etcd refusing a request
// for good (not an outage: IsUnavailable covers those), such as a
// transaction over its operation limit or a request over its size limit,
// and "" otherwise. etcd applies a refused request not at all.
func EtcdRefusal(err error) string {
	if IsUnavailable(err) {
		return ""
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Error()
	}
	return ""
}
