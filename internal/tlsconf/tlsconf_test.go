package tlsconf_test

import (
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/internal/tlsconf"
)

func serial(t *testing.T, r *tlsconf.Reloader) string {
	t.Helper()
	c, err := r.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.SerialNumber.String()
}

// TestReloader: a changed pair is picked up; a broken one (half written)
// keeps the previous pair in use until a good one replaces it.
func TestReloader(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	first := ca.Valid(t, "node")
	r, err := tlsconf.NewReloader(first.Cert, first.Key)
	if err != nil {
		t.Fatal(err)
	}
	r.CheckEvery = 0
	if got := serial(t, r); got != first.X509.SerialNumber.String() {
		t.Fatalf("serving %s, want the first certificate", got)
	}
	if err := os.WriteFile(first.Cert, []byte("-----BEGIN CERTIFICATE-----\nhalf"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := serial(t, r); got != first.X509.SerialNumber.String() || r.LastError() == nil {
		t.Fatalf("after a broken write: serving %s (want the first), last error %v", got, r.LastError())
	}
	second := ca.Issue(t, "node", time.Now().Add(-time.Minute), time.Now().Add(time.Hour), &first)
	if got := serial(t, r); got != second.X509.SerialNumber.String() || r.LastError() != nil {
		t.Fatalf("after rotation: serving %s, want %s (last error %v)", got, second.X509.SerialNumber, r.LastError())
	}
	if _, err := tlsconf.NewReloader(first.Cert, first.Cert); err == nil {
		t.Fatal("a certificate as its own key loaded")
	}
}

func TestServerAndClientSettings(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	c := ca.Valid(t, "node")
	if _, err := tlsconf.NewServer(c.Cert, "", "", false); err == nil {
		t.Error("certificate without key accepted")
	}
	if _, err := tlsconf.NewServer(c.Cert, c.Key, "", true); err == nil {
		t.Error("mutual TLS without a client CA accepted")
	}
	if _, err := tlsconf.NewServer(c.Cert, c.Key, c.Key, false); err == nil {
		t.Error("a key as client CA file accepted")
	}
	if _, err := tlsconf.Client("", c.Cert, ""); err == nil {
		t.Error("client certificate without key accepted")
	}
	if _, err := tlsconf.Client(ca.File, c.Cert, c.Key); err != nil {
		t.Error(err)
	}
}
