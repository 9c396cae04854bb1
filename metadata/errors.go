package metadata

import (
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// IsUnavailable reports whether err is etcd failing to answer (no leader,
// connection lost, too many requests, timed out): worth a retry, as opposed
// to a request etcd refused. ErrUnavailable (no answer within the
// client's request timeout) is one.
func IsUnavailable(err error) bool {
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	var code codes.Code
	var ee rpctypes.EtcdError
	switch {
	case errors.As(err, &ee):
		code = ee.Code()
	default:
		st, ok := status.FromError(err)
		if !ok {
			return false
		}
		code = st.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return false
}
