// Package obs holds observability conventions shared by the roles: histogram
// boundaries and the like. It owns no state.
package obs

import "go.opentelemetry.io/otel/metric"

// LatencyBuckets are histogram boundaries in seconds, from 0.5 ms to 10 s.
var LatencyBuckets = metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
