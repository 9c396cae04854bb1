// Package node assembles a running Varve node: it connects to etcd and the
// object store, starts the roles it is given (ingest, fetch), serves the
// Connect API (also gRPC and gRPC-Web, over h2c) with reflection and health,
// /healthz, /readyz and /metrics on one HTTP server, and shuts down by
// draining: stop accepting, flush, commit, answer, exit.
//
// node maps the errors of the packages below it onto Connect codes; it holds
// no streaming logic of its own. `varve dev` (StartDev) is the same node with
// an embedded etcd and the filesystem store. What a request may cost
// (internal/reqlimit), strict JSON (internal/strictjson) and telemetry
// (internal/obs) are packages of their own that node mounts.
package node
