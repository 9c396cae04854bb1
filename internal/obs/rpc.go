package obs

import (
	"context"
	"log/slog"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
)

// ServerInterceptors returns the interceptors every API handler gets, outer
// first: OpenTelemetry metrics and spans per procedure (otelconnect:
// rpc.server.call.duration with rpc.method and rpc.response.status_code,
// a server span continuing the caller's trace), then a debug log line for
// every failed request.
func (t *Telemetry) ServerInterceptors(log *slog.Logger) ([]connect.Interceptor, error) {
	opts := []otelconnect.Option{
		otelconnect.WithMeterProvider(t.Meter),
		otelconnect.WithPropagator(t.Propagator),
		// Continue the client's trace (the SDK propagates it) instead of
		// starting a new one with a link to it.
		otelconnect.WithTrustRemote(),
		otelconnect.WithDurationHistogramOptions(LatencyBuckets),
	}
	if t.Tracing() {
		opts = append(opts, otelconnect.WithTracerProvider(t.Tracer))
	} else {
		opts = append(opts, otelconnect.WithoutTracing())
	}
	oc, err := otelconnect.NewInterceptor(opts...)
	if err != nil {
		return nil, err
	}
	return []connect.Interceptor{oc, FailureLog(log)}, nil
}

// FailureLog logs every request that ends in an error at debug level, with
// its procedure, code and peer.
func FailureLog(log *slog.Logger) connect.Interceptor { return failureLog{log} }

type failureLog struct{ log *slog.Logger }

func (l failureLog) logged(ctx context.Context, spec connect.Spec, peer connect.Peer, start time.Time, err error) {
	if err == nil || !l.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	l.log.LogAttrs(ctx, slog.LevelDebug, "request failed",
		slog.String("procedure", spec.Procedure),
		slog.String("code", connect.CodeOf(err).String()),
		slog.String("peer", peer.Addr),
		slog.String("protocol", peer.Protocol),
		slog.Duration("duration", time.Since(start)),
		slog.String("err", err.Error()))
}

func (l failureLog) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		start := time.Now()
		res, err := next(ctx, req)
		if !req.Spec().IsClient {
			l.logged(ctx, req.Spec(), req.Peer(), start, err)
		}
		return res, err
	}
}

func (l failureLog) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (l failureLog) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		l.logged(ctx, conn.Spec(), conn.Peer(), start, err)
		return err
	}
}
