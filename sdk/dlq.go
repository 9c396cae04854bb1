package sdk

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Headers a dead-lettered record carries, besides its own.
const (
	HeaderDLQReason    = "varve.dlq.reason"    // the handler's last error
	HeaderDLQTopic     = "varve.dlq.topic"     // where the record came from
	HeaderDLQPartition = "varve.dlq.partition" // decimal
	HeaderDLQOffset    = "varve.dlq.offset"    // decimal
	HeaderDLQAttempts  = "varve.dlq.attempts"  // decimal
	HeaderDLQTimestamp = "varve.dlq.timestamp" // the original timestamp, RFC 3339 with milliseconds
)

// DeadLetterOptions configures Client.DeadLetter.
type DeadLetterOptions struct {
	// Topic receives the records that failed (required; it must exist).
	Topic string
	// MaxAttempts is how many times the handler is tried; 0 means 3.
	MaxAttempts int
	// Backoff is the wait between attempts, doubled each time; 0 means
	// 100 ms.
	Backoff time.Duration
}

// DeadLetter wraps handler so that a record whose handler fails
// MaxAttempts times is produced to the dead-letter topic — same key, value
// and headers, plus varve.dlq.* headers saying why and where it came from —
// and the wrapped handler returns nil: the consumer moves on (and may
// commit past it). It returns an error only when the record could not be
// dead-lettered either (or ctx ended), and then the record must not be
// committed. The record keeps its key, so the DLQ topic partitions it by
// key like any producer.
func (c *Client) DeadLetter(opts DeadLetterOptions, handler func(context.Context, Record) error) func(context.Context, Record) error {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 100 * time.Millisecond
	}
	return func(ctx context.Context, r Record) error {
		if opts.Topic == "" {
			return errors.New("dead letter: no DeadLetterOptions.Topic")
		}
		var err error
		wait := opts.Backoff
		for attempt := 1; attempt <= opts.MaxAttempts; attempt++ {
			if err = handler(ctx, r); err == nil {
				return nil
			}
			if attempt < opts.MaxAttempts {
				if serr := sleepCtx(ctx, wait); serr != nil {
					return fmt.Errorf("handle %s/%d at offset %d: %w (after %v)", r.Topic, r.Partition, r.Offset, serr, err)
				}
				wait *= 2
			}
		}
		dl := Record{Key: r.Key, Value: r.Value}
		dl.Headers = append(dl.Headers, r.Headers...)
		dl.Headers = append(dl.Headers,
			Header{Key: HeaderDLQReason, Value: []byte(err.Error())},
			Header{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
			Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
			Header{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(opts.MaxAttempts))},
			Header{Key: HeaderDLQTimestamp, Value: []byte(r.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z07:00"))},
		)
		retry := defaultRetry()
		for attempt := 0; ; attempt++ {
			_, perr := c.Produce(ctx, opts.Topic, []Record{dl})
			if perr == nil {
				return nil
			}
			if !Retriable(perr) || attempt >= retry.retries || sleepCtx(ctx, retry.delay(perr, attempt)) != nil {
				return fmt.Errorf("dead-letter %s/%d at offset %d to %s after %d failed attempts (%v): %w",
					r.Topic, r.Partition, r.Offset, opts.Topic, opts.MaxAttempts, err, perr)
			}
		}
	}
}
