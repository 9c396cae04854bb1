package bench

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/sdk"
)

// benchRoots are the CAs the bench's own HTTP calls (readiness, metrics)
// trust besides the system's: the secure targets add theirs.
var benchRoots = func() *x509.CertPool {
	p, err := x509.SystemCertPool()
	if err != nil {
		p = x509.NewCertPool()
	}
	return p
}()

// benchHTTP makes the bench's readiness and metrics requests.
var benchHTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: benchRoots}}}

// secureFiles are a secure target's CA, node certificate, cluster secret
// and bootstrap admin token.
type secureFiles struct {
	ca                *testenv.CA
	cert, key, secret string
	secretValue       string // the cluster secret itself (secret is its file)
	token             string
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func newSecureFiles(dir string) (secureFiles, error) {
	var s secureFiles
	var err error
	if s.ca, err = testenv.CreateCA(dir, "bench-ca"); err != nil {
		return s, err
	}
	s.cert, s.key = filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	if _, err = s.ca.IssueTo(s.cert, s.key, "node", time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour)); err != nil {
		return s, err
	}
	secret, err := randomHex(32)
	if err != nil {
		return s, err
	}
	s.secret, s.secretValue = filepath.Join(dir, "cluster-secret"), secret
	if err := os.WriteFile(s.secret, []byte(secret), 0o600); err != nil {
		return s, err
	}
	if s.token, err = randomHex(32); err != nil {
		return s, err
	}
	benchRoots.AddCert(s.ca.Cert)
	return s, nil
}

func (s secureFiles) serveArgs() []string {
	return []string{"--auth", "token", "--tls-cert-file", s.cert, "--tls-key-file", s.key,
		"--tls-ca-file", s.ca.File, "--cluster-secret-file", s.secret}
}

func (s secureFiles) clientOptions() []sdk.Option {
	roots := x509.NewCertPool()
	roots.AddCert(s.ca.Cert)
	return []sdk.Option{sdk.WithTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}), sdk.WithToken(s.token)}
}
