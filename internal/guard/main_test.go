package guard_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/tier"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM of the CA certificate
}

var serial struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(time.Now().UnixNano() + serial.n)
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(t.TempDir(), name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	var b bytes.Buffer
	if err := pem.Encode(&b, &pem.Block{Type: typ, Bytes: der}); err != nil {
		t.Fatal(err)
	}
	// Write then rename, as a certificate manager does, so a reader never
	// sees half a file.
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// certFiles is an issued certificate and key on disk.
type certFiles struct {
	cert, key string
	x509      *x509.Certificate
}

// issue signs a certificate for cn, valid for 127.0.0.1 and localhost,
// usable by servers and clients, valid from notBefore to notAfter. It
// writes to files (cert, key), creating new ones when files is nil.
func (ca *testCA) issue(t *testing.T, cn string, notBefore, notAfter time.Time, files *certFiles) certFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := certFiles{}
	if files != nil {
		out = *files
	} else {
		dir := t.TempDir()
		out.cert, out.key = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	}
	out.x509, _ = x509.ParseCertificate(der)
	writePEM(t, out.key, "PRIVATE KEY", kder)
	writePEM(t, out.cert, "CERTIFICATE", der)
	return out
}

func (ca *testCA) valid(t *testing.T, cn string) certFiles {
	return ca.issue(t, cn, time.Now().Add(-time.Hour), time.Now().Add(12*time.Hour), nil)
}

// store is a real MinIO bucket.
func store(t *testing.T) tier.Store {
	t.Helper()
	m := testenv.MinIO(t)
	st, err := tier.NewS3(context.Background(), m.S3Config(m.NewBucket(t)))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// logBuffer collects a node's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startNode runs a node with every role (Flight too) on etcd endpoints
// (new ones when nil) and st (a new bucket when nil).
func startNode(t *testing.T, endpoints []string, st tier.Store, logs *logBuffer, mutate func(*node.Config)) *node.Node {
	t.Helper()
	if endpoints == nil {
		endpoints = testenv.StartEtcd(t)
	}
	if st == nil {
		st = store(t)
	}
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.FlightListen = "127.0.0.1:0"
	cfg.EtcdEndpoints = endpoints
	cfg.Store = "s3://unused" // the store is given
	cfg.Linger = 20 * time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	opts := node.Options{Store: st}
	if logs != nil {
		opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	n, err := node.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n
}

// secretFile writes a cluster secret or token to a file.
func secretFile(t *testing.T, v string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// clientTLS is a client configuration trusting ca, with an optional
// client certificate.
func clientTLS(t *testing.T, ca *testCA, cert *certFiles) *tls.Config {
	t.Helper()
	c := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	if ca != nil {
		c.RootCAs.AddCert(ca.cert)
	}
	if cert != nil {
		pair, err := tls.LoadX509KeyPair(cert.cert, cert.key)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c
}
