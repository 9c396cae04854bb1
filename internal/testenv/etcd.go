package testenv

import (
	"testing"

	"github.com/varve-io/varve/metadata/embedded"
)

// StartEtcd starts a fresh, real etcd server in this process with its data in
// a temporary directory and loopback ports, and stops it when the test ends.
// It returns the client endpoints.
func StartEtcd(tb testing.TB) []string {
	tb.Helper()
	e, err := embedded.Start(embedded.Config{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start embedded etcd: %v", err)
	}
	tb.Cleanup(e.Close)
	return e.Endpoints()
}
