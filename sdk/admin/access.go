package admin

import (
	"context"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// APIKey is an API key as the cluster lists it (never its secret).
type APIKey struct {
	ID        string
	Principal string
	Created   time.Time
}

func apiKeyFrom(k *varvev1.APIKey) APIKey {
	return APIKey{ID: k.GetId(), Principal: k.GetPrincipal(), Created: time.UnixMilli(k.GetCreatedMs())}
}

// ACL allows or denies a principal an operation on a resource
// (docs/security.md).
type ACL struct {
	// ID is set by the cluster.
	ID string
	// Principal, or * for every authenticated principal.
	Principal string
	// Resource: cluster, topic:NAME, topic:PREFIX*, group:NAME, group:PREFIX*.
	Resource string
	// Operation: produce, consume, describe, alter, delete or admin.
	Operation string
	// Effect: allow (the default) or deny; deny wins.
	Effect string
}

func aclFrom(a *varvev1.ACL) ACL {
	return ACL{ID: a.GetId(), Principal: a.GetPrincipal(), Resource: a.GetResource(), Operation: a.GetOperation(), Effect: a.GetEffect()}
}

// CreateAPIKey creates a key for principal and returns it with its token,
// which the cluster does not keep: store it now.
func (a *Client) CreateAPIKey(ctx context.Context, principal string) (APIKey, string, error) {
	resp, err := a.access.CreateAPIKey(ctx, connect.NewRequest(&varvev1.CreateAPIKeyRequest{Principal: principal}))
	if err != nil {
		return APIKey{}, "", err
	}
	return apiKeyFrom(resp.Msg.GetKey()), resp.Msg.GetToken(), nil
}

// ListAPIKeys lists the keys.
func (a *Client) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	resp, err := a.access.ListAPIKeys(ctx, connect.NewRequest(&varvev1.ListAPIKeysRequest{}))
	if err != nil {
		return nil, err
	}
	out := make([]APIKey, 0, len(resp.Msg.GetKeys()))
	for _, k := range resp.Msg.GetKeys() {
		out = append(out, apiKeyFrom(k))
	}
	return out, nil
}

// RevokeAPIKey revokes the key with this id on every node.
func (a *Client) RevokeAPIKey(ctx context.Context, id string) (APIKey, error) {
	resp, err := a.access.RevokeAPIKey(ctx, connect.NewRequest(&varvev1.RevokeAPIKeyRequest{Id: id}))
	if err != nil {
		return APIKey{}, err
	}
	return apiKeyFrom(resp.Msg.GetKey()), nil
}

// AddACL adds an ACL and returns it with its id.
func (a *Client) AddACL(ctx context.Context, acl ACL) (ACL, error) {
	resp, err := a.access.AddACL(ctx, connect.NewRequest(&varvev1.AddACLRequest{Acl: &varvev1.ACL{
		Principal: acl.Principal, Resource: acl.Resource, Operation: acl.Operation, Effect: acl.Effect,
	}}))
	if err != nil {
		return ACL{}, err
	}
	return aclFrom(resp.Msg.GetAcl()), nil
}

// ListACLs lists the ACLs, of one principal if not empty.
func (a *Client) ListACLs(ctx context.Context, principal string) ([]ACL, error) {
	resp, err := a.access.ListACLs(ctx, connect.NewRequest(&varvev1.ListACLsRequest{Principal: principal}))
	if err != nil {
		return nil, err
	}
	out := make([]ACL, 0, len(resp.Msg.GetAcls()))
	for _, x := range resp.Msg.GetAcls() {
		out = append(out, aclFrom(x))
	}
	return out, nil
}

// RemoveACL removes the ACL with this id.
func (a *Client) RemoveACL(ctx context.Context, id string) (ACL, error) {
	resp, err := a.access.RemoveACL(ctx, connect.NewRequest(&varvev1.RemoveACLRequest{Id: id}))
	if err != nil {
		return ACL{}, err
	}
	return aclFrom(resp.Msg.GetAcl()), nil
}

// WhoAmI returns the principal the cluster sees for this client.
func (a *Client) WhoAmI(ctx context.Context) (string, error) {
	resp, err := a.access.WhoAmI(ctx, connect.NewRequest(&varvev1.WhoAmIRequest{}))
	if err != nil {
		return "", err
	}
	return resp.Msg.GetPrincipal(), nil
}
