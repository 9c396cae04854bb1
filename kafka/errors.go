package kafka

import (
	"context"
	"errors"
	"syscall"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/fetch"
	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
	"github.com/varve-io/varve/tier/segment/kafkabatch"
)

// errorCode is the Kafka error code of a Varve error (0 for nil). Codes a
// Kafka client retries on its own (NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT,
// KAFKA_STORAGE_ERROR, …) stand for Varve's outages; the others are final.
func errorCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, metadata.ErrTopicNotFound), errors.Is(err, metadata.ErrPartitionOutOfRange):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, metadata.ErrTopicExists):
		return kerr.TopicAlreadyExists.Code
	case errors.Is(err, ingest.ErrRecordTooLarge), errors.Is(err, kafkabatch.ErrBatchRecordTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, metadata.ErrProducerFenced):
		return kerr.InvalidProducerEpoch.Code
	case errors.Is(err, metadata.ErrOutOfOrderSequence):
		return kerr.OutOfOrderSequenceNumber.Code
	case errors.Is(err, metadata.ErrUnknownProducer):
		return kerr.UnknownProducerID.Code
	case errors.Is(err, fetch.ErrOffsetOutOfRange):
		return kerr.OffsetOutOfRange.Code
	case errors.Is(err, groups.ErrGroupNotFound):
		return kerr.GroupIDNotFound.Code
	case errors.Is(err, groups.ErrGroupActive):
		return kerr.NonEmptyGroup.Code
	case errors.Is(err, groups.ErrUnknownMember):
		return kerr.UnknownMemberID.Code
	case errors.Is(err, groups.ErrStaleGeneration):
		return kerr.IllegalGeneration.Code
	case errors.Is(err, groups.ErrInconsistentStrategy):
		return kerr.InconsistentGroupProtocol.Code
	case errors.Is(err, metadata.ErrInvalidArgument):
		return kerr.InvalidRequest.Code
	case errors.Is(err, ingest.ErrBackpressure), errors.Is(err, syscall.ENOSPC):
		// Retriable for every client; the request changed nothing.
		return kerr.NotEnoughReplicas.Code
	case errors.Is(err, ingest.ErrOutcomeUnknown), errors.Is(err, context.DeadlineExceeded):
		// The records may be stored: an idempotent producer's retry
		// answers the same offsets.
		return kerr.RequestTimedOut.Code
	case errors.Is(err, blockcache.ErrDataLoss):
		return kerr.CorruptMessage.Code
	case errors.Is(err, ingest.ErrClosed):
		return kerr.NotLeaderForPartition.Code
	case errors.Is(err, errNoFetchNode):
		return kerr.LeaderNotAvailable.Code
	case errors.Is(err, ingest.ErrFlushFailed), errors.Is(err, blockcache.ErrUnavailable),
		errors.Is(err, metadata.ErrBlockRefused), metadata.IsUnavailable(err):
		return kerr.KafkaStorageError.Code
	}
	return kerr.UnknownServerError.Code
}

// errorMessage is err's text for responses with an error message field
// (nil without an error).
func errorMessage(err error) *string {
	if err == nil {
		return nil
	}
	s := err.Error()
	return &s
}
