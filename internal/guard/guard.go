// Package guard enforces Varve's security on a node: it authenticates
// every call (API keys, client certificates, the cluster secret of nodes),
// authorizes it against the ACLs (one table maps every RPC to the resources
// and operation it needs), filters listings to what the caller may
// describe, enforces quotas, writes the audit log and serves the
// AccessService that manages keys and ACLs.
//
// It never stores anything itself (metadata/access does) and never decides
// an ACL question itself (internal/authz does).
package guard

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/access"
)

// Authentication modes (setting auth).
const (
	AuthNone  = "none"
	AuthToken = "token"
	AuthMTLS  = "mtls"
)

// BootstrapPrincipal is the principal of the bootstrap admin key. It holds
// every permission (no ACL can deny it): use it to create the first keys
// and ACLs, then remove it from the configuration.
const BootstrapPrincipal = "admin"

// SecretHeader carries the cluster secret from node to node.
const SecretHeader = "Varve-Cluster-Secret"

// Config configures a Guard.
type Config struct {
	// Auth is none, token or mtls.
	Auth string
	// MTLSPrincipal names the part of a client certificate that is the
	// principal: cn (default), dns, email or uri.
	MTLSPrincipal string
	// BootstrapToken is an admin key given in the configuration ("": none).
	BootstrapToken string
	// ClusterSecret is what nodes present to each other's BlockService
	// ("": with auth none, anyone may call it; otherwise nobody).
	ClusterSecret string
	// NodePrincipals are the principals of client certificates (named as
	// MTLSPrincipal says) that are nodes: a call presenting such a
	// certificate and no API key is a node's, which may call the
	// BlockService and nothing else. An alternative to ClusterSecret.
	NodePrincipals []string
	// Quotas of produce and fetch bytes/s per principal (0: none).
	Quotas QuotaConfig
	Log    *slog.Logger
}

// Identity is who made a call.
type Identity struct {
	Principal string
	// KeyID is the API key the caller presented ("" for others).
	KeyID string
	// Node: the caller presented the cluster secret or a node certificate.
	Node bool
	// Super: the bootstrap admin key, or auth none (every permission).
	Super bool
}

// Guard authenticates and authorizes a node's calls. It is safe for
// concurrent use.
type Guard struct {
	cfg   Config
	log   *slog.Logger
	store *access.Store
	snap  atomic.Pointer[access.Snapshot]
	quota *quotas
	stop  func()
}

// New starts a guard on meta's etcd: it loads the keys and ACLs and keeps
// them current through a watch until Close.
func New(ctx context.Context, meta *metadata.Client, cfg Config) (*Guard, error) {
	switch cfg.Auth {
	case "":
		cfg.Auth = AuthNone
	case AuthNone, AuthToken, AuthMTLS:
	default:
		return nil, fmt.Errorf("auth %q is not none, token or mtls", cfg.Auth)
	}
	if cfg.BootstrapToken != "" && len(cfg.BootstrapToken) < 16 {
		return nil, errors.New("the bootstrap token is shorter than 16 characters")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g := &Guard{cfg: cfg, log: cfg.Log, store: access.New(meta)}
	g.snap.Store(&access.Snapshot{Keys: map[string]access.Key{}})
	stop, err := g.store.Watch(ctx, func(s *access.Snapshot) { g.snap.Store(s) })
	if err != nil {
		return nil, err
	}
	g.stop = stop
	g.quota = newQuotas(ctx, meta, cfg.Quotas, g.log)
	return g, nil
}

// Close stops the watches.
func (g *Guard) Close() {
	if g.stop != nil {
		g.stop()
	}
	g.quota.close()
}

// Auth returns the authentication mode.
func (g *Guard) Auth() string { return g.cfg.Auth }

// NodeSecret is the cluster secret a node sends to the others.
func (g *Guard) NodeSecret() string { return g.cfg.ClusterSecret }

type idKey struct{}

type authResult struct {
	id  Identity
	err error
}

// IdentityFrom returns the identity of the call ctx belongs to.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	r, ok := ctx.Value(idKey{}).(*authResult)
	if !ok || r.err != nil {
		return Identity{}, false
	}
	return r.id, true
}

// Middleware authenticates each HTTP request and records the result in its
// context for the interceptor (which answers UNAUTHENTICATED in the
// request's protocol).
func (g *Guard) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var peer []*x509.Certificate
		if r.TLS != nil {
			peer = r.TLS.PeerCertificates
		}
		id, err := g.authenticate(r.Header.Get("Authorization"), r.Header.Get(SecretHeader), peer)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), idKey{}, &authResult{id: id, err: err})))
	})
}

// errNoCredentials is the answer to a call without credentials.
var errNoCredentials = errors.New("no credentials")

func (g *Guard) authenticate(authorization, secret string, certs []*x509.Certificate) (Identity, error) {
	if secret != "" {
		if g.cfg.ClusterSecret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(g.cfg.ClusterSecret)) == 1 {
			return Identity{Principal: "node", Node: true}, nil
		}
		return Identity{}, errors.New("wrong cluster secret")
	}
	if authorization == "" && len(certs) > 0 && len(g.cfg.NodePrincipals) > 0 {
		if p := certPrincipal(certs[0], g.cfg.MTLSPrincipal); p != "" && slices.Contains(g.cfg.NodePrincipals, p) {
			return Identity{Principal: p, Node: true}, nil
		}
	}
	tok, hasBearer := strings.CutPrefix(authorization, "Bearer ")
	if authorization != "" && !hasBearer {
		return Identity{}, errors.New("the Authorization header is not Bearer <API key>")
	}
	tok = strings.TrimSpace(tok)
	if g.cfg.BootstrapToken != "" && tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(g.cfg.BootstrapToken)) == 1 {
		return Identity{Principal: BootstrapPrincipal, Super: true}, nil
	}
	switch g.cfg.Auth {
	case AuthNone:
		return Identity{Principal: "anonymous", Super: true}, nil
	case AuthToken:
		if tok == "" {
			return Identity{}, fmt.Errorf("%w: send Authorization: Bearer <API key> (auth token)", errNoCredentials)
		}
		id, sec, err := authz.ParseToken(tok)
		if err != nil {
			return Identity{}, err
		}
		k, ok := g.snap.Load().Keys[id]
		if !ok || !authz.CheckSecret(k.Salt, k.Hash, sec) {
			return Identity{}, fmt.Errorf("api key %s is unknown or revoked", id)
		}
		return Identity{Principal: k.Principal, KeyID: id}, nil
	case AuthMTLS:
		if len(certs) == 0 {
			return Identity{}, fmt.Errorf("%w: present a client certificate (auth mtls)", errNoCredentials)
		}
		p := certPrincipal(certs[0], g.cfg.MTLSPrincipal)
		if p == "" {
			return Identity{}, fmt.Errorf("the client certificate has no %s to name its principal", g.cfg.MTLSPrincipal)
		}
		return Identity{Principal: p}, nil
	}
	return Identity{}, fmt.Errorf("auth %q", g.cfg.Auth)
}

// certPrincipal names a verified client certificate's principal.
func certPrincipal(c *x509.Certificate, from string) string {
	switch from {
	case "dns":
		if len(c.DNSNames) > 0 {
			return c.DNSNames[0]
		}
	case "email":
		if len(c.EmailAddresses) > 0 {
			return c.EmailAddresses[0]
		}
	case "uri":
		if len(c.URIs) > 0 {
			return c.URIs[0].String()
		}
	default:
		return c.Subject.CommonName
	}
	return ""
}

// keyValid reports whether id's API key (if any) is still known: a revoked
// key ends the streams it opened.
func (g *Guard) keyValid(id Identity) bool {
	if id.KeyID == "" {
		return true
	}
	_, ok := g.snap.Load().Keys[id.KeyID]
	return ok
}

// allowed decides one permission for id.
func (g *Guard) allowed(id Identity, p Perm) bool {
	if id.Super {
		return true
	}
	if id.Node {
		return false
	}
	return authz.Decide(g.snap.Load().ACLs, id.Principal, p.R, p.Op).Allowed
}
