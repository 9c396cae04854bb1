package seqlog

import (
	"encoding/binary"
	"fmt"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/seqhook"
)

// IndexDecoder is how package metadata's index readers (the watched
// Cache, IndexEntries, PartitionStates, LookupIndex) decode records and
// checkpoints. This package registers it with metadata in its init, so
// linking seqlog is all a program needs to read blocks committed through
// the sequencer.
var IndexDecoder metadata.RecordDecoder = indexDecoder{}

func init() { seqhook.Register(IndexDecoder) }

type indexDecoder struct{}

// DecodeBlocks returns a record's committed blocks — a result without
// error and with a base (a refused block, a duplicate included, has
// neither) — as level-0 index entries, and every object it names.
func (indexDecoder) DecodeBlocks(v []byte) (*metadata.RecordBlocks, error) {
	r, err := DecodeRecord(v)
	if err != nil {
		return nil, err
	}
	rb := &metadata.RecordBlocks{Batch: r.Batch, TopicIDs: r.TopicIDs}
	n := 0
	for _, c := range r.Commits {
		n += len(c.Appends)
	}
	rb.Entries = make([]metadata.IndexEntry, 0, n)
	named := map[string]bool{}
	name := func(o string) {
		if !named[o] {
			named[o] = true
			rb.Objects = append(rb.Objects, o)
		}
	}
	for _, c := range r.Commits {
		name(c.ID)
		for i, a := range c.Appends {
			name(a.Object)
			if res := c.Results[i]; res.Err == nil && res.Base >= 0 {
				rb.Entries = append(rb.Entries, metadata.IndexEntry{
					Topic: a.Topic, Partition: a.Partition, Base: res.Base, Object: a.Object, Off: a.Off, Len: a.Len,
					Records: a.Records, MinTS: a.MinTS, MaxTS: a.MaxTS, RawBytes: a.RawBytes, Record: r.Batch,
				})
			}
		}
	}
	return rb, nil
}

// CheckpointHead decodes the seq/checkpoint value: the current
// checkpoint's batch and number of chunks.
func (indexDecoder) CheckpointHead(head []byte) (uint64, int, error) {
	return checkpointHead(head)
}

// CheckpointNexts decodes a checkpoint's high watermarks.
func (indexDecoder) CheckpointNexts(v []byte) ([]metadata.TopicNexts, error) {
	cp, err := DecodeCheckpoint(v)
	if err != nil {
		return nil, err
	}
	out := make([]metadata.TopicNexts, len(cp.Topics))
	for i, t := range cp.Topics {
		out[i] = metadata.TopicNexts{Name: t.Name, ID: t.ID, Next: t.Next}
	}
	return out, nil
}

// checkpointHead parses seq/checkpoint: uvarint batch, uvarint chunks.
func checkpointHead(head []byte) (uint64, int, error) {
	batch, n1 := binary.Uvarint(head)
	if n1 <= 0 {
		return 0, 0, fmt.Errorf("%w: checkpoint head %x", ErrMalformed, head)
	}
	chunks, n2 := binary.Uvarint(head[n1:])
	if n2 <= 0 || chunks == 0 || chunks > 1<<16 {
		return 0, 0, fmt.Errorf("%w: checkpoint head %x", ErrMalformed, head)
	}
	return batch, int(chunks), nil
}
