package access_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/access"
)

func TestStoreAndWatch(t *testing.T) {
	ctx := context.Background()
	m, err := metadata.Connect(ctx, metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s := access.New(m)

	var mu sync.Mutex
	var last *access.Snapshot
	stop, err := s.Watch(ctx, func(snap *access.Snapshot) { mu.Lock(); last = snap; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	seen := func(cond func(*access.Snapshot) bool) bool {
		return testenv.Eventually(5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return cond(last) })
	}

	k, err := authz.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	stored, err := s.CreateKey(ctx, "alice", k)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Hash != k.Hash || stored.Salt != k.Salt || stored.Principal != "alice" {
		t.Fatalf("stored %+v", stored)
	}
	if _, err := s.CreateKey(ctx, "bob", k); err == nil {
		t.Fatal("a second key with the same id was stored")
	}
	if !seen(func(s *access.Snapshot) bool { return s.Keys[k.ID].Principal == "alice" }) {
		t.Fatal("the watch did not deliver the key")
	}
	a, err := s.AddACL(ctx, authz.ACL{Principal: "alice", Kind: authz.Topic, Name: "t", Operation: authz.Produce, Effect: authz.Allow})
	if err != nil || a.ID == "" {
		t.Fatalf("AddACL: %+v, %v", a, err)
	}
	if _, err := s.AddACL(ctx, a); err != nil { // again: the same ACL
		t.Fatal(err)
	}
	if _, err := s.AddACL(ctx, authz.ACL{Principal: "alice", Kind: authz.Topic, Operation: "write", Effect: authz.Allow}); err == nil {
		t.Fatal("an invalid ACL was stored")
	}
	acls, err := s.ListACLs(ctx)
	if err != nil || len(acls) != 1 {
		t.Fatalf("ListACLs = %+v, %v; want one", acls, err)
	}
	if !seen(func(s *access.Snapshot) bool {
		return len(s.ACLs) == 1 && authz.Decide(s.ACLs, "alice", authz.Resource{Kind: authz.Topic, Name: "t"}, authz.Produce).Allowed
	}) {
		t.Fatal("the watch did not deliver the ACL")
	}
	if _, err := s.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeKey(ctx, k.ID); !errors.Is(err, access.ErrKeyNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	if _, err := s.RemoveACL(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveACL(ctx, a.ID); !errors.Is(err, access.ErrACLNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	if !seen(func(s *access.Snapshot) bool { _, ok := s.Keys[k.ID]; return !ok && len(s.ACLs) == 0 }) {
		t.Fatal("the watch did not deliver the revocation and removal")
	}
}
