package failover

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestMovesOnWhenANodeDoesNotAnswer: requests built for the first address
// go to the current one; a connection refused moves to the next, which
// then serves the following requests.
func TestMovesOnWhenANodeDoesNotAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	addrs := Addresses(" " + dead + "/ ," + srv.URL[len("http://"):])
	if len(addrs) != 2 || addrs[0] != dead || addrs[1] != srv.URL {
		t.Fatalf("Addresses: %q", addrs)
	}
	c := New(http.DefaultClient, addrs)
	get := func() (string, error) {
		req, _ := http.NewRequest("GET", addrs[0]+"/varve.v1.X/Y", nil)
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	if _, err := get(); err == nil {
		t.Fatal("the dead address answered")
	}
	for range 2 {
		got, err := get()
		if err != nil || got != "/varve.v1.X/Y" {
			t.Fatalf("after failover: %q, %v", got, err)
		}
	}
}
