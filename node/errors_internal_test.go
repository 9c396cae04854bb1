package node

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/varve-io/varve/internal/apierr"
)

// An etcd refusal never reaches a client as a bare INTERNAL with etcd's
// text: it says nothing was written and that a retry will not help, and
// carries the METADATA_REFUSED reason; an etcd outage stays UNAVAILABLE
// with retry advice.
func TestEtcdErrorsReachClientsWithAReason(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   connect.Code
		reason string
		says   string
	}{
		{fmt.Errorf("commit c1 chunk 0: %w", rpctypes.ErrTooManyOps), connect.CodeInternal, apierr.MetadataRefused, "too many operations in txn request"},
		{fmt.Errorf("create topic: %w", rpctypes.ErrRequestTooLarge), connect.CodeInternal, apierr.MetadataRefused, "request is too large"},
		{fmt.Errorf("read: %w", rpctypes.ErrTimeout), connect.CodeUnavailable, "", "request timed out"},
		{fmt.Errorf("read: %w", rpctypes.ErrNoLeader), connect.CodeUnavailable, "", "no leader"},
		{errors.New("something else"), connect.CodeInternal, "", "something else"},
	} {
		got := toConnect(tc.err)
		var ce *connect.Error
		if !errors.As(got, &ce) || ce.Code() != tc.code || apierr.ReasonOf(got) != tc.reason || !strings.Contains(ce.Message(), tc.says) {
			t.Fatalf("%v: got %v (reason %q), want code %v reason %q saying %q", tc.err, got, apierr.ReasonOf(got), tc.code, tc.reason, tc.says)
		}
		if tc.reason != "" && !strings.Contains(ce.Message(), "nothing of it was written") {
			t.Fatalf("%v: %q does not say what the refusal means", tc.err, ce.Message())
		}
	}
}
