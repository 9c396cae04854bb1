package guard_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

func tlsNode(t *testing.T, server testenv.CertFiles, clientCA string, auth string) *node.Node {
	return startNode(t, nil, nil, nil, func(c *node.Config) {
		c.Security.TLSCertFile, c.Security.TLSKeyFile = server.Cert, server.Key
		c.Security.TLSClientCAFile = clientCA
		c.Security.Auth = auth
		if auth != "none" {
			c.Security.ClusterSecretFile = secretFile(t, "a-cluster-secret-of-some-length")
		}
	})
}

// ping lists topics through a client with tc.
func ping(n *node.Node, tc *tls.Config, opts ...sdk.Option) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := admin.New(n.Addr(), append(opts, sdk.WithTLS(tc))...)
	defer a.Close()
	_, err := a.ListTopics(ctx)
	return err
}

func TestTLSServer(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	n := tlsNode(t, ca.Valid(t, "node"), "", "none")
	if !strings.HasPrefix(n.Addr(), "https://") {
		t.Fatalf("Addr %s: want https://", n.Addr())
	}
	if err := ping(n, clientTLS(t, ca, nil)); err != nil {
		t.Fatalf("trusted CA: %v", err)
	}
	// gRPC and gRPC-Web... the SDK's gRPC protocol over TLS too.
	if err := ping(n, clientTLS(t, ca, nil), sdk.WithGRPC()); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	other := testenv.NewCA(t, "other")
	err := ping(n, clientTLS(t, other, nil))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("wrong CA: got %v, want a certificate error", err)
	}
	// Plain HTTP to the TLS port is refused.
	plain := admin.New("http://" + strings.TrimPrefix(n.Addr(), "https://"))
	defer plain.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := plain.ListTopics(ctx); err == nil {
		t.Fatal("cleartext call to the TLS listener succeeded")
	}
	// Flight is served over TLS too.
	fc, err := flight.NewClientWithMiddleware(n.FlightAddr(), nil, nil, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS(t, ca, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	st, err := fc.ListFlights(ctx, &flight.Criteria{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil && !isEOF(err) {
		t.Fatalf("flight over TLS: %v", err)
	}
}

func isEOF(err error) bool {
	return err != nil && (errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "EOF"))
}

func TestTLSExpiredServerCertificateRefused(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	expired := ca.Issue(t, "node", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour), nil)
	n := tlsNode(t, expired, "", "none")
	err := ping(n, clientTLS(t, ca, nil))
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired server certificate: got %v, want an expiry error", err)
	}
}

func TestMutualTLS(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	n := tlsNode(t, ca.Valid(t, "node"), ca.File, "mtls")
	alice := ca.Valid(t, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a := admin.New(n.Addr(), sdk.WithTLS(clientTLS(t, ca, &alice)))
	defer a.Close()
	who, err := a.WhoAmI(ctx)
	if err != nil || who != "alice" {
		t.Fatalf("WhoAmI with alice's certificate = %q, %v", who, err)
	}
	cases := []struct {
		name string
		tc   *tls.Config
	}{
		{"no client certificate", clientTLS(t, ca, nil)},
		{"client certificate of another CA", func() *tls.Config {
			o := testenv.NewCA(t, "other")
			c := o.Valid(t, "alice")
			return clientTLS(t, ca, &c)
		}()},
		{"expired client certificate", func() *tls.Config {
			c := ca.Issue(t, "alice", time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), nil)
			return clientTLS(t, ca, &c)
		}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := ping(n, tc.tc); err == nil {
				t.Fatal("call succeeded")
			} else {
				t.Logf("refused: %v", err)
			}
		})
	}
}

// servedSerial is the serial number of the certificate a new TLS
// connection to addr sees.
func servedSerial(t *testing.T, addr string, ca *testenv.CA) string {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, clientTLS(t, ca, nil))
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestTLSRotation(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	first := ca.Valid(t, "node")
	n := tlsNode(t, first, "", "none")
	api := strings.TrimPrefix(n.Addr(), "https://")
	if got := servedSerial(t, api, ca); got != first.X509.SerialNumber.String() {
		t.Fatalf("served %s, want the first certificate %s", got, first.X509.SerialNumber)
	}
	// A certificate manager replaces the files in place.
	second := ca.Issue(t, "node", time.Now().Add(-time.Minute), time.Now().Add(12*time.Hour), &first)
	want := second.X509.SerialNumber.String()
	var got, gotFlight string
	if !testenv.Eventually(10*time.Second, func() bool {
		got, gotFlight = servedSerial(t, api, ca), servedSerial(t, n.FlightAddr(), ca)
		return got == want && gotFlight == want
	}) {
		t.Fatalf("after rotation the API serves %s and Flight %s, want %s", got, gotFlight, want)
	}
	if err := ping(n, clientTLS(t, ca, nil)); err != nil {
		t.Fatalf("call after rotation: %v", err)
	}
}

// TestMutualTLSPrincipalFromSAN: with mtls_principal dns the principal is
// the certificate's first DNS name, not its common name.
func TestMutualTLSPrincipalFromSAN(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	n := startNode(t, nil, nil, nil, func(c *node.Config) {
		srv := ca.Valid(t, "node")
		c.Security.TLSCertFile, c.Security.TLSKeyFile, c.Security.TLSClientCAFile = srv.Cert, srv.Key, ca.File
		c.Security.Auth, c.Security.MTLSPrincipal = "mtls", "dns"
		c.Security.ClusterSecretFile = secretFile(t, "a-cluster-secret-of-some-length")
	})
	cert := ca.Valid(t, "some-cn") // DNS name: localhost
	a := admin.New(n.Addr(), sdk.WithTLS(clientTLS(t, ca, &cert)))
	defer a.Close()
	who, err := a.WhoAmI(context.Background())
	if err != nil || who != "localhost" {
		t.Fatalf("WhoAmI = %q, %v; want localhost", who, err)
	}
}
