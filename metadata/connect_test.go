package metadata_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/metadata"
)

// TestConnectNamesTheWait: connecting to an address where no etcd
// answers gives up after the dial timeout saying so, with the endpoints
// (before: "connect to etcd [...]: context deadline exceeded", which
// `varve serve` printed as its whole explanation).
func TestConnectNamesTheWait(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	start := time.Now()
	_, err = metadata.Connect(context.Background(), metadata.Config{Endpoints: []string{"http://" + addr}, DialTimeout: 300 * time.Millisecond})
	took := time.Since(start)
	if err == nil {
		t.Fatal("connected to an address where nothing listens")
	}
	want := "no answer from etcd at [http://" + addr + "] within 300ms"
	if !strings.Contains(err.Error(), want) || !errors.Is(err, context.DeadlineExceeded) || took > 5*time.Second {
		t.Fatalf("after %v: %v; want an error containing %q that wraps context.DeadlineExceeded", took, err, want)
	}
	t.Logf("gave up after %v: %v", took, err)
}
