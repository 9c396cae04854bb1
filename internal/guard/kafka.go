package guard

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata/access"
)

// Allowed reports whether id may do op on r, as the Connect API decides
// it: the Kafka listener's check.
func (g *Guard) Allowed(id Identity, r authz.Resource, op authz.Operation) bool {
	return g.allowed(id, Perm{R: r, Op: op})
}

// AnyAllowed reports whether id may do op on some resource of kind.
func (g *Guard) AnyAllowed(id Identity, kind authz.Kind, op authz.Operation) bool {
	if id.Super {
		return true
	}
	if id.Node {
		return false
	}
	return authz.AnyAllowed(g.snap.Load().ACLs, id.Principal, kind, op)
}

// KafkaMechanisms are the SASL mechanisms the Kafka listener offers: with
// auth token PLAIN (password: an API key, or the bootstrap admin key) and
// SCRAM-SHA-256 and SCRAM-SHA-512 (username: the key id, password: the
// key); none otherwise (auth mtls names the principal by the client
// certificate, auth none needs no credentials).
func (g *Guard) KafkaMechanisms() []string {
	if g.cfg.Auth != AuthToken {
		return nil
	}
	return []string{SASLPlain, SCRAMSHA256, SCRAMSHA512}
}

// KafkaTLSIdentity is the identity of a Kafka connection by its verified
// client certificates, with auth mtls (ok false otherwise: the
// certificate names nobody). The principal is named as for the API
// (mtls_principal); a node certificate (node_principals) is a node's
// identity, which holds no Kafka permission.
func (g *Guard) KafkaTLSIdentity(certs []*x509.Certificate) (id Identity, ok bool, err error) {
	if g.cfg.Auth != AuthMTLS {
		return Identity{}, false, nil
	}
	if len(certs) == 0 {
		return Identity{}, true, fmt.Errorf("%w: present a client certificate (auth mtls)", errNoCredentials)
	}
	p := certPrincipal(certs[0], g.cfg.MTLSPrincipal)
	if p == "" {
		return Identity{}, true, fmt.Errorf("the client certificate has no %s to name its principal", g.cfg.MTLSPrincipal)
	}
	if slices.Contains(g.cfg.NodePrincipals, p) {
		return Identity{Principal: p, Node: true}, true, nil
	}
	return Identity{Principal: p}, true, nil
}

// KafkaPlain authenticates SASL/PLAIN: password is an API key (vk_...)
// checked as a Bearer token is (a revoked key is refused), or the
// bootstrap admin key. user must name the key: its id or its principal
// (admin for the bootstrap key), so a client configured as one principal
// never acts as another. An authorization id other than user is refused
// (as Kafka does: no acting for another principal).
func (g *Guard) KafkaPlain(authzid, user, password string) (Identity, error) {
	if g.cfg.Auth != AuthToken {
		return Identity{}, fmt.Errorf("SASL is not offered with auth %s", g.cfg.Auth)
	}
	if authzid != "" && authzid != user {
		return Identity{}, fmt.Errorf("authorization id %q differs from the username %q: acting for another principal is not supported", authzid, user)
	}
	if password == "" {
		return Identity{}, fmt.Errorf("%w: the SASL/PLAIN password is an API key (vk_...)", errNoCredentials)
	}
	id, err := g.authenticate("Bearer "+password, "", nil)
	if err != nil {
		return Identity{}, err
	}
	if user != id.Principal && (id.KeyID == "" || user != id.KeyID) {
		return Identity{}, fmt.Errorf("username %q names neither the API key's id nor its principal", user)
	}
	return id, nil
}

// KafkaSCRAM returns the SCRAM verifier of mechanism for user (an API
// key's id) and the identity the key authenticates as. Keys made before
// Varve stored SCRAM verifiers have none (PLAIN only); the bootstrap
// admin key has none either.
func (g *Guard) KafkaSCRAM(mechanism, user string) (access.SCRAM, Identity, error) {
	if g.cfg.Auth != AuthToken {
		return access.SCRAM{}, Identity{}, fmt.Errorf("SASL is not offered with auth %s", g.cfg.Auth)
	}
	if SCRAMHash(mechanism) == nil {
		return access.SCRAM{}, Identity{}, fmt.Errorf("%q is not a SCRAM mechanism", mechanism)
	}
	k, ok := g.snap.Load().Keys[user]
	if !ok {
		if user == BootstrapPrincipal {
			return access.SCRAM{}, Identity{}, errors.New("the bootstrap admin key authenticates with PLAIN only")
		}
		return access.SCRAM{}, Identity{}, fmt.Errorf("api key %q is unknown or revoked (the SCRAM username is the key id)", user)
	}
	v, ok := k.SCRAM[mechanism]
	if !ok {
		return access.SCRAM{}, Identity{}, fmt.Errorf("api key %s has no %s verifier (made before Varve stored them): use PLAIN, or a new key", k.ID, mechanism)
	}
	if v.Iterations < SCRAMIterations || len(v.Salt) == 0 || len(v.StoredKey) == 0 || len(v.ServerKey) == 0 {
		return access.SCRAM{}, Identity{}, fmt.Errorf("api key %s: its %s verifier is malformed", k.ID, mechanism)
	}
	return v, Identity{Principal: k.Principal, KeyID: k.ID}, nil
}

// KafkaKeyValid reports whether the API key id authenticated with (if
// any) is still known: a Kafka connection whose key was revoked is closed
// at its next request.
func (g *Guard) KafkaKeyValid(id Identity) bool { return g.keyValid(id) }

// KafkaDenied writes a refused Kafka connection or authentication to the
// audit log, as the API's refused calls are.
func (g *Guard) KafkaDenied(id Identity, what, peer string, err error) {
	g.log.Warn("audit: call refused", "audit", true, "principal", id.Principal, "procedure", "kafka/"+what, "peer", peer,
		"code", "unauthenticated", "reason", err.Error())
}

// KafkaProduceThrottle charges a Kafka produce of n bytes to id's produce
// quota and returns how long its answer is held (Kafka's throttle time: the
// rate holds however the client pipelines); 0 for no quota, the bootstrap
// key and nodes.
func (g *Guard) KafkaProduceThrottle(id Identity, n int) time.Duration {
	if id.Super || id.Node {
		return 0
	}
	w, _ := g.quota.reserve(id.Principal, "produce", n, time.Duration(1<<62))
	return w
}

// KafkaFetchThrottle returns how long id must wait before its next fetch
// (its fetch quota is in debt), or 0.
func (g *Guard) KafkaFetchThrottle(id Identity) time.Duration {
	if id.Super || id.Node {
		return 0
	}
	return g.quota.take(id.Principal, "fetch", 0, false)
}

// KafkaFetchCharge charges n bytes a Kafka fetch answered to id's fetch
// quota.
func (g *Guard) KafkaFetchCharge(id Identity, n int) {
	if id.Super || id.Node {
		return
	}
	g.quota.take(id.Principal, "fetch", n, true)
}
