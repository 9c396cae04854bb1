package e2e

import (
	"net/url"
	"strconv"
	"syscall"
	"testing"
)

// holdPort binds (without listening) a socket to rawURL's loopback port,
// so that no other process — another package's test picking a free port —
// takes it while the server that had it is down: connections to it are
// refused as to a dead server. release frees it before the server starts
// again on it.
func holdPort(t *testing.T, rawURL string) (release func()) {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("port of %s: %v", rawURL, err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	// SO_REUSEADDR: the killed server's connections linger in TIME_WAIT on
	// the port (a bind without it fails with EADDRINUSE); a socket bound
	// or listening there still makes this bind fail.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatalf("hold port %d while its server is down: %v (another process took it)", port, err)
	}
	// Bound: without the flag no other socket may share the port.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	released := false
	release = func() {
		if !released {
			released = true
			syscall.Close(fd)
		}
	}
	t.Cleanup(release)
	return release
}
