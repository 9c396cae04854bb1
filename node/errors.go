package node

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/apierr"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
)

// toConnect gives an error its Connect code, deliberately: bad input is
// InvalidArgument, unknown topics NotFound, backpressure ResourceExhausted
// with retry advice, outages Unavailable, unreadable data DataLoss.
func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	code := connect.CodeInternal
	switch {
	case errors.Is(err, metadata.ErrInvalidArgument),
		errors.Is(err, metadata.ErrPartitionOutOfRange),
		errors.Is(err, ingest.ErrRecordTooLarge):
		code = connect.CodeInvalidArgument
	case errors.Is(err, metadata.ErrTopicNotFound), errors.Is(err, groups.ErrGroupNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, metadata.ErrTopicExists):
		code = connect.CodeAlreadyExists
	case errors.Is(err, groups.ErrUnknownMember), errors.Is(err, groups.ErrStaleGeneration), errors.Is(err, groups.ErrNotAssigned),
		errors.Is(err, groups.ErrGroupActive), errors.Is(err, groups.ErrOffsetRegress), errors.Is(err, groups.ErrInconsistentStrategy),
		errors.Is(err, metadata.ErrProducerFenced), errors.Is(err, metadata.ErrOutOfOrderSequence), errors.Is(err, metadata.ErrUnknownProducer),
		errors.Is(err, metadata.ErrSequencerActive):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, ingest.ErrBackpressure), errors.Is(err, syscall.ENOSPC):
		code = connect.CodeResourceExhausted
	case errors.Is(err, metadata.ErrBlockRefused), errors.Is(err, ingest.ErrClosed), errors.Is(err, ingest.ErrFlushFailed), errors.Is(err, ingest.ErrOutcomeUnknown),
		errors.Is(err, blockcache.ErrUnavailable), metadata.IsUnavailable(err):
		code = connect.CodeUnavailable
	case errors.Is(err, fetch.ErrOffsetOutOfRange):
		code = connect.CodeOutOfRange
	case errors.Is(err, blockcache.ErrDataLoss):
		code = connect.CodeDataLoss
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	}
	out := connect.NewError(code, err)
	if reason := producerErrorReason(err); reason != "" {
		apierr.WithReason(out, reason)
	}
	if code == connect.CodeInternal && metadata.EtcdRefusal(err) != "" {
		// Never a bare etcd message: say what it means for the client.
		out = connect.NewError(code, fmt.Errorf("the metadata store (etcd) refused the request for good: nothing of it was written and retrying will not help; this is a Varve bug, please report it: %w", err))
		apierr.WithReason(out, apierr.MetadataRefused)
	}
	var bp *ingest.BackpressureError
	if errors.As(err, &bp) {
		if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(bp.RetryAfter)}); derr == nil {
			out.AddDetail(d)
		}
	}
	if code == connect.CodeUnavailable && isOutage(err) {
		if d, derr := connect.NewErrorDetail(&errdetails.RetryInfo{RetryDelay: durationpb.New(outageRetryDelay)}); derr == nil {
			out.AddDetail(d)
		}
	}
	return out
}

// outageRetryDelay is the retry advice sent with an outage of etcd or of
// the object store: the etcd client reconnects at least every second.
const outageRetryDelay = time.Second

// isOutage reports an error that ends when etcd or the object store is
// back (as opposed to a node draining or a refused block, which a client
// retries at once).
func isOutage(err error) bool {
	return metadata.IsUnavailable(err) || errors.Is(err, ingest.ErrFlushFailed) ||
		errors.Is(err, ingest.ErrOutcomeUnknown) || errors.Is(err, blockcache.ErrUnavailable)
}

// producerErrorReason names an idempotence refusal for clients to branch on
// (an ErrorInfo reason, as documented on ProduceService).
func producerErrorReason(err error) string {
	switch {
	case errors.Is(err, metadata.ErrProducerFenced):
		return apierr.ProducerFenced
	case errors.Is(err, metadata.ErrOutOfOrderSequence):
		return apierr.OutOfOrderSequence
	case errors.Is(err, metadata.ErrUnknownProducer):
		return apierr.UnknownProducer
	}
	return ""
}
