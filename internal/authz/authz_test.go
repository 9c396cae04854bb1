package authz_test

import (
	"testing"

	"github.com/varve-io/varve/internal/authz"
)

func acl(t *testing.T, principal, pattern string, op authz.Operation, eff authz.Effect) authz.ACL {
	t.Helper()
	k, n, p, err := authz.ParseResource(pattern)
	if err != nil {
		t.Fatal(err)
	}
	a := authz.ACL{Principal: principal, Kind: k, Name: n, Prefix: p, Operation: op, Effect: eff}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDecide(t *testing.T) {
	acls := []authz.ACL{
		acl(t, "alice", "topic:orders", authz.Produce, authz.Allow),
		acl(t, "alice", "topic:logs-*", authz.Consume, authz.Allow),
		acl(t, "alice", "topic:logs-secret", authz.Consume, authz.Deny),
		acl(t, "*", "group:shared-*", authz.Consume, authz.Allow),
		acl(t, "root", "cluster", authz.Admin, authz.Allow),
		acl(t, "root", "topic:vault", authz.Delete, authz.Deny),
		acl(t, "bob", "topic:*", authz.Describe, authz.Allow),
	}
	topic := func(n string) authz.Resource { return authz.Resource{Kind: authz.Topic, Name: n} }
	cases := []struct {
		name      string
		principal string
		r         authz.Resource
		op        authz.Operation
		want      bool
	}{
		{"exact allow", "alice", topic("orders"), authz.Produce, true},
		{"other op", "alice", topic("orders"), authz.Consume, false},
		{"describe implied by produce", "alice", topic("orders"), authz.Describe, true},
		{"other topic", "alice", topic("orders2"), authz.Produce, false},
		{"prefix allow", "alice", topic("logs-web"), authz.Consume, true},
		{"deny wins over prefix allow", "alice", topic("logs-secret"), authz.Consume, false},
		{"any principal", "carol", authz.Resource{Kind: authz.Group, Name: "shared-x"}, authz.Consume, true},
		{"kind differs", "carol", topic("shared-x"), authz.Consume, false},
		{"unknown principal", "mallory", topic("orders"), authz.Describe, false},
		{"cluster admin grants all", "root", topic("anything"), authz.Delete, true},
		{"deny wins over cluster admin", "root", topic("vault"), authz.Delete, false},
		{"cluster admin on cluster", "root", authz.Resource{Kind: authz.Cluster}, authz.Admin, true},
		{"describe all topics", "bob", topic("x"), authz.Describe, true},
		{"describe is not consume", "bob", topic("x"), authz.Consume, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := authz.Decide(acls, tc.principal, tc.r, tc.op).Allowed; got != tc.want {
				t.Fatalf("Decide(%s, %s, %s) = %v, want %v", tc.principal, tc.r, tc.op, got, tc.want)
			}
		})
	}
	if !authz.AnyAllowed(acls, "alice", authz.Topic, authz.Produce) || authz.AnyAllowed(acls, "bob", authz.Topic, authz.Produce) {
		t.Fatal("AnyAllowed: alice produces somewhere, bob nowhere")
	}
}

func TestACLValidate(t *testing.T) {
	bad := []authz.ACL{
		{Kind: authz.Topic, Name: "t", Operation: authz.Produce, Effect: authz.Allow},
		{Principal: "a", Kind: authz.Topic, Name: "t", Operation: "write", Effect: authz.Allow},
		{Principal: "a", Kind: authz.Topic, Name: "t", Operation: authz.Produce, Effect: "maybe"},
		{Principal: "a", Kind: authz.Topic, Operation: authz.Produce, Effect: authz.Allow},
		{Principal: "a", Kind: authz.Cluster, Name: "x", Operation: authz.Admin, Effect: authz.Allow},
		{Principal: "a", Kind: "schema", Name: "x", Operation: authz.Admin, Effect: authz.Allow},
	}
	for i, a := range bad {
		if err := a.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, a)
		}
	}
	a := acl(t, "a", "topic:t", authz.Produce, authz.Allow)
	b := acl(t, "a", "topic:t", authz.Produce, authz.Allow)
	c := acl(t, "a", "topic:t*", authz.Produce, authz.Allow)
	if a.ID != b.ID || a.ID == c.ID {
		t.Fatalf("ids: same ACL %s %s, prefix %s", a.ID, b.ID, c.ID)
	}
	for _, s := range []string{"topic:", "topics:x", "cluster:x", "x"} {
		if _, _, _, err := authz.ParseResource(s); err == nil {
			t.Errorf("ParseResource(%q) accepted", s)
		}
	}
}

func TestKeys(t *testing.T) {
	k, err := authz.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := authz.ParseToken(k.Token)
	if err != nil || id != k.ID {
		t.Fatalf("ParseToken(%s) = %s, %v", k.Token, id, err)
	}
	if !authz.CheckSecret(k.Salt, k.Hash, secret) || authz.CheckSecret(k.Salt, k.Hash, secret+"0") {
		t.Fatal("CheckSecret")
	}
	for _, tok := range []string{"", "Bearer x", "vk_", "vk_abc", "vk__x"} {
		if _, _, err := authz.ParseToken(tok); err == nil {
			t.Errorf("ParseToken(%q) accepted", tok)
		}
	}
}
