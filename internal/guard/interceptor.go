package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/internal/authz"
)

// Interceptor returns the Connect interceptor of every service: it refuses
// unauthenticated calls (UNAUTHENTICATED) and calls without a permission
// (PERMISSION_DENIED naming it) before the handler runs, filters listings,
// enforces quotas and writes the audit log.
func (g *Guard) Interceptor() connect.Interceptor { return interceptor{g} }

type interceptor struct{ g *Guard }

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		proc := req.Spec().Procedure
		id, rule, err := i.g.check(ctx, proc, req.Any())
		if err != nil {
			i.g.denied(id, proc, req.Peer().Addr, err)
			return nil, err
		}
		if err := i.g.quota.before(id, proc, req.Any()); err != nil {
			return nil, err
		}
		resp, err := next(ctx, req)
		if err == nil && rule.Filter != nil && !id.Super {
			rule.Filter(func(p Perm) bool { return i.g.allowed(id, p) }, resp.Any())
		}
		if err == nil {
			i.g.quota.after(id, proc, resp.Any())
		}
		if rule.Audit {
			i.g.audit(id, proc, rule, req.Any(), err)
		}
		return resp, err
	}
}

func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		proc := conn.Spec().Procedure
		// Refuse the unauthenticated before reading anything.
		if _, _, err := i.g.check(ctx, proc, nil); err != nil && connect.CodeOf(err) == connect.CodeUnauthenticated {
			i.g.denied(Identity{}, proc, conn.Peer().Addr, err)
			return err
		}
		return next(ctx, &checkedConn{StreamingHandlerConn: conn, g: i.g, ctx: ctx})
	}
}

// checkedConn authorizes a stream on its first request message (every
// Varve stream is server-streaming: one request).
type checkedConn struct {
	connect.StreamingHandlerConn
	g       *Guard
	ctx     context.Context
	checked bool
	id      Identity
}

func (c *checkedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	if !c.checked {
		proc := c.Spec().Procedure
		id, _, err := c.g.check(c.ctx, proc, msg)
		if err != nil {
			c.g.denied(id, proc, c.Peer().Addr, err)
			return err
		}
		c.checked, c.id = true, id
	}
	return nil
}

func (c *checkedConn) Send(msg any) error {
	if !c.checked {
		return connect.NewError(connect.CodeInternal, errors.New("stream answered before its request was authorized"))
	}
	if err := c.g.quota.stream(c.ctx, c.id, c.Spec().Procedure, msg); err != nil {
		return err
	}
	return c.StreamingHandlerConn.Send(msg)
}

// check authenticates and authorizes one call of proc with request req
// (nil: authentication only).
func (g *Guard) check(ctx context.Context, proc string, req any) (Identity, Rule, error) {
	res, _ := ctx.Value(idKey{}).(*authResult)
	if res == nil {
		// The middleware did not run: fail closed.
		return Identity{}, Rule{}, connect.NewError(connect.CodeInternal, errors.New("call reached the API without authentication"))
	}
	rule, ok := Rules[proc]
	if !ok {
		return res.id, rule, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s has no access rule: refused", proc))
	}
	if rule.Node {
		switch {
		case res.err == nil && res.id.Node:
			return res.id, rule, nil
		case g.cfg.ClusterSecret == "" && g.cfg.Auth == AuthNone:
			return res.id, rule, nil // an open cluster (auth none, no secret)
		case res.err != nil && g.cfg.Auth != AuthNone:
			return res.id, rule, connect.NewError(connect.CodeUnauthenticated, res.err)
		}
		return res.id, rule, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s is internal: only nodes, with the cluster secret, may call it", proc))
	}
	if res.err != nil {
		return res.id, rule, connect.NewError(connect.CodeUnauthenticated, res.err)
	}
	id := res.id
	if id.Node {
		return id, rule, connect.NewError(connect.CodePermissionDenied, errors.New("the cluster secret is only for the internal BlockService"))
	}
	if req == nil || id.Super || rule.Open {
		return id, rule, nil
	}
	if rule.AnyTopic != "" {
		if authz.AnyAllowed(g.snap.Load().ACLs, id.Principal, authz.Topic, rule.AnyTopic) {
			return id, rule, nil
		}
		return id, rule, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("principal %q lacks %s on any topic", id.Principal, rule.AnyTopic))
	}
	if rule.Need == nil {
		return id, rule, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s has no access rule: refused", proc))
	}
	for _, p := range rule.Need(req) {
		if !g.allowed(id, p) {
			return id, rule, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("principal %q lacks permission %s", id.Principal, p))
		}
	}
	return id, rule, nil
}

// denied writes a refused call to the audit log.
func (g *Guard) denied(id Identity, proc, peer string, err error) {
	g.log.Warn("audit: call refused", "audit", true, "principal", id.Principal, "procedure", proc, "peer", peer,
		"code", connect.CodeOf(err).String(), "reason", errMessage(err))
}

// audit writes an administrative call to the audit log.
func (g *Guard) audit(id Identity, proc string, rule Rule, req any, err error) {
	var res []string
	if rule.Need != nil {
		for _, p := range rule.Need(req) {
			res = append(res, p.R.String())
		}
	}
	attrs := []any{"audit", true, "principal", id.Principal, "procedure", proc, "resources", strings.Join(res, ",")}
	if err != nil {
		g.log.Info("audit: administration failed", append(attrs, "code", connect.CodeOf(err).String(), "reason", errMessage(err))...)
		return
	}
	g.log.Info("audit: administration", attrs...)
}

func errMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}
