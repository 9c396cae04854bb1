package guard

import "github.com/varve-io/varve/internal/authz"

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
