// Package authz is Varve's access model: principals, resources, operations
// and ACLs, the decision of whether an ACL set allows a principal an
// operation on a resource (deny wins), and the format of API keys and their
// salted hashes.
//
// It is pure: it never talks to etcd or the network and holds no state.
// Storage is metadata/access; enforcement is internal/guard.
package authz

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Operation is what a principal does to a resource.
type Operation string

// Operations. Describe is implied by every other operation allowed on the
// same resource (a producer may describe the topic it writes), as in Kafka.
const (
	Produce  Operation = "produce"
	Consume  Operation = "consume"
	Describe Operation = "describe"
	Alter    Operation = "alter"
	Delete   Operation = "delete"
	Admin    Operation = "admin"
)

// Operations lists every operation.
var Operations = []Operation{Produce, Consume, Describe, Alter, Delete, Admin}

// Kind is a kind of resource.
type Kind string

// Kinds of resources.
const (
	Topic   Kind = "topic"
	Group   Kind = "group"
	Cluster Kind = "cluster"
)

// Resource is one named resource: topic orders, group billing, the cluster.
type Resource struct {
	Kind Kind
	Name string
}

func (r Resource) String() string {
	if r.Kind == Cluster {
		return string(Cluster)
	}
	return string(r.Kind) + ":" + r.Name
}

// Effect of an ACL.
type Effect string

// Effects.
const (
	Allow Effect = "allow"
	Deny  Effect = "deny"
)

// AnyPrincipal in an ACL matches every authenticated principal.
const AnyPrincipal = "*"

// ACL allows or denies one principal one operation on a resource pattern:
// the resource named Name, or with Prefix every resource of Kind whose name
// starts with Name (an empty prefix: all of them).
type ACL struct {
	ID        string    `json:"id"`
	Principal string    `json:"principal"`
	Kind      Kind      `json:"kind"`
	Name      string    `json:"name,omitempty"`
	Prefix    bool      `json:"prefix,omitempty"`
	Operation Operation `json:"operation"`
	Effect    Effect    `json:"effect"`
}

// Pattern formats the resource pattern as ParseResource reads it.
func (a ACL) Pattern() string {
	switch {
	case a.Kind == Cluster:
		return string(Cluster)
	case a.Prefix:
		return string(a.Kind) + ":" + a.Name + "*"
	}
	return string(a.Kind) + ":" + a.Name
}

func (a ACL) String() string {
	return fmt.Sprintf("%s %s %s on %s", a.Effect, a.Principal, a.Operation, a.Pattern())
}

// Validate checks an ACL and fills its ID (a digest of its fields, so the
// same ACL added twice is one ACL).
func (a *ACL) Validate() error {
	if a.Principal == "" {
		return errors.New("acl: principal is empty")
	}
	if !slices.Contains(Operations, a.Operation) {
		return fmt.Errorf("acl: operation %q is not one of produce, consume, describe, alter, delete, admin", a.Operation)
	}
	if a.Effect != Allow && a.Effect != Deny {
		return fmt.Errorf("acl: effect %q is not allow or deny", a.Effect)
	}
	switch a.Kind {
	case Topic, Group:
		if a.Name == "" && !a.Prefix {
			return fmt.Errorf("acl: %s name is empty (use %s:* for every %s)", a.Kind, a.Kind, a.Kind)
		}
	case Cluster:
		if a.Name != "" || a.Prefix {
			return errors.New("acl: the cluster resource has no name")
		}
	default:
		return fmt.Errorf("acl: resource kind %q is not topic, group or cluster", a.Kind)
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{a.Principal, string(a.Kind), a.Name, fmt.Sprint(a.Prefix), string(a.Operation), string(a.Effect)}, "\x00")))
	a.ID = hex.EncodeToString(sum[:8])
	return nil
}

// ParseResource reads a resource pattern: cluster, topic:NAME, topic:PREFIX*,
// topic:* (every topic), and the same for group.
func ParseResource(s string) (kind Kind, name string, prefix bool, err error) {
	if s == string(Cluster) {
		return Cluster, "", false, nil
	}
	k, n, ok := strings.Cut(s, ":")
	if !ok || (Kind(k) != Topic && Kind(k) != Group) {
		return "", "", false, fmt.Errorf("resource %q: want cluster, topic:NAME, topic:PREFIX*, group:NAME or group:PREFIX*", s)
	}
	if strings.HasSuffix(n, "*") {
		return Kind(k), strings.TrimSuffix(n, "*"), true, nil
	}
	if n == "" {
		return "", "", false, fmt.Errorf("resource %q: the name is empty", s)
	}
	return Kind(k), n, false, nil
}

// matches reports whether the ACL's principal and pattern cover p and r.
func (a ACL) matches(p string, r Resource) bool {
	if a.Principal != p && a.Principal != AnyPrincipal {
		return false
	}
	if a.Kind != r.Kind {
		return false
	}
	if a.Kind == Cluster {
		return true
	}
	if a.Prefix {
		return strings.HasPrefix(r.Name, a.Name)
	}
	return a.Name == r.Name
}

// grants reports whether the ACL's operation covers op: the same
// operation, or describe under any other.
func (a ACL) grants(op Operation) bool {
	return a.Operation == op || (op == Describe && a.Effect == Allow)
}

// Decision says whether an operation is allowed and why.
type Decision struct {
	Allowed bool
	// By is the ACL that decided (nil: no ACL matched, denied by default).
	By *ACL
}

// Decide returns whether the ACLs allow principal op on r. A matching deny
// wins over any allow; with no matching ACL the answer is no. An allow of
// admin on the cluster grants every operation on every resource (a deny
// still wins).
func Decide(acls []ACL, principal string, r Resource, op Operation) Decision {
	var allow *ACL
	for i := range acls {
		a := &acls[i]
		if a.Effect == Deny && a.Operation == op && a.matches(principal, r) {
			return Decision{By: a}
		}
		if allow == nil && a.Effect == Allow {
			if a.grants(op) && a.matches(principal, r) {
				allow = a
			} else if a.Kind == Cluster && a.Operation == Admin && (a.Principal == principal || a.Principal == AnyPrincipal) {
				allow = a
			}
		}
	}
	if allow != nil {
		// A later deny still wins.
		for i := range acls {
			a := &acls[i]
			if a.Effect == Deny && a.Operation == op && a.matches(principal, r) {
				return Decision{By: a}
			}
		}
		return Decision{Allowed: true, By: allow}
	}
	return Decision{}
}

// AnyAllowed reports whether principal may op some resource of kind (a
// producer's InitProducer: it may produce somewhere).
func AnyAllowed(acls []ACL, principal string, kind Kind, op Operation) bool {
	for _, a := range acls {
		if a.Effect != Allow || (a.Principal != principal && a.Principal != AnyPrincipal) {
			continue
		}
		if (a.Kind == kind && a.Operation == op) || (a.Kind == Cluster && a.Operation == Admin) {
			if a.Kind == kind && !a.Prefix && Decide(acls, principal, Resource{Kind: kind, Name: a.Name}, op).Allowed {
				return true
			}
			if a.Prefix || a.Kind == Cluster {
				return true // a deny on part of the prefix leaves the rest
			}
		}
	}
	return false
}

// KeyPrefix starts every API key.
const KeyPrefix = "vk_"

// Key is a new API key: its id (public, listed) and its token (secret,
// shown once). Only Salt and Hash are stored.
type Key struct {
	ID, Token, Salt, Hash string
}

// NewKey makes a random API key: token vk_<id>_<secret> with a 64-bit id
// and a 256-bit secret, and the salted SHA-256 of the secret. The secret is
// random, so a fast hash is enough (no password stretching needed).
func NewKey() (Key, error) {
	var id [8]byte
	var secret, salt [32]byte
	for _, b := range [][]byte{id[:], secret[:], salt[:]} {
		if _, err := rand.Read(b); err != nil {
			return Key{}, err
		}
	}
	k := Key{ID: hex.EncodeToString(id[:]), Salt: hex.EncodeToString(salt[:])}
	s := hex.EncodeToString(secret[:])
	k.Token = KeyPrefix + k.ID + "_" + s
	k.Hash = HashSecret(k.Salt, s)
	return k, nil
}

// HashSecret is the stored hash of a key's secret.
func HashSecret(salt, secret string) string {
	sum := sha256.Sum256([]byte(salt + "\x00" + secret))
	return hex.EncodeToString(sum[:])
}

// ParseToken splits a token into its id and secret.
func ParseToken(tok string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(tok, KeyPrefix)
	if !ok {
		return "", "", errors.New("not a Varve API key (vk_...)")
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || id == "" || secret == "" {
		return "", "", errors.New("malformed Varve API key")
	}
	return id, secret, nil
}

// CheckSecret reports whether secret matches a stored salt and hash, in
// constant time.
func CheckSecret(salt, hash, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(HashSecret(salt, secret)), []byte(hash)) == 1
}
