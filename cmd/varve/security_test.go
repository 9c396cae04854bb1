package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
)

const cliBootstrap = "cli-bootstrap-admin-token"

// secureNode runs a node with auth token, TLS from a test CA and a
// bootstrap admin key; it returns its address and the CA file.
func secureNode(t *testing.T) (addr, caFile string) {
	t.Helper()
	ca := testenv.NewCA(t, "ca")
	srv := ca.Valid(t, "node")
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("a-cluster-secret-of-some-length"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = testenv.StartEtcd(t)
	cfg.Store = "fs:" + filepath.Join(dir, "objects")
	cfg.Security.Auth = "token"
	cfg.Security.TLSCertFile, cfg.Security.TLSKeyFile = srv.Cert, srv.Key
	cfg.Security.BootstrapToken = cliBootstrap
	cfg.Security.ClusterSecretFile = secret
	n, err := node.New(context.Background(), cfg, node.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n.Addr(), ca.File
}

// TestAccessCommands drives apikey and acl like a user, over TLS.
func TestAccessCommands(t *testing.T) {
	addr, ca := secureNode(t)
	as := func(token string, args ...string) (string, string, error) {
		return runCLI(t, append(args, "--addr", addr, "--ca-file", ca, "--token", token)...)
	}
	out, _, err := as(cliBootstrap, "apikey", "create", "--principal", "alice")
	if err != nil {
		t.Fatal(err)
	}
	alice := strings.TrimSpace(out)
	if !strings.HasPrefix(alice, "vk_") {
		t.Fatalf("apikey create printed %q, want a vk_ token", out)
	}
	if _, _, err := as(cliBootstrap, "topic", "create", "orders", "--partitions", "1"); err != nil {
		t.Fatal(err)
	}
	// alice may do nothing yet.
	if _, _, err := as(alice, "topic", "describe", "orders"); err == nil || !strings.Contains(err.Error(), "permission_denied") || !strings.Contains(err.Error(), "describe on topic:orders") {
		t.Fatalf("describe without an ACL: %v, want permission_denied naming describe on topic:orders", err)
	}
	out, _, err = as(cliBootstrap, "acl", "add", "--principal", "alice", "--resource", "topic:ord*", "--operation", "describe")
	if err != nil || !strings.Contains(out, "allow alice describe on topic:ord*") {
		t.Fatalf("acl add: %q, %v", out, err)
	}
	if !testenv.Eventually(5*time.Second, func() bool { _, _, err := as(alice, "topic", "describe", "orders"); return err == nil }) {
		t.Fatal("alice cannot describe orders after the ACL")
	}
	out, _, err = as(cliBootstrap, "acl", "list", "--principal", "alice")
	if err != nil || !strings.Contains(out, "topic:ord*") {
		t.Fatalf("acl list: %q, %v", out, err)
	}
	id := strings.Fields(strings.Split(out, "\n")[1])[0]
	out, _, err = as(cliBootstrap, "apikey", "list")
	if err != nil || !strings.Contains(out, "alice") || strings.Contains(out, alice) {
		t.Fatalf("apikey list: %q, %v (want alice's key listed, never its secret)", out, err)
	}
	if _, _, err := as(cliBootstrap, "acl", "remove", id); err != nil {
		t.Fatal(err)
	}
	keyID := strings.Fields(strings.Split(strings.TrimSpace(out), "\n")[1])[0]
	if _, _, err := as(cliBootstrap, "apikey", "revoke", keyID); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(5*time.Second, func() bool {
		_, _, err := as(alice, "topic", "list")
		return err != nil && strings.Contains(err.Error(), "unauthenticated")
	}) {
		t.Fatal("the revoked key still works")
	}
	// Without the CA file the server's certificate is not trusted; without
	// a token the call is unauthenticated, and the error says what to do.
	if _, _, err := runCLI(t, "topic", "list", "--addr", addr, "--token", cliBootstrap); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without --ca-file: %v, want a certificate error", err)
	}
	t.Setenv("VARVE_CA_FILE", ca)
	if _, _, err := runCLI(t, "topic", "list", "--addr", addr); err == nil || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("without a token: %v, want a hint at --token", err)
	}
	t.Setenv("VARVE_TOKEN", cliBootstrap)
	if out, _, err := runCLI(t, "topic", "list", "--addr", addr); err != nil || !strings.Contains(out, "orders") {
		t.Fatalf("with VARVE_CA_FILE and VARVE_TOKEN: %q, %v", out, err)
	}
	if _, _, err := runCLI(t, "topic", "list", "--addr", addr, "--ca-file", filepath.Join(t.TempDir(), "missing.pem")); err == nil || !strings.Contains(err.Error(), "ca file") {
		t.Fatalf("missing CA file: %v", err)
	}
}

// TestServeRefusesExposedWithoutAuth: serve on a non-loopback address with
// auth none and no TLS needs --insecure.
func TestServeRefusesExposedWithoutAuth(t *testing.T) {
	_, _, err := runCLI(t, "serve", "--listen", "0.0.0.0:0", "--etcd-endpoints", "http://127.0.0.1:1", "--store", "fs:"+t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "--insecure") {
		t.Fatalf("serve on 0.0.0.0 with auth none: %v, want a refusal naming --insecure", err)
	}
	for _, tc := range []struct {
		cfg  node.Config
		warn bool
	}{
		{node.Config{Listen: "127.0.0.1:7700"}, false},
		{node.Config{Listen: "localhost:7700"}, false},
		{node.Config{Listen: "0.0.0.0:7700", Security: node.SecurityConfig{Insecure: true}}, true},
		{node.Config{Listen: "0.0.0.0:7700", Security: node.SecurityConfig{Auth: "token"}}, false},
		{node.Config{Listen: ":7700", Security: node.SecurityConfig{TLSCertFile: "c.pem"}}, false},
	} {
		warn, err := tc.cfg.CheckExposure()
		if err != nil || (warn != "") != tc.warn {
			t.Errorf("%+v: warning %q, error %v", tc.cfg, warn, err)
		}
	}
	if _, err := (node.Config{Listen: ":7700"}).CheckExposure(); err == nil {
		t.Error(":7700 (every interface) with auth none: no error")
	}
}

// TestServeReadsSecretsFromEnvironment: the VARVE_*_PEM variables and
// VARVE_CLUSTER_SECRET are taken by varve serve (not refused as unknown
// settings) and checked with the settings they stand for.
func TestServeReadsSecretsFromEnvironment(t *testing.T) {
	t.Setenv("VARVE_TLS_CERT_PEM", "-----BEGIN CERTIFICATE-----")
	_, _, err := runCLI(t, "serve", "--listen", "0.0.0.0:0", "--etcd-endpoints", "http://127.0.0.1:1", "--store", "fs:"+t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "tls_cert_file and tls_key_file are set together") {
		t.Fatalf("VARVE_TLS_CERT_PEM without a key: %v", err)
	}
	t.Setenv("VARVE_TLS_CERT_PEM", "")
	t.Setenv("VARVE_CLUSTER_SECRET", "a-cluster-secret-of-some-length")
	_, _, err = runCLI(t, "serve", "--listen", "0.0.0.0:0", "--etcd-endpoints", "http://127.0.0.1:1", "--store", "fs:"+t.TempDir(),
		"--cluster-secret-file", filepath.Join(t.TempDir(), "secret"))
	if err == nil || !strings.Contains(err.Error(), "cluster_secret_file and the variable VARVE_CLUSTER_SECRET are both set") {
		t.Fatalf("VARVE_CLUSTER_SECRET and cluster_secret_file: %v", err)
	}
}
