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

// produceGroup is the partitions of a topic in one produce request that
// carry one producer's batches of one epoch (or none: producer id -1).
type produceGroup struct {
	idem *ingest.Idempotence
	bs   []ingest.Batches
	at   []int // each batch's index in the response's partitions
}

// produceTopic appends one topic's partitions: one Ingester.ProduceBatches
// per producer and epoch among them (a Kafka client keeps a sent batch's
// epoch on its retries, so one request may carry two epochs of one
// producer). Varve accepts a call's batches together; when it refuses one
// partition's batch (out of order, too large, invalid), each partition is
// appended alone, so that only the refused ones fail, as Kafka answers
// them: a producer fails its sequences only where they are wrong.
func produceTopic(ctx context.Context, c *conn, rt *kmsg.ProduceRequestTopic, out *kmsg.ProduceResponseTopic) {
	var groups []*produceGroup
	byProducer := map[[2]int64]*produceGroup{}
	for j, rp := range rt.Partitions {
		if len(rp.Records) == 0 {
			fail(out, kerr.InvalidRecord.Code, fmt.Errorf("produce to %q partition %d: no records", rt.Topic, rp.Partition))
			return
		}
		h, err := readProducer(rp.Records)
		if err != nil {
			fail(out, kerr.UnsupportedForMessageFormat.Code, fmt.Errorf("produce to %q partition %d: %w", rt.Topic, rp.Partition, err))
			return
		}
		key := [2]int64{-1, -1}
		if h.ProducerID >= 0 {
			key = [2]int64{h.ProducerID, int64(h.ProducerEpoch)}
		}
		g := byProducer[key]
		if g == nil {
			g = &produceGroup{}
			if h.ProducerID >= 0 {
				g.idem = &ingest.Idempotence{ProducerID: h.ProducerID, Epoch: int32(h.ProducerEpoch), Sequences: map[int32]int32{}}
			}
			byProducer[key] = g
			groups = append(groups, g)
		}
		if g.idem != nil {
			g.idem.Sequences[rp.Partition] = h.BaseSequence
		}
		g.bs = append(g.bs, ingest.Batches{Partition: rp.Partition, Bytes: rp.Records})
		g.at = append(g.at, j)
	}
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.produceGroup(ctx, rt.Topic, g, out)
		}()
	}
	wg.Wait()
}

// produceGroup appends g and answers its partitions in out.
func (c *conn) produceGroup(ctx context.Context, topic string, g *produceGroup, out *kmsg.ProduceResponseTopic) {
	res, err := c.appendBatches(ctx, topic, g.bs, g.idem)
	if err == nil {
		for i, r := range res {
			p := &out.Partitions[g.at[i]]
			p.BaseOffset, p.LogAppendTime = r.Base, -1
		}
		return
	}
	if len(g.bs) > 1 && partitionRefusal(err) {
		// Which partition? Each alone: a refused call changed nothing.
		var wg sync.WaitGroup
		for i := range g.bs {
			one := &produceGroup{bs: g.bs[i : i+1], at: g.at[i : i+1]}
			if g.idem != nil {
				p := g.bs[i].Partition
				one.idem = &ingest.Idempotence{ProducerID: g.idem.ProducerID, Epoch: g.idem.Epoch, Sequences: map[int32]int32{p: g.idem.Sequences[p]}}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.produceGroup(ctx, topic, one, out)
			}()
		}
		wg.Wait()
		return
	}
	c.s.log.Debug("kafka produce refused", "client", c.clientID, "topic", topic, "err", err)
	for _, j := range g.at {
		p := &out.Partitions[j]
		p.ErrorCode, p.ErrorMessage, p.BaseOffset = produceErrorCode(err), errorMessage(err), -1
	}
}

// appendBatches is Ingester.ProduceBatches, taking a producer epoch its
// client bumped itself: after a refused batch a Kafka producer moves to
// the next epoch without InitProducerId and starts its sequences over
// (KIP-360), which Kafka accepts; Varve then advances the producer's
// epoch (fencing the older ones) and appends again.
func (c *conn) appendBatches(ctx context.Context, topic string, bs []ingest.Batches, idem *ingest.Idempotence) ([]ingest.BatchResult, error) {
	res, err := c.s.d.In.ProduceBatches(ctx, topic, bs, idem)
	if err != nil && idem != nil && errors.Is(err, metadata.ErrEpochAhead) {
		if _, aerr := c.s.d.In.AdvanceProducer(ctx, idem.ProducerID, idem.Epoch); aerr != nil {
			return nil, aerr
		}
		res, err = c.s.d.In.ProduceBatches(ctx, topic, bs, idem)
	}
	return res, err
}

// partitionRefusal reports whether err refuses a batch for what it holds
// (one partition's, perhaps), not for the node's state: the partitions are
// then worth appending one by one.
func partitionRefusal(err error) bool {
	for _, e := range []error{metadata.ErrInvalidArgument, metadata.ErrOutOfOrderSequence, metadata.ErrProducerFenced,
		metadata.ErrUnknownProducer, metadata.ErrPartitionOutOfRange, metadata.ErrBlockRefused, ingest.ErrRecordTooLarge} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
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
