// Package apierr owns the error reasons that cross Varve's API: the reason
// strings of the google.rpc.ErrorInfo detail (domain varve.io) that the node
// attaches to an error and clients branch on, and the one function that reads
// them back. The node and the SDK both use these names; nothing else spells
// them. It imports only connect and the ErrorInfo type.
package apierr

import (
	"errors"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// Domain is the ErrorInfo domain of Varve's reasons.
const Domain = "varve.io"

// Reasons of idempotent producer refusals (FAILED_PRECONDITION).
const (
	ProducerFenced     = "PRODUCER_FENCED"       // a newer instance with the same producer id started
	OutOfOrderSequence = "OUT_OF_ORDER_SEQUENCE" // a batch's first sequence is not the next one
	UnknownProducer    = "UNKNOWN_PRODUCER"      // the producer id is unknown or its state expired
)

// Reasons of consumer group errors.
const (
	UnknownMember        = "UNKNOWN_MEMBER"        // the member's session ended: join again
	StaleGeneration      = "STALE_GENERATION"      // a rebalance is in progress: wait for the next generation
	NotAssigned          = "NOT_ASSIGNED"          // the member does not own the partition
	GroupActive          = "GROUP_ACTIVE"          // the group has members (reset, delete)
	OffsetRegress        = "OFFSET_REGRESS"        // a commit would move an offset backwards
	InconsistentStrategy = "INCONSISTENT_STRATEGY" // members ask for different assignment strategies
	GroupNotFound        = "GROUP_NOT_FOUND"       // no such group
)

// MetadataRefused marks an INTERNAL error whose cause is etcd refusing a
// metadata request for a reason retrying does not cure (one of its limits:
// too many operations, a request too large, a permission): nothing of the
// request was written, and the message names etcd's reason.
const MetadataRefused = "METADATA_REFUSED"

// WithReason adds the ErrorInfo detail naming reason to ce and returns it.
func WithReason(ce *connect.Error, reason string) *connect.Error {
	if d, err := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: reason, Domain: Domain}); err == nil {
		ce.AddDetail(d)
	}
	return ce
}

// ReasonOf returns the Varve reason of err (an ErrorInfo detail of domain
// varve.io on a connect error), or "" if it has none.
func ReasonOf(err error) string {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return ""
	}
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if ei, ok := v.(*errdetails.ErrorInfo); ok && ei.GetDomain() == Domain {
			return ei.GetReason()
		}
	}
	return ""
}
