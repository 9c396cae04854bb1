package guard_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
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
func clientTLS(t *testing.T, ca *testenv.CA, cert *testenv.CertFiles) *tls.Config {
	t.Helper()
	c := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	if ca != nil {
		c.RootCAs.AddCert(ca.Cert)
	}
	if cert != nil {
		pair, err := tls.LoadX509KeyPair(cert.Cert, cert.Key)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c
}
