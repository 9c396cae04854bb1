package sdk_test

import (
	"net"
	"strconv"
	"testing"
)

func listenTCP(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

func splitPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}
