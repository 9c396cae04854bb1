package guard_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// secretTransport sends a cluster secret and/or a token.
type secretTransport struct {
	secret, token string
}

func (s secretTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if s.secret != "" {
		r.Header.Set(guard.SecretHeader, s.secret)
	}
	if s.token != "" {
		r.Header.Set("Authorization", "Bearer "+s.token)
	}
	return sdk.NewHTTPClient().Transport.RoundTrip(r)
}

// twoFetchNodes runs two ingest+fetch nodes on one etcd and bucket with
// the given cluster secrets; a topic of 8 partitions holds records written
// through the first node.
func twoFetchNodes(t *testing.T, secret1, secret2 string, logs2 *logBuffer) (*node.Node, *node.Node, []metadata.IndexEntry) {
	return twoFetchNodesWith(t, secret1, secret2, logs2, nil)
}

func twoFetchNodesWith(t *testing.T, secret1, secret2 string, logs2 *logBuffer, mutate func(*node.Config)) (*node.Node, *node.Node, []metadata.IndexEntry) {
	t.Helper()
	endpoints := testenv.StartEtcd(t)
	st := store(t)
	mk := func(id, secret string, logs *logBuffer) *node.Node {
		return startNode(t, endpoints, st, logs, func(c *node.Config) {
			c.NodeID = id
			c.Security.Auth = "token"
			c.Security.BootstrapToken = bootstrap
			c.Security.ClusterSecretFile = secretFile(t, secret)
			if mutate != nil {
				mutate(c)
			}
		})
	}
	n1 := mk("n1", secret1, nil)
	n2 := mk("n2", secret2, logs2)
	for _, n := range []*node.Node{n1, n2} {
		if !testenv.Eventually(10*time.Second, func() bool { return len(n.BlockOwners().Peers()) == 2 }) {
			t.Fatalf("node %s does not see both fetch nodes", n.Addr())
		}
	}
	ctx := context.Background()
	a := admin.New(n1.Addr(), append(clientOpts, sdk.WithToken(bootstrap))...)
	defer a.Close()
	if _, err := a.CreateTopic(ctx, "t", 8, nil); err != nil {
		t.Fatal(err)
	}
	var recs []sdk.Record
	for p := range int32(8) {
		recs = append(recs, sdk.Record{Topic: "t", Partition: p, ExplicitPartition: true, Value: []byte(fmt.Sprint("v", p))})
	}
	if _, err := a.Client().Produce(ctx, "t", recs); err != nil {
		t.Fatal(err)
	}
	var entries []metadata.IndexEntry
	for p := range int32(8) {
		e, _, found, _, err := n1.Meta().LookupIndex(ctx, "t", p, 0)
		if err != nil || !found {
			t.Fatalf("index of t/%d: %v %v", p, found, err)
		}
		entries = append(entries, e)
	}
	return n1, n2, entries
}

// fetchAll fetches every partition of t through n.
func fetchAll(t *testing.T, n *node.Node) {
	t.Helper()
	c := sdk.New(n.Addr(), append(clientOpts, sdk.WithToken(bootstrap))...)
	defer c.Close()
	for p := range int32(8) {
		r, err := c.Fetch(context.Background(), "t", p, 0, 1<<20, 0)
		if err != nil || len(r.Records) != 1 {
			t.Fatalf("fetch t/%d through %s: %+v, %v", p, n.Addr(), r, err)
		}
	}
}

// clientOpts are the SDK options of the tests' clients (TLS settings).
var clientOpts []sdk.Option

const peerRefused = "block owner did not serve the block"

// TestBlockServiceNodesOnly: the internal BlockService answers nodes with
// the cluster secret, and no client: not even the bootstrap admin.
func TestBlockServiceNodesOnly(t *testing.T) {
	logs2 := &logBuffer{}
	n1, n2, entries := twoFetchNodes(t, "the-shared-cluster-secret", "the-shared-cluster-secret", logs2)
	// Reads through the second node ask the first for the blocks it owns
	// (it wrote them all, so it holds them): none is refused.
	fetchAll(t, n2)
	if strings.Contains(logs2.String(), peerRefused) {
		t.Fatalf("a peer refused a block to a node with the cluster secret:\n%s", logs2)
	}
	e := entries[0]
	// Every RPC of the service: a block, a whole fresh object, offsets
	// by time (for a Kafka listener without the fetch role).
	get := func(tr secretTransport) []error {
		c := varvev1connect.NewBlockServiceClient(&http.Client{Transport: tr}, n1.Addr())
		_, err := c.GetBlock(context.Background(), connect.NewRequest(&varvev1.GetBlockRequest{Object: e.Object, Offset: e.Off, Length: e.Len}))
		_, oerr := c.GetObject(context.Background(), connect.NewRequest(&varvev1.GetObjectRequest{Object: e.Object, MaxBytes: 64 << 20}))
		_, lerr := c.ListOffsets(context.Background(), connect.NewRequest(&varvev1.BlockServiceListOffsetsRequest{Request: &varvev1.ListOffsetsRequest{
			Topic: "t", Spec: varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP, TimestampMs: 1}}))
		return []error{err, oerr, lerr}
	}
	admin := principal(t, admin.New(n1.Addr(), sdk.WithToken(bootstrap)), n1.Addr(), "root", "cluster admin")
	for _, tc := range []struct {
		name string
		tr   secretTransport
		want connect.Code
	}{
		{"no credentials", secretTransport{}, connect.CodeUnauthenticated},
		{"wrong secret", secretTransport{secret: "not-the-cluster-secret"}, connect.CodeUnauthenticated},
		{"bootstrap admin token", secretTransport{token: bootstrap}, connect.CodePermissionDenied},
		{"cluster admin key", secretTransport{token: admin}, connect.CodePermissionDenied},
		{"cluster secret", secretTransport{secret: "the-shared-cluster-secret"}, connect.Code(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, err := range get(tc.tr) {
				if tc.want == connect.Code(0) {
					if err != nil {
						t.Fatal(err)
					}
					continue
				}
				if connect.CodeOf(err) != tc.want {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
			}
		})
	}
	// The cluster secret opens nothing else.
	c := admin2(n1.Addr(), "the-shared-cluster-secret")
	if _, err := c.ListTopics(context.Background(), connect.NewRequest(&varvev1.ListTopicsRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("ListTopics with the cluster secret: %v, want permission_denied", err)
	}
}

func admin2(addr, secret string) varvev1connect.TopicServiceClient {
	return varvev1connect.NewTopicServiceClient(&http.Client{Transport: secretTransport{secret: secret}}, addr)
}

// TestBlockServiceWrongSecretIsRefused is the control of the test above:
// a node with another secret is refused its peer's blocks (and reads the
// bucket instead).
func TestBlockServiceWrongSecretIsRefused(t *testing.T) {
	logs2 := &logBuffer{}
	_, n2, _ := twoFetchNodes(t, "the-first-cluster-secret", "another-cluster-secret", logs2)
	fetchAll(t, n2)
	if !strings.Contains(logs2.String(), peerRefused) || !strings.Contains(logs2.String(), "unauthenticated") {
		t.Fatalf("a node with another secret was not refused:\n%s", logs2)
	}
}

// TestMalformedGetBlockLogsNoCorruption: bad GetBlock requests naming a
// real object answer INVALID_ARGUMENT and log no "corrupt block".
func TestMalformedGetBlockLogsNoCorruption(t *testing.T) {
	logs := &logBuffer{}
	endpoints := testenv.StartEtcd(t)
	n := startNode(t, endpoints, nil, logs, func(c *node.Config) {
		c.Security.Auth = "token"
		c.Security.BootstrapToken = bootstrap
		c.Security.ClusterSecretFile = secretFile(t, "the-shared-cluster-secret")
	})
	ctx := context.Background()
	a := admin.New(n.Addr(), sdk.WithToken(bootstrap))
	defer a.Close()
	if _, err := a.CreateTopic(ctx, "t", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().Produce(ctx, "t", []sdk.Record{{Topic: "t", Value: []byte(strings.Repeat("x", 1000))}}); err != nil {
		t.Fatal(err)
	}
	e, _, _, _, err := n.Meta().LookupIndex(ctx, "t", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := varvev1connect.NewBlockServiceClient(&http.Client{Transport: secretTransport{secret: "the-shared-cluster-secret"}}, n.Addr())
	for _, tc := range []struct {
		name      string
		off, size int64
	}{
		{"inside the block", e.Off + 3, e.Len - 3},
		{"too long", e.Off, e.Len + 10},
		{"too short", e.Off, e.Len - 10},
		{"the footer", e.Off + e.Len, 64},
	} {
		_, err := c.GetBlock(ctx, connect.NewRequest(&varvev1.GetBlockRequest{Object: e.Object, Offset: tc.off, Length: tc.size}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("%s: got %v, want invalid_argument", tc.name, err)
		}
	}
	if strings.Contains(logs.String(), "corrupt block") {
		t.Fatalf("malformed requests logged a corrupt block:\n%s", logs)
	}
}

// TestBlockServiceOverTLS: nodes serving TLS call each other's BlockService
// over TLS, trusting tls_ca_file, with the cluster secret.
func TestBlockServiceOverTLS(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	srv := ca.Valid(t, "node")
	clientOpts = []sdk.Option{sdk.WithTLS(clientTLS(t, ca, nil))}
	defer func() { clientOpts = nil }()
	logs2 := &logBuffer{}
	_, n2, _ := twoFetchNodesWith(t, "the-shared-cluster-secret", "the-shared-cluster-secret", logs2, func(c *node.Config) {
		c.Security.TLSCertFile, c.Security.TLSKeyFile, c.Security.TLSCAFile = srv.Cert, srv.Key, ca.File
	})
	if !strings.HasPrefix(n2.Addr(), "https://") {
		t.Fatalf("addr %s", n2.Addr())
	}
	fetchAll(t, n2)
	if strings.Contains(logs2.String(), peerRefused) {
		t.Fatalf("a TLS peer refused a block:\n%s", logs2)
	}
}

// TestBlockServiceOverTLSPeerServerName: nodes sharing one certificate that
// names a service, not their addresses (ECS tasks dialled by IP), verify
// each other against tls_peer_server_name; without it they refuse each
// other's certificate and read the bucket instead.
func TestBlockServiceOverTLSPeerServerName(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	srv := ca.ValidFor(t, "varve", "varve.internal")
	tc := clientTLS(t, ca, nil)
	tc.ServerName = "varve.internal"
	clientOpts = []sdk.Option{sdk.WithTLS(tc)}
	defer func() { clientOpts = nil }()
	for _, name := range []string{"", "varve.internal"} {
		logs2 := &logBuffer{}
		_, n2, _ := twoFetchNodesWith(t, "the-shared-cluster-secret", "the-shared-cluster-secret", logs2, func(c *node.Config) {
			c.Security.TLSCertFile, c.Security.TLSKeyFile, c.Security.TLSCAFile = srv.Cert, srv.Key, ca.File
			c.Security.TLSPeerServerName = name
		})
		fetchAll(t, n2)
		refused := strings.Contains(logs2.String(), peerRefused)
		if name == "" && !refused {
			t.Fatalf("without tls_peer_server_name a peer accepted a certificate not naming its address:\n%s", logs2)
		}
		if name != "" && refused {
			t.Fatalf("with tls_peer_server_name %s a TLS peer refused a block:\n%s", name, logs2)
		}
	}
}

// TestBlockServiceNodeCertificates: with node_principals and mutual TLS,
// nodes without a cluster secret authenticate to each other's BlockService
// by their certificates; a client certificate of another principal is
// refused the BlockService, and a node certificate opens nothing else.
func TestBlockServiceNodeCertificates(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	srv := ca.Valid(t, "varve-node")
	clientOpts = []sdk.Option{sdk.WithTLS(clientTLS(t, ca, nil))}
	defer func() { clientOpts = nil }()
	logs2 := &logBuffer{}
	n1, n2, entries := twoFetchNodesWith(t, "", "", logs2, func(c *node.Config) {
		c.Security.ClusterSecretFile = ""
		c.Security.TLSCertFile, c.Security.TLSKeyFile, c.Security.TLSCAFile = srv.Cert, srv.Key, ca.File
		c.Security.TLSClientCAFile = ca.File
		c.Security.NodePrincipals = []string{"varve-node"}
	})
	fetchAll(t, n2)
	if strings.Contains(logs2.String(), peerRefused) {
		t.Fatalf("a peer refused a block to a node presenting its node certificate:\n%s", logs2)
	}
	e := entries[0]
	alice := ca.Valid(t, "alice")
	for _, tc := range []struct {
		name string
		cert *testenv.CertFiles
		want connect.Code
	}{
		{"no certificate", nil, connect.CodeUnauthenticated},
		{"another principal's certificate", &alice, connect.CodeUnauthenticated},
		{"node certificate", &srv, connect.Code(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, ca, tc.cert), ForceAttemptHTTP2: true}}
			c := varvev1connect.NewBlockServiceClient(hc, n1.Addr())
			_, err := c.GetBlock(context.Background(), connect.NewRequest(&varvev1.GetBlockRequest{Object: e.Object, Offset: e.Off, Length: e.Len}))
			if connect.CodeOf(err) != tc.want && !(tc.want == connect.Code(0) && err == nil) {
				t.Fatalf("GetBlock: %v, want %v", err, tc.want)
			}
		})
	}
	// A node certificate opens nothing else.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS(t, ca, &srv), ForceAttemptHTTP2: true}}
	tc := varvev1connect.NewTopicServiceClient(hc, n1.Addr())
	if _, err := tc.ListTopics(context.Background(), connect.NewRequest(&varvev1.ListTopicsRequest{})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("ListTopics with a node certificate: %v, want permission_denied", err)
	}
	// Control: node_principals needs mutual TLS.
	cfg := node.DefaultConfig()
	cfg.EtcdEndpoints, cfg.Store = []string{"http://127.0.0.1:1"}, "s3://unused"
	cfg.Security.Auth, cfg.Security.NodePrincipals = "token", []string{"varve-node"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "node_principals needs") {
		t.Fatalf("node_principals without TLS: %v", err)
	}
}

// TestWriterBlockServiceNodesOnly: an ingest node without the fetch role
// answers the BlockService for the objects it wrote (GetObject) to nodes
// only, as a fetch node does, and GetBlock to nobody.
func TestWriterBlockServiceNodesOnly(t *testing.T) {
	const secret = "the-shared-cluster-secret"
	n := startNode(t, nil, nil, nil, func(c *node.Config) {
		c.NodeID = "writer"
		c.Roles = []string{node.RoleIngest, node.RoleSequence}
		c.Security.Auth = "token"
		c.Security.BootstrapToken = bootstrap
		c.Security.ClusterSecretFile = secretFile(t, secret)
	})
	ctx := context.Background()
	a := admin.New(n.Addr(), append(clientOpts, sdk.WithToken(bootstrap))...)
	defer a.Close()
	if _, err := a.CreateTopic(ctx, "t", 2, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().Produce(ctx, "t", []sdk.Record{{Topic: "t", Partition: 1, ExplicitPartition: true, Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	e, _, found, _, err := n.Meta().LookupIndex(ctx, "t", 1, 0)
	if err != nil || !found {
		t.Fatalf("index of t/1: %v %v", found, err)
	}
	call := func(tr secretTransport) (*varvev1.GetObjectResponse, error, error) {
		c := varvev1connect.NewBlockServiceClient(&http.Client{Transport: tr}, n.Addr())
		resp, oerr := c.GetObject(ctx, connect.NewRequest(&varvev1.GetObjectRequest{Object: e.Object, MaxBytes: 64 << 20}))
		_, berr := c.GetBlock(ctx, connect.NewRequest(&varvev1.GetBlockRequest{Object: e.Object, Offset: e.Off, Length: e.Len}))
		if resp == nil {
			return nil, oerr, berr
		}
		return resp.Msg, oerr, berr
	}
	for _, tc := range []struct {
		name string
		tr   secretTransport
		want connect.Code
	}{
		{"no credentials", secretTransport{}, connect.CodeUnauthenticated},
		{"bootstrap admin token", secretTransport{token: bootstrap}, connect.CodePermissionDenied},
	} {
		if _, oerr, berr := call(tc.tr); connect.CodeOf(oerr) != tc.want || connect.CodeOf(berr) != tc.want {
			t.Errorf("%s: GetObject %v, GetBlock %v; want %v", tc.name, oerr, berr, tc.want)
		}
	}
	msg, oerr, berr := call(secretTransport{secret: secret})
	if oerr != nil || len(msg.GetBlocks()) != 1 || msg.Blocks[0].Offset != e.Off || int64(len(msg.Blocks[0].Block)) != e.Len {
		t.Fatalf("GetObject with the cluster secret: %v, %v", msg, oerr)
	}
	if connect.CodeOf(berr) != connect.CodeFailedPrecondition {
		t.Fatalf("GetBlock of a node without the fetch role: %v, want failed_precondition", berr)
	}
}
