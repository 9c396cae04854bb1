package guard_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
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

// TestRevocationEndsOpenStreams: a Subscribe opened with a key ends with
// UNAUTHENTICATED once the key is revoked, and another with
// PERMISSION_DENIED once its ACL is removed, even while idle.
func TestRevocationEndsOpenStreams(t *testing.T) {
	n, a := securedNode(t, nil, nil, nil)
	ctx := context.Background()
	if _, err := a.CreateTopic(ctx, "t", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().Produce(ctx, "t", []sdk.Record{{Topic: "t", Value: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	revoked := principal(t, a, n.Addr(), "revoked", "topic:t consume")
	unacl := principal(t, a, n.Addr(), "unacl", "topic:t consume")
	open := func(tok string) *connect.ServerStreamForClient[varvev1.SubscribeResponse] {
		s, err := newSvc(n.Addr(), tok, nil).fetch.Subscribe(ctx, connect.NewRequest(&varvev1.SubscribeRequest{Topic: "t", MaxBytes: 1 << 20}))
		if err != nil {
			t.Fatal(err)
		}
		if !s.Receive() {
			t.Fatalf("first message: %v", s.Err())
		}
		return s
	}
	s1, s2 := open(revoked), open(unacl)
	defer s1.Close()
	defer s2.Close()

	keys, err := a.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Principal == "revoked" {
			if _, err := a.RevokeAPIKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	acls, err := a.ListACLs(ctx, "unacl")
	if err != nil || len(acls) != 1 {
		t.Fatalf("acls of unacl: %v, %v", acls, err)
	}
	if _, err := a.RemoveACL(ctx, acls[0].ID); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s    *connect.ServerStreamForClient[varvev1.SubscribeResponse]
		want connect.Code
	}{{s1, connect.CodeUnauthenticated}, {s2, connect.CodePermissionDenied}} {
		start := time.Now()
		ended := make(chan error, 1)
		go func() {
			for tc.s.Receive() {
			}
			ended <- tc.s.Err()
		}()
		select {
		case err := <-ended:
			if connect.CodeOf(err) != tc.want {
				t.Fatalf("stream ended with %v, want %v", err, tc.want)
			}
			t.Logf("open stream ended %v after the change: %v", time.Since(start).Round(time.Millisecond), err)
		case <-time.After(5 * time.Second):
			t.Fatalf("stream still open 5 s after the change (want %v)", tc.want)
		}
	}
}
