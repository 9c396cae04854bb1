package seqlog

import (
	"errors"
	"reflect"
	"testing"

	"github.com/varve-io/varve/metadata"
)

// TestIndexDecoderBlocks: a record's committed blocks become level-0 index
// entries naming their batch; refused blocks (a topic gone, a duplicate
// producer batch) are not entries, but their objects are still named.
func TestIndexDecoderBlocks(t *testing.T) {
	rb, err := IndexDecoder.DecodeBlocks(sampleRecord().Encode())
	if err != nil {
		t.Fatal(err)
	}
	want := []metadata.IndexEntry{
		{Topic: "big", Partition: 3, Base: 20, Object: "objects/a.vseg", Off: 0, Len: 100, Records: 4, MinTS: -5, MaxTS: 1 << 40, RawBytes: 400, Record: 7},
		{Topic: "small", Partition: 0, Base: 0, Object: "objects/a.vseg", Off: 100, Len: 10, Records: 1, Record: 7},
	}
	if rb.Batch != 7 || !reflect.DeepEqual(rb.Entries, want) {
		t.Fatalf("batch %d entries %+v, want %+v", rb.Batch, rb.Entries, want)
	}
	if !reflect.DeepEqual(rb.Objects, []string{"objects/a.vseg", "objects/b.vseg"}) {
		t.Fatalf("objects %v", rb.Objects)
	}
	if rb.TopicIDs["big"] != "id-big" {
		t.Fatalf("topic ids %v", rb.TopicIDs)
	}
	if _, err := IndexDecoder.DecodeBlocks([]byte{9}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad record: %v", err)
	}
	for _, head := range [][]byte{nil, {5}, {5, 0}} {
		if _, _, err := IndexDecoder.CheckpointHead(head); !errors.Is(err, ErrMalformed) {
			t.Fatalf("checkpoint head %x: %v", head, err)
		}
	}
	tops, err := IndexDecoder.CheckpointNexts(sampleCheckpoint().Encode())
	if err != nil || len(tops) != len(sampleCheckpoint().Topics) || tops[0].Name != sampleCheckpoint().Topics[0].Name {
		t.Fatalf("checkpoint nexts %+v, %v", tops, err)
	}
}
