package node

import (
	"context"
	"net/http"
	"net/http/pprof"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/internal/obs"
	"github.com/varve-io/varve/metadata"
)

// startTelemetry builds the node's metrics and trace providers (see
// docs/observability.md).
func (n *Node) startTelemetry(ctx context.Context) error {
	tel, err := obs.New(ctx, obs.Config{NodeID: n.cfg.NodeID, Roles: n.cfg.Roles, OTLPEndpoint: n.cfg.OTLPEndpoint})
	if err != nil {
		return err
	}
	n.tel, n.meter = tel, tel.Meter
	return nil
}

// telemetryOptions are the handler options every API service gets:
// per-procedure metrics and spans, a debug line per failed request, and the
// per-topic counters and the administrative log of obs.APIInterceptor.
func (n *Node) telemetryOptions() ([]connect.HandlerOption, error) {
	ics, err := n.tel.ServerInterceptors(n.log)
	if err != nil {
		return nil, err
	}
	api, err := obs.APIInterceptor(n.tel.Meter, n.log)
	if err != nil {
		return nil, err
	}
	return []connect.HandlerOption{connect.WithInterceptors(append(ics, api, etcdCaller{})...)}, nil
}

// etcdCaller names a request's etcd calls after its procedure in
// varve_etcd_requests_total (metadata.WithCaller).
type etcdCaller struct{}

func (etcdCaller) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		return next(metadata.WithCaller(ctx, req.Spec().Procedure), req)
	}
}

func (etcdCaller) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (etcdCaller) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(metadata.WithCaller(ctx, conn.Spec().Procedure), conn)
	}
}

// mountTelemetry serves /metrics and, with the pprof setting, /debug/pprof.
func (n *Node) mountTelemetry(mux *http.ServeMux) {
	mux.Handle("/metrics", n.tel.MetricsHandler())
	if n.cfg.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}
