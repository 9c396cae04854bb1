package seqlog

import (
	"fmt"

	"github.com/varve-io/varve/metadata"
)

// Checkpoint is the sequencer's state after batch Batch: every topic's
// high watermarks and every idempotent producer's state per partition.
// Recovery starts from it and replays the records after it.
type Checkpoint struct {
	Batch uint64
	// Commits are the commits a retry may still repeat, with the batch
	// whose record answers them.
	Commits   []CommitRef
	Topics    []TopicState
	Producers []ProducerStates
}

// CommitRef names the batch that holds a commit.
type CommitRef struct {
	ID    string
	Batch uint64
}

// TopicState is one topic's high watermarks, by partition.
type TopicState struct {
	Name, ID string
	Next     []int64
}

// ProducerStates is one producer's states on the partitions it wrote to.
type ProducerStates struct {
	ID     int64
	States []PartitionState
}

// PartitionState is a producer's state on one partition.
type PartitionState struct {
	Topic     string
	Partition int32
	State     metadata.ProducerState
}

// Encode returns the checkpoint's binary form.
func (c *Checkpoint) Encode() []byte {
	var t table
	var body enc
	body.uvarint(uint64(len(c.Commits)))
	for _, r := range c.Commits {
		body.uvarint(t.ref(r.ID))
		body.uvarint(r.Batch)
	}
	body.uvarint(uint64(len(c.Topics)))
	for _, ts := range c.Topics {
		body.uvarint(t.ref(ts.Name))
		body.uvarint(t.ref(ts.ID))
		body.uvarint(uint64(len(ts.Next)))
		for _, n := range ts.Next {
			body.varint(n)
		}
	}
	body.uvarint(uint64(len(c.Producers)))
	for _, p := range c.Producers {
		body.varint(p.ID)
		body.uvarint(uint64(len(p.States)))
		for _, s := range p.States {
			body.uvarint(t.ref(s.Topic))
			body.varint(int64(s.Partition))
			body.varint(int64(s.State.Epoch))
			body.varint(int64(s.State.Next))
			body.uvarint(uint64(len(s.State.Recent)))
			for _, r := range s.State.Recent {
				body.varint(int64(r.Seq))
				body.varint(r.Base)
				body.varint(int64(r.Count))
			}
		}
	}
	out := enc{b: make([]byte, 0, len(body.b)+64)}
	out.byte1(checkpointVersion)
	out.uvarint(c.Batch)
	out.uvarint(uint64(len(t.strs)))
	for _, s := range t.strs {
		out.str(s)
	}
	out.b = append(out.b, body.b...)
	return out.b
}

// DecodeCheckpoint parses a checkpoint written by Encode.
func DecodeCheckpoint(b []byte) (*Checkpoint, error) {
	d := &dec{b: b}
	if v := d.byte1("version"); d.err == nil && v != checkpointVersion {
		return nil, fmt.Errorf("%w: checkpoint version %d, this build reads %d", ErrMalformed, v, checkpointVersion)
	}
	c := &Checkpoint{Batch: d.uvarint("batch")}
	strs := make([]string, d.count("strings", 1))
	for i := range strs {
		strs[i] = d.str("string")
	}
	c.Commits = make([]CommitRef, d.count("commits", 2))
	for i := range c.Commits {
		c.Commits[i] = CommitRef{ID: d.ref(strs, "commit id"), Batch: d.uvarint("commit batch")}
	}
	c.Topics = make([]TopicState, d.count("topics", 3))
	for i := range c.Topics {
		ts := &c.Topics[i]
		ts.Name, ts.ID = d.ref(strs, "topic name"), d.ref(strs, "topic id")
		ts.Next = make([]int64, d.count("partitions", 1))
		for j := range ts.Next {
			ts.Next[j] = d.varint("high watermark")
		}
	}
	c.Producers = make([]ProducerStates, d.count("producers", 2))
	for i := range c.Producers {
		p := &c.Producers[i]
		p.ID = d.varint("producer id")
		p.States = make([]PartitionState, d.count("producer states", 5))
		for j := range p.States {
			s := &p.States[j]
			s.Topic, s.Partition = d.ref(strs, "topic"), d.int32("partition")
			s.State.Epoch, s.State.Next = d.int32("epoch"), d.int32("next sequence")
			for range d.count("recent batches", 3) {
				s.State.Recent = append(s.State.Recent, metadata.RecentBatch{Seq: d.int32("sequence"), Base: d.varint("base"), Count: d.int32("count")})
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return c, nil
}
