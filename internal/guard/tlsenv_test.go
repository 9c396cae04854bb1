package guard_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

func whoAmI(n *node.Node, opts ...sdk.Option) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := admin.New(n.Addr(), opts...)
	defer a.Close()
	return a.WhoAmI(ctx)
}

func readFile(t *testing.T, f string) string {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// replaceFile writes a file the way a certificate manager does: a new file
// renamed over the old one.
func replaceFile(t *testing.T, f, content string) {
	t.Helper()
	tmp := f + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
}

// TestMutualTLSClientCAReload: tls_client_ca_file is read again when it
// changes: a client certificate of a CA added to the file is accepted, one
// of a CA removed from it refused, without a restart.
func TestMutualTLSClientCAReload(t *testing.T) {
	oldCA, newCA := testenv.NewCA(t, "old"), testenv.NewCA(t, "new")
	caFile := filepath.Join(t.TempDir(), "clients.pem")
	replaceFile(t, caFile, readFile(t, oldCA.File))
	n := tlsNode(t, oldCA.Valid(t, "node"), caFile, "mtls")
	alice, bob := oldCA.Valid(t, "alice"), newCA.Valid(t, "bob")
	asAlice, asBob := sdk.WithTLS(clientTLS(t, oldCA, &alice)), sdk.WithTLS(clientTLS(t, oldCA, &bob))
	if who, err := whoAmI(n, asAlice); err != nil || who != "alice" {
		t.Fatalf("alice (old CA) before the change: %q, %v", who, err)
	}
	if who, err := whoAmI(n, asBob); err == nil {
		t.Fatalf("bob (new CA) accepted as %q before the CA file names his CA", who)
	}
	// The new CA joins the file.
	replaceFile(t, caFile, readFile(t, oldCA.File)+readFile(t, newCA.File))
	var who string
	var err error
	if !testenv.Eventually(10*time.Second, func() bool {
		who, err = whoAmI(n, asBob)
		return err == nil && who == "bob"
	}) {
		t.Fatalf("bob (new CA) after the CA file changed: %q, %v", who, err)
	}
	// The old CA leaves it.
	replaceFile(t, caFile, readFile(t, newCA.File))
	if !testenv.Eventually(10*time.Second, func() bool {
		_, err = whoAmI(n, asAlice)
		return err != nil
	}) {
		t.Fatal("alice (old CA) still accepted after her CA left the file")
	}
	if who, err := whoAmI(n, asBob); err != nil || who != "bob" {
		t.Fatalf("bob after the old CA left: %q, %v", who, err)
	}
}

// TestSecretsFromEnvironment: the certificate, key, client CA and cluster
// secret given as PEM text / values (VARVE_TLS_CERT_PEM, ... as ECS injects
// secrets) instead of files serve TLS and mutual TLS; a setting given both
// ways, or a short cluster secret, is refused with a precise error.
func TestSecretsFromEnvironment(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	srv := ca.Valid(t, "node")
	env := node.SecretEnv{
		TLSCertPEM: readFile(t, srv.Cert), TLSKeyPEM: readFile(t, srv.Key),
		TLSClientCAPEM: readFile(t, ca.File), TLSCAPEM: readFile(t, ca.File),
		ClusterSecret: "a-cluster-secret-of-some-length",
	}
	n := startNode(t, nil, nil, nil, func(c *node.Config) {
		c.Security.Auth = "mtls"
		c.Security.Env = env
	})
	if !strings.HasPrefix(n.Addr(), "https://") {
		t.Fatalf("Addr %s: want https://", n.Addr())
	}
	alice := ca.Valid(t, "alice")
	if who, err := whoAmI(n, sdk.WithTLS(clientTLS(t, ca, &alice))); err != nil || who != "alice" {
		t.Fatalf("WhoAmI with alice's certificate = %q, %v", who, err)
	}
	if _, err := whoAmI(n, sdk.WithTLS(clientTLS(t, ca, nil))); err == nil {
		t.Fatal("a client without a certificate was accepted")
	}

	endpoints := testenv.StartEtcd(t)
	for _, tc := range []struct {
		name   string
		mutate func(*node.Config)
		want   string
	}{
		{"certificate file and variable", func(c *node.Config) { c.Security.TLSCertFile = srv.Cert }, "tls_cert_file and the variable VARVE_TLS_CERT_PEM are both set"},
		{"cluster secret file and variable", func(c *node.Config) {
			c.Security.ClusterSecretFile = secretFile(t, "a-cluster-secret-of-some-length")
		}, "cluster_secret_file and the variable VARVE_CLUSTER_SECRET are both set"},
		{"certificate without key", func(c *node.Config) { c.Security.Env.TLSKeyPEM = "" }, "tls_cert_file and tls_key_file are set together"},
		{"short cluster secret", func(c *node.Config) { c.Security.Env.ClusterSecret = "short" }, "VARVE_CLUSTER_SECRET: shorter than 16 characters"},
		{"key that is no key", func(c *node.Config) { c.Security.Env.TLSKeyPEM = env.TLSCertPEM }, "VARVE_TLS_KEY_PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.Listen, cfg.EtcdEndpoints, cfg.Store = "127.0.0.1:0", endpoints, "s3://unused"
			cfg.Security.Auth, cfg.Security.Env = "mtls", env
			tc.mutate(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n, err := node.New(ctx, cfg, node.Options{Store: store(t)})
			if err == nil {
				n.Shutdown(ctx)
				t.Fatal("node started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to say %q", err, tc.want)
			}
		})
	}
}
