package kafka_test

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// oneRecordBatch is a record batch (magic 2, uncompressed) of one record
// of producer pid at epoch and sequence seq.
func oneRecordBatch(pid int64, epoch int16, seq int32) []byte {
	r := kmsg.Record{Key: []byte("k"), Value: []byte("v")}
	body := r.AppendTo(nil)
	r.Length = int32(len(body) - 1) // the 1-byte varint 0 Length
	rec := r.AppendTo(nil)
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{Magic: 2, FirstTimestamp: now, MaxTimestamp: now, ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, NumRecords: 1, Records: rec}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

type partAnswer struct {
	code int16
	base int64
}

// produceBatchesRaw sends one Produce of the given partitions' batches to topic
// and returns each partition's answer.
func produceBatchesRaw(t *testing.T, cl *kgo.Client, topic string, parts map[int32][]byte) map[int32]partAnswer {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 10000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	for p, b := range parts {
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = p, b
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]partAnswer{}
	for _, tt := range resp.Topics {
		for _, p := range tt.Partitions {
			out[p.Partition] = partAnswer{p.ErrorCode, p.BaseOffset}
		}
	}
	return out
}

// TestProducerEpochBumpedByClient: a Kafka idempotent producer that bumps
// its epoch itself after a refused batch (KIP-360, as franz-go and the
// Java client do) is taken at the new epoch from sequence 0, which fences
// the older epoch; a request carrying batches of two epochs is answered
// per epoch; a partition refused (a sequence gap) fails alone, not its
// request's other partitions.
func TestProducerEpochBumpedByClient(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "bump", 3)
	cl := newClient(t, d)
	ir, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(context.Background(), cl)
	if err != nil || ir.ErrorCode != 0 {
		t.Fatal(err, ir)
	}
	pid, ep := ir.ProducerID, ir.ProducerEpoch
	want := func(step string, got map[int32]partAnswer, exp map[int32]partAnswer) {
		t.Helper()
		for p, e := range exp {
			if got[p] != e {
				t.Fatalf("%s: partition %d answered %+v, want %+v (all: %v)", step, p, got[p], e, got)
			}
		}
	}
	want("epoch 0", produceBatchesRaw(t, cl, "bump", map[int32][]byte{0: oneRecordBatch(pid, ep, 0), 1: oneRecordBatch(pid, ep, 0)}),
		map[int32]partAnswer{0: {0, 0}, 1: {0, 0}})
	want("the client's own bump", produceBatchesRaw(t, cl, "bump", map[int32][]byte{0: oneRecordBatch(pid, ep+1, 0)}),
		map[int32]partAnswer{0: {0, 1}})
	want("a retry at the new epoch beside one at the fenced epoch",
		produceBatchesRaw(t, cl, "bump", map[int32][]byte{0: oneRecordBatch(pid, ep+1, 0), 1: oneRecordBatch(pid, ep, 1)}),
		map[int32]partAnswer{0: {0, 1}, 1: {kerr.InvalidProducerEpoch.Code, -1}})
	want("a sequence gap on one partition only",
		produceBatchesRaw(t, cl, "bump", map[int32][]byte{0: oneRecordBatch(pid, ep+1, 1), 2: oneRecordBatch(pid, ep+1, 5)}),
		map[int32]partAnswer{0: {0, 2}, 2: {kerr.OutOfOrderSequenceNumber.Code, -1}})
	want("an epoch too far ahead", produceBatchesRaw(t, cl, "bump", map[int32][]byte{1: oneRecordBatch(pid, ep+1+2000, 0)}),
		map[int32]partAnswer{1: {kerr.InvalidRecord.Code, -1}})
}
