package guard

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/varve-io/varve/internal/authz"
)

const flightPrefix = "/arrow.flight.protocol.FlightService/"

// FlightRules maps every Flight method to what it needs. Varve's Flight
// server is read-only: the methods it does not implement still need admin
// on the cluster, so they answer PERMISSION_DENIED to others before
// UNIMPLEMENTED.
var FlightRules = map[string]Rule{
	flightPrefix + "GetFlightInfo":  {Need: flightDescriptorPerm},
	flightPrefix + "PollFlightInfo": {Need: flightDescriptorPerm},
	flightPrefix + "GetSchema":      {Need: flightDescriptorPerm},
	flightPrefix + "DoGet": {Need: need(func(t *flight.Ticket) []Perm {
		var tk struct {
			Topic string `json:"topic"`
		}
		_ = json.Unmarshal(t.GetTicket(), &tk) // a bad ticket asks for topic "": refused unless allowed
		return []Perm{topic(tk.Topic, authz.Consume)}
	})},
	flightPrefix + "ListFlights": {Open: true},
	flightPrefix + "Handshake":   {Need: clusterAdmin},
	flightPrefix + "DoPut":       {Need: clusterAdmin},
	flightPrefix + "DoExchange":  {Need: clusterAdmin},
	flightPrefix + "DoAction":    {Need: clusterAdmin},
	flightPrefix + "ListActions": {Need: clusterAdmin},
}

// flightDescriptorPerm: a PATH descriptor [topic] or a CMD holding
// {"topic": ...} as JSON.
func flightDescriptorPerm(req any) []Perm {
	d, ok := req.(*flight.FlightDescriptor)
	if !ok {
		return nil
	}
	var name string
	switch d.GetType() {
	case flight.DescriptorPATH:
		if len(d.GetPath()) > 0 {
			name = d.GetPath()[0]
		}
	case flight.DescriptorCMD:
		var c struct {
			Topic string `json:"topic"`
		}
		_ = json.Unmarshal(d.GetCmd(), &c)
		name = c.Topic
	}
	return []Perm{topic(name, authz.Consume)}
}

// flightIdentity authenticates a Flight call from its metadata and TLS
// peer.
func (g *Guard) flightIdentity(ctx context.Context) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	get := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	var certs []*x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			certs = ti.State.PeerCertificates
		}
	}
	id, err := g.authenticate(get("authorization"), get(strings.ToLower(SecretHeader)), certs)
	if err != nil {
		return id, status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Node {
		return id, status.Error(codes.PermissionDenied, "the cluster secret is only for the internal BlockService")
	}
	return id, nil
}

func (g *Guard) flightCheck(ctx context.Context, method string, req any) (Identity, error) {
	id, err := g.flightIdentity(ctx)
	if err != nil {
		g.denied(id, method, "", err)
		return id, err
	}
	rule, ok := FlightRules[method]
	if !ok {
		err := status.Errorf(codes.PermissionDenied, "%s has no access rule: refused", method)
		g.denied(id, method, "", err)
		return id, err
	}
	if id.Super || rule.Open {
		return id, nil
	}
	for _, p := range rule.Need(req) {
		if !g.allowed(id, p) {
			err := status.Errorf(codes.PermissionDenied, "principal %q lacks permission %s", id.Principal, p)
			g.denied(id, method, "", err)
			return id, err
		}
	}
	return id, nil
}

// FlightOptions are the gRPC server options that put the guard in front of
// the Arrow Flight server.
func (g *Guard) FlightOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if _, err := g.flightCheck(ctx, info.FullMethod, req); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			id, err := g.flightIdentity(ss.Context())
			if err != nil {
				g.denied(id, info.FullMethod, "", err)
				return err
			}
			ctx, cancel := context.WithCancel(ss.Context())
			defer cancel()
			fs := &flightStream{ServerStream: ss, ctx: ctx, g: g, method: info.FullMethod, id: id}
			// Like the Connect streams: checked again every recheckEvery
			// (a stream waiting on the client or the bucket) and before each
			// message, so a revoked key or a removed ACL ends a DoGet opened
			// before.
			stop := recheckPeriodically(fs.recheck, cancel)
			err = h(srv, fs)
			stop()
			if refused := fs.refusal(); refused != nil {
				g.denied(id, info.FullMethod, "", refused)
				return refused
			}
			return err
		}),
	}
}

// flightRecheck tells whether a Flight stream authorized earlier still is.
func (g *Guard) flightRecheck(id Identity, method string, req any) error {
	if !g.keyValid(id) {
		return status.Errorf(codes.Unauthenticated, "api key %s was revoked", id.KeyID)
	}
	rule := FlightRules[method]
	if id.Super || rule.Open || rule.Need == nil {
		return nil
	}
	for _, p := range rule.Need(req) {
		if !g.allowed(id, p) {
			return status.Errorf(codes.PermissionDenied, "principal %q lacks permission %s (since the stream began)", id.Principal, p)
		}
	}
	return nil
}

// flightStream authorizes a stream on its first message, checks it again
// before each answer, and filters ListFlights to the topics the principal
// may describe.
type flightStream struct {
	grpc.ServerStream
	ctx    context.Context // cancelled when a recheck fails
	g      *Guard
	method string
	id     Identity

	mu      sync.Mutex // the fields below: RecvMsg sets, the rechecks read
	checked bool
	req     any
	refused error // the first failed recheck
}

// refusal is the error of the first failed recheck (nil: none failed).
func (s *flightStream) refusal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

func (s *flightStream) Context() context.Context { return s.ctx }

func (s *flightStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.mu.Lock()
	checked := s.checked
	s.mu.Unlock()
	if !checked {
		if _, err := s.g.flightCheck(s.Context(), s.method, m); err != nil {
			return err
		}
		s.mu.Lock()
		s.checked, s.req = true, m
		s.mu.Unlock()
	}
	return nil
}

// recheck checks an authorized stream again (nil before authorization)
// and remembers the first refusal.
func (s *flightStream) recheck() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused != nil || !s.checked {
		return s.refused
	}
	s.refused = s.g.flightRecheck(s.id, s.method, s.req)
	return s.refused
}

func (s *flightStream) SendMsg(m any) error {
	s.mu.Lock()
	checked := s.checked
	s.mu.Unlock()
	if !checked {
		return status.Error(codes.PermissionDenied, "flight stream answered before its request was authorized")
	}
	if err := s.recheck(); err != nil {
		return err
	}
	if info, ok := m.(*flight.FlightInfo); ok && s.method == flightPrefix+"ListFlights" && !s.id.Super {
		if p := info.GetFlightDescriptor().GetPath(); len(p) > 0 && !s.g.allowed(s.id, topic(p[0], authz.Describe)) {
			return nil // not for this principal
		}
	}
	return s.ServerStream.SendMsg(m)
}
