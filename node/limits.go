package node

import (
	"fmt"

	"github.com/varve-io/varve/metadata"
)

// Request limits: max_request_bytes bounds a request and its inflated size
// (internal/reqlimit does it); these tie that bound to records.

// Size limits that tie API requests and responses to records.
const (
	// RequestEnvelopeBytes is what a produce request needs besides its
	// records' bytes (topic, producer fields, sequences, protobuf framing):
	// a node accepts a topic's max_record_bytes only when a request with
	// one record of that size and this envelope fits max_request_bytes.
	RequestEnvelopeBytes = 1 << 20
	// DefaultMaxRequestBytes lets one request carry the largest record any
	// topic may allow (metadata.MaxMaxRecordBytes) with its envelope.
	DefaultMaxRequestBytes = metadata.MaxMaxRecordBytes + RequestEnvelopeBytes
	// DefaultFetchMaxBytes caps the max_bytes of one fetch, like Kafka's
	// fetch.max.bytes.
	DefaultFetchMaxBytes = 50 << 20
)

// checkRecordFitsRequest refuses a topic record limit that a produce
// request could not carry on this node: the record would be accepted by
// the topic and refused by the transport.
func checkRecordFitsRequest(topic string, maxRecord int32, maxRequest int) error {
	if maxRequest <= 0 || maxRecord <= 0 {
		return nil
	}
	if limit := maxRequest - RequestEnvelopeBytes; int(maxRecord) > limit {
		return fmt.Errorf("%w: topic %q: max_record_bytes %d does not fit in a produce request: this node's max_request_bytes %d allows records of at most %d bytes (max_request_bytes - %d bytes of request envelope); raise max_request_bytes or lower max_record_bytes",
			metadata.ErrInvalidArgument, topic, maxRecord, maxRequest, max(limit, 0), RequestEnvelopeBytes)
	}
	return nil
}

// fetchMaxBytes is the max_bytes a fetch is served with: the request's (0
// means fetch.DefaultMaxBytes) capped at the node's fetch_max_bytes.
func fetchMaxBytes(requested int32, capBytes int) int {
	n := int(requested)
	if capBytes > 0 && n > capBytes {
		return capBytes
	}
	return n
}
