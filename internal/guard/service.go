package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata/access"
)

// Service implements the AccessService (API keys and ACLs) on the guard's
// store. Authorization is the interceptor's (admin on the cluster).
func (g *Guard) Service() varvev1connect.AccessServiceHandler { return accessService{g} }

type accessService struct{ g *Guard }

func keyToProto(k access.Key) *varvev1.APIKey {
	return &varvev1.APIKey{Id: k.ID, Principal: k.Principal, CreatedMs: k.CreatedMs}
}

func aclToProto(a authz.ACL) *varvev1.ACL {
	return &varvev1.ACL{Id: a.ID, Principal: a.Principal, Resource: a.Pattern(), Operation: string(a.Operation), Effect: string(a.Effect)}
}

func storeErr(err error) error {
	switch {
	case errors.Is(err, access.ErrKeyNotFound), errors.Is(err, access.ErrACLNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewError(connect.CodeUnavailable, err)
}

func caller(ctx context.Context) string {
	id, _ := IdentityFrom(ctx)
	return id.Principal
}

func (s accessService) CreateAPIKey(ctx context.Context, req *connect.Request[varvev1.CreateAPIKeyRequest]) (*connect.Response[varvev1.CreateAPIKeyResponse], error) {
	p := strings.TrimSpace(req.Msg.GetPrincipal())
	if p == "" || p == authz.AnyPrincipal || strings.ContainsAny(p, " \t\n") {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("principal %q: want a name without spaces, not *", req.Msg.GetPrincipal()))
	}
	k, err := authz.NewKey()
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	// The SCRAM verifiers of the token, for SASL/SCRAM on the Kafka
	// listener (username: the key id).
	verifiers, err := scramVerifiers(k.Token)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	stored, err := s.g.store.CreateKeySCRAM(ctx, p, k, verifiers)
	if err != nil {
		return nil, storeErr(err)
	}
	s.g.log.Info("audit: api key created", "audit", true, "principal", caller(ctx), "key", k.ID, "for", p)
	return connect.NewResponse(&varvev1.CreateAPIKeyResponse{Key: keyToProto(stored), Token: k.Token}), nil
}

func (s accessService) ListAPIKeys(ctx context.Context, _ *connect.Request[varvev1.ListAPIKeysRequest]) (*connect.Response[varvev1.ListAPIKeysResponse], error) {
	ks, err := s.g.store.ListKeys(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	out := &varvev1.ListAPIKeysResponse{}
	for _, k := range ks {
		out.Keys = append(out.Keys, keyToProto(k))
	}
	return connect.NewResponse(out), nil
}

func (s accessService) RevokeAPIKey(ctx context.Context, req *connect.Request[varvev1.RevokeAPIKeyRequest]) (*connect.Response[varvev1.RevokeAPIKeyResponse], error) {
	if req.Msg.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("key id is empty"))
	}
	k, err := s.g.store.RevokeKey(ctx, req.Msg.GetId())
	if err != nil {
		return nil, storeErr(err)
	}
	s.g.log.Info("audit: api key revoked", "audit", true, "principal", caller(ctx), "key", k.ID, "for", k.Principal)
	return connect.NewResponse(&varvev1.RevokeAPIKeyResponse{Key: keyToProto(k)}), nil
}

// ACLFromProto reads an ACL given over the API.
func ACLFromProto(m *varvev1.ACL) (authz.ACL, error) {
	kind, name, prefix, err := authz.ParseResource(m.GetResource())
	if err != nil {
		return authz.ACL{}, err
	}
	a := authz.ACL{Principal: m.GetPrincipal(), Kind: kind, Name: name, Prefix: prefix,
		Operation: authz.Operation(m.GetOperation()), Effect: authz.Effect(m.GetEffect())}
	if a.Effect == "" {
		a.Effect = authz.Allow
	}
	return a, a.Validate()
}

func (s accessService) AddACL(ctx context.Context, req *connect.Request[varvev1.AddACLRequest]) (*connect.Response[varvev1.AddACLResponse], error) {
	a, err := ACLFromProto(req.Msg.GetAcl())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	a, err = s.g.store.AddACL(ctx, a)
	if err != nil {
		return nil, storeErr(err)
	}
	s.g.log.Info("audit: acl added", "audit", true, "principal", caller(ctx), "acl", a.ID, "rule", a.String())
	return connect.NewResponse(&varvev1.AddACLResponse{Acl: aclToProto(a)}), nil
}

func (s accessService) ListACLs(ctx context.Context, req *connect.Request[varvev1.ListACLsRequest]) (*connect.Response[varvev1.ListACLsResponse], error) {
	acls, err := s.g.store.ListACLs(ctx)
	if err != nil {
		return nil, storeErr(err)
	}
	out := &varvev1.ListACLsResponse{}
	for _, a := range acls {
		if p := req.Msg.GetPrincipal(); p == "" || p == a.Principal {
			out.Acls = append(out.Acls, aclToProto(a))
		}
	}
	return connect.NewResponse(out), nil
}

func (s accessService) RemoveACL(ctx context.Context, req *connect.Request[varvev1.RemoveACLRequest]) (*connect.Response[varvev1.RemoveACLResponse], error) {
	if req.Msg.GetId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("acl id is empty"))
	}
	a, err := s.g.store.RemoveACL(ctx, req.Msg.GetId())
	if err != nil {
		return nil, storeErr(err)
	}
	s.g.log.Info("audit: acl removed", "audit", true, "principal", caller(ctx), "acl", a.ID, "rule", a.String())
	return connect.NewResponse(&varvev1.RemoveACLResponse{Acl: aclToProto(a)}), nil
}

func (s accessService) WhoAmI(ctx context.Context, _ *connect.Request[varvev1.WhoAmIRequest]) (*connect.Response[varvev1.WhoAmIResponse], error) {
	return connect.NewResponse(&varvev1.WhoAmIResponse{Principal: caller(ctx), Auth: s.g.cfg.Auth}), nil
}
