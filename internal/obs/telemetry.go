package obs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ServiceName is the OpenTelemetry service.name of every node.
const ServiceName = "varve"

// Config says what a node's telemetry describes and where traces go.
type Config struct {
	// NodeID and Roles become resource attributes (varve.node.id,
	// varve.roles) of every metric (target_info) and span.
	NodeID string
	Roles  []string
	// OTLPEndpoint receives traces over OTLP/gRPC; empty: no tracing.
	// host:port is plaintext; http://host:port plaintext, https://host:port
	// TLS.
	OTLPEndpoint string
}

// CheckOTLPEndpoint says what is wrong with an otlp_endpoint setting.
func CheckOTLPEndpoint(ep string) error {
	if ep == "" {
		return nil
	}
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil {
			return fmt.Errorf("otlp_endpoint %q: %w", ep, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("otlp_endpoint %q: want host:port, http://host:port or https://host:port (OTLP over gRPC)", ep)
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(ep); err != nil {
		return fmt.Errorf("otlp_endpoint %q: want host:port, http://host:port or https://host:port (OTLP over gRPC): %w", ep, err)
	}
	return nil
}

// Telemetry is a node's metrics and traces: explicit providers, never the
// OpenTelemetry globals, so tests (and several nodes in one process) each
// read their own.
type Telemetry struct {
	// Registry is what /metrics serves: the OpenTelemetry meters, the Go
	// runtime and process collectors, and varve_build_info.
	Registry *prometheus.Registry
	Meter    *sdkmetric.MeterProvider
	// Tracer is nil when tracing is off (no otlp_endpoint): the roles then
	// create no spans at all.
	Tracer     trace.TracerProvider
	Propagator propagation.TextMapPropagator
	Resource   *resource.Resource

	tp *sdktrace.TracerProvider // nil when tracing is off
}

// New builds the providers. The OTLP exporter connects lazily: an
// unreachable collector costs dropped spans, never a failed start.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if err := CheckOTLPEndpoint(cfg.OTLPEndpoint); err != nil {
		return nil, err
	}
	b := BuildInfo()
	res := resource.NewSchemaless(
		attribute.String("service.name", ServiceName),
		attribute.String("service.version", b.Version),
		attribute.String("service.instance.id", cfg.NodeID),
		attribute.String("varve.node.id", cfg.NodeID),
		attribute.String("varve.roles", strings.Join(cfg.Roles, ",")),
		attribute.String("varve.revision", b.Revision),
	)
	t := &Telemetry{
		Registry:   prometheus.NewRegistry(),
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Resource:   res,
	}
	t.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "varve_build_info",
		Help:        "Always 1; the labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	info.Set(1)
	t.Registry.MustRegister(info)
	// Without scope labels: every series would otherwise carry
	// otel_scope_name/otel_scope_version/otel_scope_schema_url.
	exp, err := otelprom.New(otelprom.WithRegisterer(t.Registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("metrics exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithReader(exp), sdkmetric.WithResource(res)}
	if cfg.OTLPEndpoint == "" {
		// No traces for an exemplar to name: skip the trace-based filter's
		// span lookup on every measurement.
		mopts = append(mopts, sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	}
	t.Meter = sdkmetric.NewMeterProvider(mopts...)
	if cfg.OTLPEndpoint != "" {
		var opts []otlptracegrpc.Option
		if strings.Contains(cfg.OTLPEndpoint, "://") {
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.OTLPEndpoint))
		} else {
			opts = append(opts, otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint), otlptracegrpc.WithInsecure())
		}
		texp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			_ = t.Meter.Shutdown(context.Background())
			return nil, fmt.Errorf("otlp trace exporter for %s: %w", cfg.OTLPEndpoint, err)
		}
		t.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(texp), sdktrace.WithResource(res))
		t.Tracer = t.tp
	}
	return t, nil
}

// Tracing reports whether spans are exported.
func (t *Telemetry) Tracing() bool { return t.tp != nil }

// MetricsHandler serves the registry in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{})
}

// Shutdown exports the spans still buffered (within ctx) and stops the
// providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	if t.tp != nil {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := t.tp.Shutdown(sctx); err != nil {
			errs = append(errs, fmt.Errorf("trace export: %w", err))
		}
		cancel()
	}
	if err := t.Meter.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
