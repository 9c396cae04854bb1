// Package bench owns Varve's load generation: payloads, workloads and (with
// `varve bench`) peers, reports and plots. Benchmarks across the tree use its
// payloads so figures are comparable.
//
// bench is a client of Varve's API; it never reaches into a node's internals.
package bench
