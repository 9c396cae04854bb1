package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata"
)

// Produce v3 is the first with record batches (magic 2), the only format
// Varve stores; v12 and v13 (topic ids) are left out. ApiVersions lists
// Produce from v0 all the same, as Kafka 4.0 does (KAFKA-18659):
// librdkafka up to 2.11 (kcat, confluent-kafka) compresses gzip, snappy
// and lz4 only for a broker whose Produce versions include v0, and sends
// its batches uncompressed otherwise. A v0-v2 request is answered
// UNSUPPORTED_VERSION (handleProduce).
func init() {
	register(0, 0, 11, handleProduce)
	register(22, 0, 4, handleInitProducerID)
}

// produceErrorCode is errorCode for a produce: a batch Varve refuses is
// INVALID_RECORD (final), not the retriable CORRUPT_MESSAGE.
func produceErrorCode(err error) int16 {
	if errors.Is(err, metadata.ErrInvalidArgument) && !errors.Is(err, metadata.ErrPartitionOutOfRange) {
		return kerr.InvalidRecord.Code
	}
	return errorCode(err)
}

// handleProduce appends each topic's partitions with one
// Ingester.ProduceBatches call (every topic at once, so they share a
// flush). Every acks value waits for the commit: acks=1 and acks=0 are as
// durable as acks=-1 here (acks=0 sends no answer).
func handleProduce(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.ProduceRequest)
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	if req.TransactionID != nil {
		// Never reached by a client that reads ApiVersions (no
		// transactional APIs), but a hand-made request is answered.
		for _, rt := range req.Topics {
			t := kmsg.NewProduceResponseTopic()
			t.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				p := kmsg.NewProduceResponseTopicPartition()
				p.Partition = rp.Partition
				p.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
				msg := "Varve does not support transactions"
				p.ErrorMessage = &msg
				t.Partitions = append(t.Partitions, p)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp, nil
	}
	if c.s.d.In == nil {
		// A fetch-only node: the client asks Metadata again, which
		// names ingest nodes as leaders.
		for _, rt := range req.Topics {
			t := kmsg.NewProduceResponseTopic()
			t.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				p := kmsg.NewProduceResponseTopicPartition()
				p.Partition, p.BaseOffset = rp.Partition, -1
				p.ErrorCode = kerr.NotLeaderForPartition.Code
				t.Partitions = append(t.Partitions, p)
			}
			resp.Topics = append(resp.Topics, t)
		}
		if req.Acks == 0 {
			return nil, nil
		}
		return resp, nil
	}
	if req.Version < 3 {
		// Listed in ApiVersions only for librdkafka's sake (init):
		// message sets v0 and v1 are not stored.
		err := fmt.Errorf("produce v%d (message format v0/v1): this listener takes Produce v3 and later (record batches v2)", req.Version)
		for _, rt := range req.Topics {
			t := kmsg.NewProduceResponseTopic()
			t.Topic = rt.Topic
			t.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
			for j, rp := range rt.Partitions {
				t.Partitions[j] = kmsg.NewProduceResponseTopicPartition()
				t.Partitions[j].Partition = rp.Partition
			}
			fail(&t, kerr.UnsupportedVersion.Code, err)
			resp.Topics = append(resp.Topics, t)
		}
		if req.Acks == 0 {
			return nil, nil
		}
		return resp, nil
	}
	if q := c.quotas(); q != nil {
		n := 0
		for _, rt := range req.Topics {
			for _, rp := range rt.Partitions {
				n += len(rp.Records)
			}
		}
		resp.ThrottleMillis = c.throttle.set(q.KafkaProduceThrottle(c.id, n))
	}
	if req.TimeoutMillis > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeoutOf(req.TimeoutMillis))
		defer cancel()
	}
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(req.Topics))
	var wg sync.WaitGroup
	for i := range req.Topics {
		rt := &req.Topics[i]
		out := &resp.Topics[i]
		*out = kmsg.NewProduceResponseTopic()
		out.Topic = rt.Topic
		out.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		for j := range rt.Partitions {
			out.Partitions[j] = kmsg.NewProduceResponseTopicPartition()
			out.Partitions[j].Partition = rt.Partitions[j].Partition
		}
		if !c.allowed(authz.Topic, rt.Topic, authz.Produce) {
			fail(out, kerr.TopicAuthorizationFailed.Code, fmt.Errorf("principal %q may not produce to topic %q", c.id.Principal, rt.Topic))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			produceTopic(ctx, c, rt, out)
		}()
	}
	wg.Wait()
	if req.Acks == 0 {
		return nil, nil
	}
	return resp, nil
}

func fail(out *kmsg.ProduceResponseTopic, code int16, err error) {
	for j := range out.Partitions {
		out.Partitions[j].ErrorCode = code
		out.Partitions[j].ErrorMessage = errorMessage(err)
		out.Partitions[j].BaseOffset = -1
	}
}

// produceTopic appends one topic's partitions, all or none: a partition
// refused (a bad batch, unknown) fails the topic's others with the
// same error, since Varve accepts a request's batches together.
func produceTopic(ctx context.Context, c *conn, rt *kmsg.ProduceRequestTopic, out *kmsg.ProduceResponseTopic) {
	bs := make([]ingest.Batches, 0, len(rt.Partitions))
	var idem *ingest.Idempotence
	for _, rp := range rt.Partitions {
		if len(rp.Records) == 0 {
			fail(out, kerr.InvalidRecord.Code, fmt.Errorf("produce to %q partition %d: no records", rt.Topic, rp.Partition))
			return
		}
		h, err := readProducer(rp.Records)
		if err != nil {
			fail(out, kerr.UnsupportedForMessageFormat.Code, fmt.Errorf("produce to %q partition %d: %w", rt.Topic, rp.Partition, err))
			return
		}
		if h.ProducerID >= 0 {
			if idem == nil {
				idem = &ingest.Idempotence{ProducerID: h.ProducerID, Epoch: int32(h.ProducerEpoch), Sequences: map[int32]int32{}}
			} else if idem.ProducerID != h.ProducerID || idem.Epoch != int32(h.ProducerEpoch) {
				fail(out, kerr.InvalidRecord.Code, fmt.Errorf("produce to %q: two producers (%d and %d) in one request", rt.Topic, idem.ProducerID, h.ProducerID))
				return
			}
			idem.Sequences[rp.Partition] = h.BaseSequence
		}
		bs = append(bs, ingest.Batches{Partition: rp.Partition, Bytes: rp.Records})
	}
	res, err := c.s.d.In.ProduceBatches(ctx, rt.Topic, bs, idem)
	if err != nil {
		c.s.log.Debug("kafka produce refused", "client", c.clientID, "topic", rt.Topic, "err", err)
		fail(out, produceErrorCode(err), err)
		return
	}
	for j, r := range res {
		out.Partitions[j].BaseOffset = r.Base
		out.Partitions[j].LogAppendTime = -1
	}
}

func handleInitProducerID(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.InitProducerIDRequest)
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		return resp, nil
	}
	if !c.allowed(authz.Cluster, "", authz.Produce) && !c.anyTopicAllowed(authz.Produce) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp, nil
	}
	id := int64(0)
	if req.ProducerID >= 0 && req.ProducerEpoch >= 0 {
		id = req.ProducerID // KIP-360: bump the epoch of this producer
	}
	initProducer := func(id int64) (metadata.Producer, error) {
		if c.s.d.In == nil { // a fetch-only node: straight to etcd
			return c.s.d.Meta.InitProducer(ctx, id, c.s.d.ProducerStateTTL)
		}
		return c.s.d.In.InitProducer(ctx, id)
	}
	p, err := initProducer(id)
	if err == nil && p.Epoch > math.MaxInt16 {
		// Kafka's epochs are 16 bits: a producer that bumped past them
		// starts over as a new id.
		p, err = initProducer(0)
	}
	if err != nil {
		resp.ErrorCode = errorCode(err)
		if errors.Is(err, metadata.ErrUnknownProducer) {
			resp.ErrorCode = kerr.InvalidProducerIDMapping.Code
		}
		return resp, nil
	}
	resp.ProducerID, resp.ProducerEpoch = p.ID, int16(p.Epoch)
	return resp, nil
}

// batchProducer are the producer fields of a batch header.
type batchProducer struct {
	ProducerID    int64
	ProducerEpoch int16
	BaseSequence  int32
}

// readProducer reads the producer fields of the first batch of b; the
// ingester checks everything else (CRC, framing, every batch).
func readProducer(b []byte) (batchProducer, error) {
	const headerSize, magicAt, producerAt = 61, 16, 43
	if len(b) < headerSize {
		return batchProducer{}, fmt.Errorf("%d bytes, less than a record batch header", len(b))
	}
	if m := int8(b[magicAt]); m != 2 {
		return batchProducer{}, fmt.Errorf("message format (magic) %d: Varve takes record batches v2 (Kafka 0.11 and later)", m)
	}
	return batchProducer{
		ProducerID:    int64(binary.BigEndian.Uint64(b[producerAt:])),
		ProducerEpoch: int16(binary.BigEndian.Uint16(b[producerAt+8:])),
		BaseSequence:  int32(binary.BigEndian.Uint32(b[producerAt+10:])),
	}, nil
}
