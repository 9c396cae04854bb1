package guard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

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
		if err := i.g.quota.before(ctx, id, proc, req.Any()); err != nil {
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
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cc := &checkedConn{StreamingHandlerConn: conn, g: i.g, ctx: sctx}
		// An idle stream (a tail with nothing new) is checked every
		// recheckEvery too, so a revocation ends it without waiting for data.
		stop := recheckPeriodically(cc.recheck, cancel)
		err := next(sctx, cc)
		if ended := stop(); ended != nil {
			i.g.denied(cc.identity(), proc, conn.Peer().Addr, ended)
			return ended
		}
		return err
	}
}

// recheckEvery is how often an open stream's key and permissions are
// checked again.
const recheckEvery = time.Second

// checkedConn authorizes a stream on its first request message (every
// Varve stream is server-streaming: one request), and again before each
// answer, so a revoked key or a removed ACL ends a stream opened before.
type checkedConn struct {
	connect.StreamingHandlerConn
	g   *Guard
	ctx context.Context

	mu      sync.Mutex // the fields below: Receive sets, the rechecks read
	checked bool
	id      Identity
	rule    Rule
	req     any
}

func (c *checkedConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	if !c.checked {
		proc := c.Spec().Procedure
		id, rule, err := c.g.check(c.ctx, proc, msg)
		if err != nil {
			c.g.denied(id, proc, c.Peer().Addr, err)
			return err
		}
		c.mu.Lock()
		c.checked, c.id, c.rule, c.req = true, id, rule, msg
		c.mu.Unlock()
	}
	return nil
}

func (c *checkedConn) identity() Identity {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

// recheck checks an authorized stream again (nil before authorization).
func (c *checkedConn) recheck() error {
	c.mu.Lock()
	checked, id, rule, req := c.checked, c.id, c.rule, c.req
	c.mu.Unlock()
	if !checked {
		return nil
	}
	return c.g.recheck(id, rule, req)
}

func (c *checkedConn) Send(msg any) error {
	c.mu.Lock()
	checked, id := c.checked, c.id
	c.mu.Unlock()
	if !checked {
		return connect.NewError(connect.CodeInternal, errors.New("stream answered before its request was authorized"))
	}
	if err := c.recheck(); err != nil {
		c.g.denied(id, c.Spec().Procedure, c.Peer().Addr, err)
		return err
	}
	if err := c.g.quota.stream(c.ctx, id, c.Spec().Procedure, msg); err != nil {
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
		case g.cfg.ClusterSecret == "" && len(g.cfg.NodePrincipals) == 0 && g.cfg.Auth == AuthNone:
			return res.id, rule, nil // an open cluster (auth none, no secret)
		case res.err != nil && g.cfg.Auth != AuthNone:
			return res.id, rule, connect.NewError(connect.CodeUnauthenticated, res.err)
		}
		return res.id, rule, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s is internal: only nodes, with the cluster secret or a node certificate, may call it", proc))
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

// recheck tells whether a stream authorized earlier still is: its key not
// revoked, its permissions not removed.
func (g *Guard) recheck(id Identity, rule Rule, req any) error {
	if !g.keyValid(id) {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("api key %s was revoked", id.KeyID))
	}
	if id.Super || id.Node || rule.Open || rule.Need == nil {
		return nil
	}
	for _, p := range rule.Need(req) {
		if !g.allowed(id, p) {
			return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("principal %q lacks permission %s (since the stream began)", id.Principal, p))
		}
	}
	return nil
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

// recheckPeriodically calls check every recheckEvery until stop is called
// or check fails; a failure cancels the stream. stop returns that failure.
func recheckPeriodically(check func() error, cancel func()) (stop func() error) {
	var ended error
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(recheckEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := check(); err != nil {
					mu.Lock()
					ended = err
					mu.Unlock()
					cancel()
					return
				}
			}
		}
	}()
	return func() error {
		close(done)
		mu.Lock()
		defer mu.Unlock()
		return ended
	}
}
