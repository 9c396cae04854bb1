package seqlog

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/varve-io/varve/metadata"
)

func sampleRecord() *Record {
	return &Record{
		Batch: 7, Term: 42,
		TopicIDs: map[string]string{"big": "id-big", "small": "id-small"},
		Commits: []Commit{{
			ID: "objects/a.vseg",
			Appends: []metadata.Append{
				{Topic: "big", Partition: 3, Object: "objects/a.vseg", Off: 0, Len: 100, Records: 4, MinTS: -5, MaxTS: 1 << 40, RawBytes: 400,
					Batches: []metadata.ProducerBatch{{ID: 9, Epoch: 2, FirstSeq: 10, Count: 3, Index: 1}}},
				{Topic: "small", Partition: 0, Object: "objects/a.vseg", Off: 100, Len: 10, Records: 1},
				{Topic: "gone", Partition: 1, Object: "objects/a.vseg", Off: 110, Len: 10, Records: 1},
			},
			Results: []metadata.AppendResult{
				{Base: 20, Batches: []metadata.BatchResult{{Base: 21}}},
				{Base: 0},
				{Base: -1, Err: fmt.Errorf("topic %q: %w", "gone", metadata.ErrTopicNotFound)},
			},
		}, {
			ID: "objects/b.vseg",
			Appends: []metadata.Append{{Topic: "big", Partition: 3, Object: "objects/b.vseg", Len: 5, Records: 2,
				Batches: []metadata.ProducerBatch{{ID: 9, Epoch: 2, FirstSeq: 10, Count: 2}}}},
			Results: []metadata.AppendResult{{Base: -1, Err: fmt.Errorf("%w: x", metadata.ErrBlockRefused),
				Batches: []metadata.BatchResult{{Base: 21, Duplicate: true}}}},
		}},
	}
}

// TestRecordRoundTrip checks that a record decodes to what was encoded,
// refusals keeping their message and sentinel.
func TestRecordRoundTrip(t *testing.T) {
	r := sampleRecord()
	got, err := DecodeRecord(r.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Batch != r.Batch || got.Term != r.Term || !reflect.DeepEqual(got.TopicIDs, r.TopicIDs) || len(got.Commits) != 2 {
		t.Fatalf("header: got %+v", got)
	}
	for i, c := range r.Commits {
		g := got.Commits[i]
		if g.ID != c.ID || !reflect.DeepEqual(g.Appends, c.Appends) {
			t.Fatalf("commit %d: got %+v want %+v", i, g, c)
		}
		for j, res := range c.Results {
			gr := g.Results[j]
			if gr.Base != res.Base || (gr.Err == nil) != (res.Err == nil) || len(gr.Batches) != len(res.Batches) {
				t.Fatalf("commit %d result %d: got %+v want %+v", i, j, gr, res)
			}
			if res.Err != nil && (gr.Err.Error() != res.Err.Error() || !errors.Is(gr.Err, errors.Unwrap(res.Err)) && !errors.Is(gr.Err, metadata.ErrTopicNotFound)) {
				t.Fatalf("commit %d result %d: error %v, want %v", i, j, gr.Err, res.Err)
			}
			for k, b := range res.Batches {
				if gr.Batches[k].Base != b.Base || gr.Batches[k].Duplicate != b.Duplicate {
					t.Fatalf("batch result: got %+v want %+v", gr.Batches[k], b)
				}
			}
		}
	}
	if !errors.Is(got.Commits[0].Results[2].Err, metadata.ErrTopicNotFound) || !errors.Is(got.Commits[1].Results[0].Err, metadata.ErrBlockRefused) {
		t.Fatal("decoded refusals lost their sentinel")
	}
	// Compact: well under 100 bytes per block.
	if n := len(r.Encode()); n > 4*100 {
		t.Errorf("record of 4 blocks encodes to %d bytes", n)
	}
}

// TestRecordMalformed checks that truncations and a wrong version are
// refused with ErrMalformed.
func TestRecordMalformed(t *testing.T) {
	b := sampleRecord().Encode()
	for n := range len(b) {
		if _, err := DecodeRecord(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d bytes: err %v", n, err)
		}
	}
	bad := append([]byte{9}, b[1:]...)
	if _, err := DecodeRecord(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("version 9: %v", err)
	}
	if _, err := DecodeRecord(append(b, 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func sampleCheckpoint() *Checkpoint {
	return &Checkpoint{Batch: 100, Commits: []CommitRef{{ID: "objects/a", Batch: 99}, {ID: "objects/b", Batch: 100}},
		Topics: []TopicState{{Name: "big", ID: "x", Next: []int64{0, 5, 1 << 50}}},
		Producers: []ProducerStates{{ID: 3, States: []PartitionState{{Topic: "big", Partition: 1,
			State: metadata.ProducerState{Epoch: 1, Next: 9, Recent: []metadata.RecentBatch{{Seq: 4, Base: 0, Count: 5}, {Seq: 9 - 4, Base: 5, Count: 4}}}}}}}}
}

func TestCheckpointRoundTrip(t *testing.T) {
	c := sampleCheckpoint()
	got, err := DecodeCheckpoint(c.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("got %+v\nwant %+v", got, c)
	}
	b := c.Encode()
	for n := range len(b) {
		if _, err := DecodeCheckpoint(b[:n]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d bytes: err %v", n, err)
		}
	}
}

// FuzzDecodeRecord: any input decodes or fails with ErrMalformed, never
// panics or allocates beyond its size; what decodes re-encodes to a
// record that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(sampleRecord().Encode())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		r2, err := DecodeRecord(r.Encode())
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if r2.Batch != r.Batch || len(r2.Commits) != len(r.Commits) {
			t.Fatalf("re-encoded record differs")
		}
	})
}

func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add(sampleCheckpoint().Encode())
	f.Add([]byte{1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCheckpoint(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error without ErrMalformed: %v", err)
			}
			return
		}
		c2, err := DecodeCheckpoint(c.Encode())
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-encoded checkpoint differs: %v", err)
		}
	})
}

// TestRecordCompact: a flush of one block on each of 1,000 partitions
// encodes in about 18 bytes per block (version 1: 25).
func TestRecordCompact(t *testing.T) {
	c := Commit{ID: "objects/0000000001-abcdef.vseg"}
	for p := range int32(1000) {
		c.Appends = append(c.Appends, metadata.Append{Topic: "big", Partition: p, Object: c.ID, Off: int64(p) * 300, Len: 300, Records: 10, MinTS: 1764730000000, MaxTS: 1764730000100, RawBytes: 1000})
		c.Results = append(c.Results, metadata.AppendResult{Base: 123456 + int64(p)})
	}
	r := &Record{Batch: 99, Term: 1234, TopicIDs: map[string]string{"big": "0123456789abcdef"}, Commits: []Commit{c}}
	n := len(r.Encode())
	t.Logf("1,000 blocks: %d bytes", n)
	if n > 1000*20 {
		t.Fatalf("1,000 blocks encode to %d bytes, want at most 20 per block", n)
	}
}

// TestRecordCompactIdempotent: a flush of 1,000 partitions' blocks from
// four idempotent producers (two producer batches a block) encodes in
// at most 24 bytes a block plus 12 a producer batch.
func TestRecordCompactIdempotent(t *testing.T) {
	c := Commit{ID: "segments/0000000001-node-0-abcdef.vseg"}
	pids := []int64{1764730000123456, 1764730000123999, 1764730000124711, 1764730000125001}
	off := int64(0)
	for p := range int32(1000) {
		n := int64(200 + p%97*3)
		ts := 1764730000000 + int64(p%100)
		a := metadata.Append{Topic: "scale-1000p-123456", Partition: p, Object: c.ID, Off: off, Len: n, Records: 3, MinTS: ts, MaxTS: ts + 40, RawBytes: 1300,
			Batches: []metadata.ProducerBatch{
				{ID: pids[p%4], Epoch: 0, FirstSeq: 4000 + p, Count: 2, Index: 0},
				{ID: pids[(p+1)%4], Epoch: 0, FirstSeq: 3000 + p, Count: 1, Index: 1},
			}}
		off += n
		base := 20000 + int64(p)*7
		c.Appends = append(c.Appends, a)
		c.Results = append(c.Results, metadata.AppendResult{Base: base, Batches: []metadata.BatchResult{{Base: base}, {Base: base + 2}}})
	}
	r := &Record{Batch: 99, Term: 1234, TopicIDs: map[string]string{"scale-1000p-123456": "0123456789abcdef"}, Commits: []Commit{c}}
	b := r.Encode()
	t.Logf("1,000 blocks, 2,000 producer batches: %d bytes", len(b))
	if len(b) > 1000*(24+2*12) {
		t.Fatalf("encode to %d bytes, want at most %d", len(b), 1000*(24+2*12))
	}
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Commits[0].Appends, c.Appends) || !reflect.DeepEqual(got.Commits[0].Results, c.Results) {
		t.Fatal("round trip differs")
	}
}

// TestOlderRecordsStillRead: records written by the version 1 encoder
// (absolute block fields) and the version 2 one (deltas, uncompressed) —
// testdata/record-v1.bin and record-v2.bin are sampleRecord() as they wrote
// it — decode to the same record as today's, so records committed before an
// upgrade are still read.
func TestOlderRecordsStillRead(t *testing.T) {
	now, err := DecodeRecord(sampleRecord().Encode())
	if err != nil {
		t.Fatal(err)
	}
	for v, file := range map[byte]string{recordV1: "testdata/record-v1.bin", recordV2: "testdata/record-v2.bin"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != v {
			t.Fatalf("%s has version %d, want %d", file, b[0], v)
		}
		old, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if fmt.Sprint(old) != fmt.Sprint(now) {
			t.Fatalf("version %d decodes to\n%+v\ntoday's to\n%+v", v, old, now)
		}
	}
}

// TestRecordDecompressionBounded: a version 3 record whose body
// decompresses past maxRecordBytes is refused as malformed, not inflated.
func TestRecordDecompressionBounded(t *testing.T) {
	bomb := recordEncoder.EncodeAll(make([]byte, maxRecordBytes+1), []byte{recordVersion})
	if _, err := DecodeRecord(bomb); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a %d-byte record inflating to %d bytes: %v, want ErrMalformed", len(bomb), maxRecordBytes+1, err)
	}
}
