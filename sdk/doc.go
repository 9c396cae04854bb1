// Package sdk is the Go client of Varve.
//
// It owns the client side of the public API: a [Client] for administration
// and plain calls (one RPC each), a batching asynchronous [Producer] with
// retries, an assigned-partition [Consumer] that long-polls partitions
// concurrently, and [Client.Tail], which follows one partition over the
// server-streaming Subscribe RPC.
//
// sdk imports only the generated API (gen/varve/v1), connect, the standard
// library, google.golang.org/genproto's errdetails (to honour RetryInfo) and
// the OpenTelemetry API with connectrpc.com/otelconnect (for
// WithTracerProvider).
// It must never import server packages (node, ingest, query, metadata, tier):
// everything it knows about a cluster it learns through the API.
//
// Errors returned by the SDK wrap the *connect.Error of the failing call with
// what was attempted and on what, so callers can branch with
// connect.CodeOf(err) (for example connect.CodeNotFound for an unknown topic).
//
// Delivery is at least once: the producer retries batches that failed with a
// retriable code (Unavailable, ResourceExhausted, DeadlineExceeded, Aborted),
// and a batch whose response was lost may be stored twice.
package sdk
