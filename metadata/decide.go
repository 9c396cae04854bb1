package metadata

import (
	"encoding/json"
	"fmt"
	"time"
)

// This file exports the commit's per-block decisions for the sequencer
// (package sequencer), so that it decides exactly as the direct commit
// transaction does.

// ValidateAppends checks appends as Commit does before it writes anything:
// each partition once, records in every block, producer batches that fit
// their block, at most MaxProducersPerBlock producers per block.
func ValidateAppends(commitID string, appends []Append) error {
	seen := make(map[string]map[int32]bool)
	for _, a := range appends {
		if seen[a.Topic] == nil {
			seen[a.Topic] = make(map[int32]bool)
		}
		if seen[a.Topic][a.Partition] {
			return fmt.Errorf("%w: commit %s: partition %s/%d appears twice", ErrInvalidArgument, commitID, a.Topic, a.Partition)
		}
		seen[a.Topic][a.Partition] = true
		if a.Records <= 0 {
			return fmt.Errorf("%w: commit %s: block for %s/%d has no records", ErrInvalidArgument, commitID, a.Topic, a.Partition)
		}
		next := int64(0)
		for _, b := range a.Batches {
			if b.ID <= 0 || b.Count <= 0 || b.Index < next || b.Index+int64(b.Count) > a.Records {
				return fmt.Errorf("%w: commit %s: block for %s/%d: producer batch %+v does not fit its %d records", ErrInvalidArgument, commitID, a.Topic, a.Partition, b, a.Records)
			}
			next = b.Index + int64(b.Count)
		}
		if distinctProducers(a.Batches) > MaxProducersPerBlock {
			return fmt.Errorf("%w: commit %s: block for %s/%d holds batches of more than %d producers", ErrInvalidArgument, commitID, a.Topic, a.Partition, MaxProducersPerBlock)
		}
	}
	return nil
}

// CheckBatch decides producer batch b on topic/p as the commit transaction
// does, given the producer's epoch (known false: its id key is absent) and
// its state on the partition (nil: none): accepted (dupBase < 0, nil), a
// duplicate (dupBase is the original first offset) or refused.
func CheckBatch(known bool, epoch int32, st *ProducerState, b ProducerBatch, topic string, p int32) (dupBase int64, err error) {
	var info *producerInfo
	if known {
		info = &producerInfo{Epoch: epoch}
	}
	return checkBatch(info, st, b, topic, p)
}

// NewProducerView builds a view from a producer's epoch (known false: no
// such producer) and its states per partition of topic, as held by the
// sequencer. The states are shared, not copied.
func NewProducerView(id int64, topic string, known bool, epoch int32, states map[int32]*ProducerState) *ProducerView {
	v := RememberedView(id, topic, epoch, states)
	if !known {
		v.info = nil
	}
	return v
}

// ProducerInfo is a producer's identity as InitProducer stored it.
type ProducerInfo struct {
	Epoch int32
	Lease int64
	TTL   time.Duration
}

// DecodeProducerInfo decodes the value of a producer's id key.
func DecodeProducerInfo(v []byte) (ProducerInfo, error) {
	var info producerInfo
	if err := json.Unmarshal(v, &info); err != nil {
		return ProducerInfo{}, fmt.Errorf("decode producer info: %w", err)
	}
	return ProducerInfo{Epoch: info.Epoch, Lease: info.Lease, TTL: time.Duration(info.TTLms) * time.Millisecond}, nil
}

// DecodePartitionState decodes the value of a partition key.
func DecodePartitionState(v []byte) (PartitionState, error) {
	var st PartitionState
	if err := json.Unmarshal(v, &st); err != nil {
		return st, fmt.Errorf("decode partition state: %w", err)
	}
	return st, nil
}
