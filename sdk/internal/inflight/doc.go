// Package inflight keeps an idempotent producer's batches in flight: the
// producer's identity and sequence numbers (Sequencer) and, per topic, the
// order in which batches are sent, resent after failures and completed
// within their delivery deadline (Window). It does no I/O: the sdk package
// sends the requests and tells it the outcomes. See docs/idempotence.md.
package inflight
