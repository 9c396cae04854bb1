package node

import (
	"context"
	"net/http"
	"net/http/pprof"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/internal/obs"
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
	return []connect.HandlerOption{connect.WithInterceptors(append(ics, api)...)}, nil
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
