package sdk

import "github.com/varve-io/varve/internal/apierr"

// Reasons the cluster attaches to errors (a google.rpc.ErrorInfo of domain
// varve.io) for clients to branch on; ErrorReason reads them. They are the
// node's own names (internal/apierr), re-exported.
const (
	// Idempotent producer refusals (FAILED_PRECONDITION).
	ReasonProducerFenced     = apierr.ProducerFenced
	ReasonOutOfOrderSequence = apierr.OutOfOrderSequence
	ReasonUnknownProducer    = apierr.UnknownProducer

	// Consumer group errors.
	ReasonUnknownMember        = apierr.UnknownMember
	ReasonStaleGeneration      = apierr.StaleGeneration
	ReasonNotAssigned          = apierr.NotAssigned
	ReasonGroupActive          = apierr.GroupActive
	ReasonOffsetRegress        = apierr.OffsetRegress
	ReasonInconsistentStrategy = apierr.InconsistentStrategy
	ReasonGroupNotFound        = apierr.GroupNotFound
)

// ErrorReason returns the reason the cluster gave for err (one of the
// Reason constants), or "" if it gave none.
func ErrorReason(err error) string { return apierr.ReasonOf(err) }
