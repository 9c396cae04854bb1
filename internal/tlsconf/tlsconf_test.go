package tlsconf_test

import (
	"crypto/x509"
	"os"
	"strings"
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

// TestPoolReloader: a changed CA file is picked up; a broken one keeps the
// previous pool; PEM text is served as given.
func TestPoolReloader(t *testing.T) {
	a, b := testenv.NewCA(t, "a"), testenv.NewCA(t, "b")
	bPEM, err := os.ReadFile(b.File)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tlsconf.NewPoolReloader(tlsconf.FileSource(a.File))
	if err != nil {
		t.Fatal(err)
	}
	p.CheckEvery = 0
	verifies := func(ca *testenv.CA) bool {
		_, err := ca.Cert.Verify(x509.VerifyOptions{Roots: p.Pool()})
		return err == nil
	}
	if !verifies(a) || verifies(b) {
		t.Fatal("first pool: want a, not b")
	}
	if err := os.WriteFile(a.File, []byte("-----BEGIN CERTIFICATE-----\nhalf"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !verifies(a) || p.LastError() == nil {
		t.Fatalf("after a broken write: want the previous pool and an error (%v)", p.LastError())
	}
	if err := os.WriteFile(a.File, bPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if verifies(a) || !verifies(b) || p.LastError() != nil {
		t.Fatalf("after the change: want b only (last error %v)", p.LastError())
	}
	if _, err := tlsconf.NewPoolReloader(tlsconf.Source{PEM: []byte("nothing"), Name: "VARVE_X"}); err == nil || !strings.Contains(err.Error(), "VARVE_X") {
		t.Fatalf("PEM text without a certificate: %v", err)
	}
	if q, err := tlsconf.NewPoolReloader(tlsconf.Source{PEM: bPEM}); err != nil || q.Pool() == nil {
		t.Fatalf("PEM text: %v", err)
	}
}
