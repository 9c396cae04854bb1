package provider_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// testTLS writes a CA and a server certificate for 127.0.0.1 into dir.
func testTLS(t *testing.T, dir string) (caFile, certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	write := func(file, typ string, der []byte) {
		if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tf-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	write(caFile, "CERTIFICATE", caDER)
	write(certFile, "CERTIFICATE", der)
	write(keyFile, "PRIVATE KEY", kder)
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return caFile, certFile, keyFile, roots
}

// TestAPIKeyAndACL: against a varve dev with auth token and TLS, the
// provider (configured with the bootstrap key and the CA) creates a key
// and ACLs; the key works with exactly those permissions; destroy revokes
// the key and removes the ACLs.
func TestAPIKeyAndACL(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key, roots := testTLS(t, dir)
	const bootstrap = "terraform-bootstrap-admin-token"
	write := func(name, v string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	dev, err := startDevWith(varveBin, filepath.Join(workDir, "secure-data"), hc, "https",
		"--auth", "token", "--tls-cert-file", cert, "--tls-key-file", key,
		"--bootstrap-token-file", write("bootstrap", bootstrap), "--cluster-secret-file", write("secret", "terraform-cluster-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer dev.stop()
	tlsOpt := sdk.WithTLS(&tls.Config{RootCAs: roots})
	root := admin.New(dev.addr, tlsOpt, sdk.WithToken(bootstrap))
	defer root.Close()

	config := fmt.Sprintf(`
provider "varve" {
  endpoint = %q
  ca_file  = %q
  token    = %q
}

resource "varve_topic" "orders" {
  name       = "orders"
  partitions = 1
}

resource "varve_api_key" "billing" {
  principal = "billing"
}

resource "varve_acl" "produce" {
  principal = varve_api_key.billing.principal
  resource  = "topic:${varve_topic.orders.name}"
  operation = "produce"
}

resource "varve_acl" "no_delete" {
  principal = "billing"
  resource  = "topic:*"
  operation = "delete"
  effect    = "deny"
}
`, dev.addr, ca, bootstrap)

	// useKey produces with the key Terraform made and checks it may do no
	// more than its ACLs say.
	useKey := func(s *terraform.State) error {
		tok := s.RootModule().Resources["varve_api_key.billing"].Primary.Attributes["token"]
		c := sdk.New(dev.addr, tlsOpt, sdk.WithToken(tok))
		defer c.Close()
		ctx := context.Background()
		var err error
		for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(20 * time.Millisecond) {
			if _, err = c.Produce(ctx, "orders", []sdk.Record{{Topic: "orders", Value: []byte("x")}}); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("produce with the key Terraform created: %w", err)
		}
		if err := admin.NewFromClient(c).DeleteTopic(ctx, "orders"); connect.CodeOf(err) != connect.CodePermissionDenied {
			return fmt.Errorf("delete with the billing key: %v, want permission_denied", err)
		}
		return nil
	}
	gone := func(*terraform.State) error {
		ctx := context.Background()
		keys, err := root.ListAPIKeys(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k.Principal == "billing" {
				return fmt.Errorf("key %s of billing still exists after destroy", k.ID)
			}
		}
		acls, err := root.ListACLs(ctx, "billing")
		if err != nil || len(acls) != 0 {
			return fmt.Errorf("ACLs of billing after destroy: %v, %v", acls, err)
		}
		return nil
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		CheckDestroy:             gone,
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrSet("varve_api_key.billing", "id"),
					resource.TestCheckResourceAttr("varve_acl.produce", "effect", "allow"),
					resource.TestCheckResourceAttr("varve_acl.no_delete", "effect", "deny"),
					useKey,
				),
			},
			{Config: config, PlanOnly: true}, // nothing to change
			{ // the ACL can be imported by id
				ResourceName: "varve_acl.produce", ImportState: true, ImportStateVerify: true,
				Config: config,
			},
		},
	})
}
