// Package obs holds the observability of a node: the telemetry providers
// (Prometheus metrics through OpenTelemetry, OTLP traces), the API
// interceptors that measure, trace and log every request, the build
// version, and shared conventions such as histogram boundaries. It owns no
// global state: every provider is explicit, so tests read their own.
package obs

import "go.opentelemetry.io/otel/metric"

// LatencyBuckets are histogram boundaries in seconds, from 0.5 ms to 10 s.
var LatencyBuckets = metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
