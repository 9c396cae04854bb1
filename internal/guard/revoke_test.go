package guard_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// TestRevocationReachesEveryNode: a key revoked through one node is refused
// by every node within 5 s (two nodes on one etcd).
func TestRevocationReachesEveryNode(t *testing.T) {
	endpoints := testenv.StartEtcd(t)
	st := store(t)
	secret := secretFile(t, "a-cluster-secret-of-some-length")
	mk := func(id string) (*node.Node, *admin.Client) {
		n := startNode(t, endpoints, st, nil, func(c *node.Config) {
			c.NodeID = id
			c.Security.Auth = "token"
			c.Security.BootstrapToken = bootstrap
			c.Security.ClusterSecretFile = secret
		})
		a := admin.New(n.Addr(), sdk.WithToken(bootstrap))
		t.Cleanup(a.Close)
		return n, a
	}
	n1, a1 := mk("n1")
	n2, _ := mk("n2")
	tok := principal(t, a1, n1.Addr(), "alice", "topic:* describe")
	waitKnown(t, n2.Addr(), tok, "alice")

	keys, err := a1.ListAPIKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, k := range keys {
		if k.Principal == "alice" {
			id = k.ID
		}
	}
	start := time.Now()
	if _, err := a1.RevokeAPIKey(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node.Node{n1, n2} {
		c := admin.New(n.Addr(), sdk.WithToken(tok))
		defer c.Close()
		var err error
		if !testenv.EventuallyEvery(5*time.Second, 5*time.Millisecond, func() bool {
			_, err = c.ListTopics(context.Background())
			return connect.CodeOf(err) == connect.CodeUnauthenticated
		}) {
			t.Fatalf("node %s still accepts the revoked key 5 s later: %v", n.Addr(), err)
		}
		t.Logf("node %s refuses the revoked key %v after the revocation: %v", n.Addr(), time.Since(start).Round(time.Millisecond), err)
	}
}
