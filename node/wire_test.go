package node_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/segment"
)

// batchOf encodes recs as producer batches (zstd when smaller).
func batchOf(t *testing.T, recs ...segment.Record) []byte {
	t.Helper()
	b, err := segment.AppendProducerBatches(nil, recs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawBatch encodes recs as one uncompressed batch (so tests can edit
// its records) with producerId -1.
func rawBatch(recs ...segment.Record) []byte {
	var body []byte
	for i, r := range recs {
		body = appendKafkaRecord(body, r, r.Timestamp-recs[0].Timestamp, int32(i))
	}
	return sealBatch(0, recs[0].Timestamp, maxTS(recs), int32(len(recs)), body)
}

func maxTS(recs []segment.Record) int64 {
	m := recs[0].Timestamp
	for _, r := range recs {
		m = max(m, r.Timestamp)
	}
	return m
}

// sealBatch writes a batch header (CRC computed) around body.
func sealBatch(attrs int16, baseTS, maxTS int64, n int32, body []byte) []byte {
	b := make([]byte, segment.BatchHeaderSize, segment.BatchHeaderSize+len(body))
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[12:], 0xffffffff)
	b[16] = 2
	binary.BigEndian.PutUint16(b[21:], uint16(attrs))
	binary.BigEndian.PutUint32(b[23:], uint32(n-1))
	binary.BigEndian.PutUint64(b[27:], uint64(baseTS))
	binary.BigEndian.PutUint64(b[35:], uint64(maxTS))
	binary.BigEndian.PutUint64(b[43:], ^uint64(0))
	binary.BigEndian.PutUint16(b[51:], 0xffff)
	binary.BigEndian.PutUint32(b[53:], 0xffffffff)
	binary.BigEndian.PutUint32(b[57:], uint32(n))
	fixCRC(b)
	return b
}

func fixCRC(b []byte) {
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
}

func appendKafkaRecord(b []byte, r segment.Record, tsDelta int64, offDelta int32) []byte {
	var body []byte
	body = append(body, 0)
	body = binary.AppendVarint(body, tsDelta)
	body = binary.AppendVarint(body, int64(offDelta))
	appendBytes := func(v []byte) {
		if v == nil {
			body = binary.AppendVarint(body, -1)
			return
		}
		body = binary.AppendVarint(body, int64(len(v)))
		body = append(body, v...)
	}
	appendBytes(r.Key)
	appendBytes(r.Value)
	body = binary.AppendVarint(body, int64(len(r.Headers)))
	for _, h := range r.Headers {
		appendBytes([]byte(h.Key))
		appendBytes(h.Value)
	}
	b = binary.AppendVarint(b, int64(len(body)))
	return append(b, body...)
}

func produceBatchForm(ctx context.Context, c clients, topic string, entries ...*varvev1.PartitionBatches) (*connect.Response[varvev1.ProduceResponse], error) {
	return c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: topic, Batches: entries}))
}

func entry(p int32, b []byte) *varvev1.PartitionBatches {
	return &varvev1.PartitionBatches{Partition: p, RecordBatches: b}
}

// TestProduceBadBatches sends malformed batches: each is refused with
// INVALID_ARGUMENT naming the partition, batch and field, and nothing is
// stored (no PUT, no offset committed, nothing pending).
func TestProduceBadBatches(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	if _, err := n.c.topics.CreateTopic(ctx, connect.NewRequest(&varvev1.CreateTopicRequest{Name: "bb", Partitions: 2,
		Config: &varvev1.TopicConfig{MaxRecordBytes: 2048}})); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	good := rawBatch(segment.Record{Key: []byte("k"), Value: []byte("v1"), Timestamp: now}, segment.Record{Value: []byte("v2"), Timestamp: now + 1})
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	zstdGarbage := sealBatch(int16(segment.CompressionZstd), now, now, 1, []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x01, 0x02, 0x03})
	enc, _ := zstd.NewWriter(nil)
	bomb := sealBatch(int16(segment.CompressionZstd), now, now, 1, enc.EncodeAll(make([]byte, 80<<20), nil))
	cases := []struct {
		name    string
		entries []*varvev1.PartitionBatches
		records []*varvev1.ProduceRecord
		want    []string
	}{
		{"bad crc", []*varvev1.PartitionBatches{entry(1, edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }))}, nil,
			[]string{"partition 1", "batch 0", "crc"}},
		{"record count above the records", []*varvev1.PartitionBatches{entry(0, edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[57:], 3)
			binary.BigEndian.PutUint32(b[23:], 2)
			fixCRC(b)
			return b
		}))}, nil, []string{"partition 0", "batch 0", "recordCount", "cannot fit"}},
		{"record count below the records", []*varvev1.PartitionBatches{entry(0, edit(func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[57:], 1)
			binary.BigEndian.PutUint32(b[23:], 0)
			fixCRC(b)
			return b
		}))}, nil, []string{"partition 0", "batch 0", "records"}},
		{"truncated", []*varvev1.PartitionBatches{entry(0, good[:len(good)-3])}, nil, []string{"partition 0", "batch 0", "batchLength", "past the end"}},
		{"truncated header", []*varvev1.PartitionBatches{entry(0, good[:40])}, nil, []string{"partition 0", "batch 0", "batchLength"}},
		{"second batch garbage", []*varvev1.PartitionBatches{entry(0, append(bytes.Clone(good), 1, 2, 3))}, nil, []string{"partition 0", "batch 1"}},
		{"garbage", []*varvev1.PartitionBatches{entry(0, bytes.Repeat([]byte{0xab}, 100))}, nil, []string{"partition 0", "batch 0"}},
		{"oversized record", []*varvev1.PartitionBatches{entry(1, rawBatch(segment.Record{Value: make([]byte, 3000), Timestamp: now}))}, nil,
			[]string{"partition 1", "batch 0", "record 0", "max_record_bytes"}},
		{"bad compression", []*varvev1.PartitionBatches{entry(0, zstdGarbage)}, nil, []string{"partition 0", "batch 0", "zstd"}},
		{"decompression bomb", []*varvev1.PartitionBatches{entry(0, bomb)}, nil, []string{"partition 0", "batch 0", "limit"}},
		{"negative record length", []*varvev1.PartitionBatches{entry(0, sealBatch(0, now, now, 1, append(binary.AppendVarint(nil, -5), make([]byte, 10)...)))}, nil,
			[]string{"partition 0", "batch 0", "record 0", "length"}},
		{"negative key length", []*varvev1.PartitionBatches{entry(0, edit(func(b []byte) []byte {
			b[segment.BatchHeaderSize+4] = 0x05 // key length varint 1 -> -3
			fixCRC(b)
			return b
		}))}, nil, []string{"partition 0", "batch 0", "record 0"}},
		{"negative timestamp", []*varvev1.PartitionBatches{entry(0, rawBatch(segment.Record{Value: []byte("x"), Timestamp: 5}, segment.Record{Value: []byte("y"), Timestamp: -1}))}, nil,
			[]string{"partition 0", "batch 0", "timestamp"}},
		{"empty header key", []*varvev1.PartitionBatches{entry(0, rawBatch(segment.Record{Value: []byte("x"), Timestamp: now, Headers: []segment.Header{{Key: "", Value: []byte("v")}}}))}, nil,
			[]string{"partition 0", "batch 0", "empty key"}},
		{"partition out of range", []*varvev1.PartitionBatches{entry(2, good)}, nil, []string{"partition 2", "2 partitions"}},
		{"two entries of a partition", []*varvev1.PartitionBatches{entry(0, good), entry(0, good)}, nil, []string{"partition 0", "two batches entries"}},
		{"producer id without idempotence", []*varvev1.PartitionBatches{entry(0, edit(func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[43:], 7)
			binary.BigEndian.PutUint16(b[51:], 0)
			binary.BigEndian.PutUint32(b[53:], 0)
			fixCRC(b)
			return b
		}))}, nil, []string{"partition 0", "producerId 7"}},
		{"records and batches", []*varvev1.PartitionBatches{entry(0, good)},
			[]*varvev1.ProduceRecord{{Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte("x")}}}, []string{"not both"}},
		// A good batch beside a bad one: the whole request is refused.
		{"good and bad partitions", []*varvev1.PartitionBatches{entry(0, good), entry(1, good[:70])}, nil, []string{"partition 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n.rec.Reset()
			_, err := n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "bb", Batches: tc.entries, Records: tc.records}))
			t.Log(err)
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("code %v (%v), want InvalidArgument", connect.CodeOf(err), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if err := n.Ingester().Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if puts := n.rec.Count(tier.OpPut); puts != 0 {
				t.Errorf("%d PUTs after a refused request", puts)
			}
			if b, r := n.Ingester().Pending(); b != 0 || r != 0 {
				t.Errorf("pending %d bytes %d records after a refused request", b, r)
			}
			d, err := n.c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: "bb"}))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range d.Msg.Partitions {
				if p.NextOffset != 0 || p.Segments != 0 {
					t.Errorf("partition %d: next offset %d, %d segments after refused requests", p.Partition, p.NextOffset, p.Segments)
				}
			}
		})
	}
	// The good batch itself is accepted.
	if _, err := produceBatchForm(ctx, n.c, "bb", entry(0, good)); err != nil {
		t.Fatal(err)
	}
}

// fetchBoth fetches partition p from offset 0 in both forms and checks
// that the decoded batches are exactly the records of the per-record form.
func fetchBoth(t *testing.T, c clients, topic string, p int32, want int) []*varvev1.Record {
	t.Helper()
	ctx := context.Background()
	var recs []*varvev1.Record
	for off := int64(0); len(recs) < want; {
		res, err := c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: p, Offset: off}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Msg.Records) == 0 {
			t.Fatalf("%s/%d: no records at %d, want %d", topic, p, off, want)
		}
		recs = append(recs, res.Msg.Records...)
		off = res.Msg.NextOffset
	}
	var got []*varvev1.Record
	for off := int64(0); len(got) < want; {
		res, err := c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: topic, Partition: p, Offset: off, RecordBatches: true}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Msg.Records) != 0 || len(res.Msg.RecordBatches) == 0 {
			t.Fatalf("%s/%d at %d: a batches fetch answered %d records and %d batch bytes", topic, p, off, len(res.Msg.Records), len(res.Msg.RecordBatches))
		}
		srecs, offs, err := segment.DecodeBatches(res.Msg.RecordBatches, off)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range srecs {
			pr := &varvev1.Record{Key: r.Key, Value: r.Value, TimestampMs: r.Timestamp, Partition: p, Offset: offs[i]}
			for _, h := range r.Headers {
				pr.Headers = append(pr.Headers, &varvev1.Header{Key: h.Key, Value: h.Value})
			}
			got = append(got, pr)
		}
		off = res.Msg.NextOffset
	}
	if len(got) != len(recs) {
		t.Fatalf("%s/%d: %d records from batches, %d from the record form", topic, p, len(got), len(recs))
	}
	for i := range recs {
		if !proto.Equal(got[i], recs[i]) {
			t.Fatalf("%s/%d record %d: batches give %v, the record form %v", topic, p, i, got[i], recs[i])
		}
	}
	return recs
}

// TestBatchFormMixedClients produces to one topic with the record form
// (an old client) and the batch form (zstd and uncompressed) in turn,
// then fetches both ways: the offsets are dense, every record is there in
// order, with null/empty keys, headers and timestamps kept, and the
// stored batches decode to exactly the records of the record form.
func TestBatchFormMixedClients(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "mixed", 2)
	ts := time.Now().UnixMilli()
	var wantVals []string
	var large [][]byte // the entries of round 3, above ingest.CoalesceBelow
	for round := range 4 {
		for p := int32(0); p < 2; p++ {
			var recs []segment.Record
			for i := range 50 {
				v := fmt.Sprintf("r%d-p%d-%d %s", round, p, i, strings.Repeat("payload ", i))
				if round == 3 {
					v += strings.Repeat(fmt.Sprint(i), 1000)
				}
				r := segment.Record{Value: []byte(v), Timestamp: ts + int64(i)}
				if i%3 == 0 {
					r.Key = []byte{}
				} else if i%3 == 1 {
					r.Key = []byte(fmt.Sprint("k", i))
					r.Headers = []segment.Header{{Key: "h", Value: nil}, {Key: "trace", Value: []byte("t")}}
				}
				recs = append(recs, r)
			}
			var res *connect.Response[varvev1.ProduceResponse]
			var err error
			switch round {
			case 0: // an old client: the record form
				req := &varvev1.ProduceRequest{Topic: "mixed"}
				for _, r := range recs {
					pr := &varvev1.Record{Key: r.Key, Value: r.Value, TimestampMs: r.Timestamp}
					for _, h := range r.Headers {
						pr.Headers = append(pr.Headers, &varvev1.Header{Key: h.Key, Value: h.Value})
					}
					req.Records = append(req.Records, &varvev1.ProduceRecord{Partition: proto.Int32(p), Record: pr})
				}
				res, err = n.c.produce.Produce(ctx, connect.NewRequest(req))
			case 1:
				res, err = produceBatchForm(ctx, n.c, "mixed", entry(p, batchOf(t, recs...)))
			case 2:
				res, err = produceBatchForm(ctx, n.c, "mixed", entry(p, append(rawBatch(recs[:20]...), rawBatch(recs[20:]...)...)))
			case 3: // large: stored as sent, two uncompressed batches
				b1, b2 := rawBatch(recs[:25]...), rawBatch(recs[25:]...)
				large = append(large, b1, b2)
				res, err = produceBatchForm(ctx, n.c, "mixed", entry(p, append(bytes.Clone(b1), b2...)))
			}
			if err != nil {
				t.Fatalf("round %d partition %d: %v", round, p, err)
			}
			if len(res.Msg.Results) != len(recs) {
				t.Fatalf("%d results for %d records", len(res.Msg.Results), len(recs))
			}
			for i, r := range res.Msg.Results {
				if r.Partition != p || r.Offset != int64(round*50+i) {
					t.Fatalf("round %d partition %d record %d at %d/%d, want %d/%d", round, p, i, r.Partition, r.Offset, p, round*50+i)
				}
			}
			if p == 0 {
				for _, r := range recs {
					wantVals = append(wantVals, string(r.Value))
				}
			}
		}
	}
	recs := fetchBoth(t, n.c, "mixed", 0, 200)
	fetchBoth(t, n.c, "mixed", 1, 200)
	for i, r := range recs {
		if string(r.Value) != wantVals[i] || r.Offset != int64(i) {
			t.Fatalf("record %d: offset %d value %q, want %q", i, r.Offset, r.Value, wantVals[i])
		}
		switch i % 50 % 3 {
		case 0:
			if r.Key == nil || len(r.Key) != 0 {
				t.Fatalf("record %d: key %v, want empty (not null)", i, r.Key)
			}
		case 2:
			if r.Key != nil {
				t.Fatalf("record %d: key %q, want null", i, r.Key)
			}
		}
	}
	// A fetch of batches from the middle of a block skips nothing and
	// starts at or before the offset asked for.
	res, err := n.c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "mixed", Partition: 0, Offset: 75, RecordBatches: true}))
	if err != nil {
		t.Fatal(err)
	}
	srecs, offs, err := segment.DecodeBatches(res.Msg.RecordBatches, 75)
	if err != nil || len(srecs) == 0 || offs[0] != 75 || string(srecs[0].Value) != wantVals[75] {
		t.Fatalf("fetch of batches at 75: %d records from %v: %v", len(srecs), offs[:min(1, len(offs))], err)
	}
	// Every segment written is version 3.
	var objects []tier.ObjectInfo
	if err := n.rec.List(ctx, "segments/", func(o tier.ObjectInfo) error { objects = append(objects, o); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, o := range objects {
		data, err := n.rec.GetRange(ctx, o.Key, 0, o.Size)
		if err != nil {
			t.Fatal(err)
		}
		fsz, err := segment.FooterSize(data[len(data)-segment.TrailerSize:])
		if err != nil {
			t.Fatal(err)
		}
		infos, err := segment.DecodeFooter(data[int64(len(data))-fsz-segment.TrailerSize:])
		if err != nil {
			t.Fatal(err)
		}
		for _, bi := range infos {
			if v := data[bi.Offset+2]; v != segment.BatchesBlockVersion {
				t.Fatalf("object %s block at %d: version %d, want %d", o.Key, bi.Offset, v, segment.BatchesBlockVersion)
			}
		}
		for i, b := range large {
			if b != nil && bytes.Contains(data, b[8:]) { // all but baseOffset, as sent
				large[i] = nil
			}
		}
	}
	for i, b := range large {
		if b != nil {
			t.Errorf("the large entry %d was not stored as sent", i)
		}
	}
}

// TestBatchFormIdempotent sends an idempotent producer's batches in the
// batch form: a retry is answered with the original offsets and stored
// once, a gap is refused (OUT_OF_ORDER_SEQUENCE) and changes nothing, and
// batch headers carrying the producer must match the request.
func TestBatchFormIdempotent(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	createTopic(t, n.c, "idem", 2)
	ip, err := n.c.produce.InitProducer(ctx, connect.NewRequest(&varvev1.InitProducerRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	id, epoch := ip.Msg.ProducerId, ip.Msg.ProducerEpoch
	ts := time.Now().UnixMilli()
	mk := func(tag string, k int) []byte {
		var recs []segment.Record
		for i := range k {
			recs = append(recs, segment.Record{Value: fmt.Appendf(nil, "%s-%d", tag, i), Timestamp: ts})
		}
		return batchOf(t, recs...)
	}
	send := func(seq0, seq1 int32, b0, b1 []byte) (*connect.Response[varvev1.ProduceResponse], error) {
		return n.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "idem", ProducerId: id, ProducerEpoch: epoch,
			Sequences: []*varvev1.PartitionSequence{{Partition: 0, FirstSequence: seq0}, {Partition: 1, FirstSequence: seq1}},
			Batches:   []*varvev1.PartitionBatches{entry(0, b0), entry(1, b1)}}))
	}
	a0, a1 := mk("a0", 3), mk("a1", 2)
	first, err := send(0, 0, a0, a1)
	if err != nil {
		t.Fatal(err)
	}
	retry, err := send(0, 0, a0, a1)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(first.Msg, retry.Msg) {
		t.Fatalf("retry answered %v, the first send %v", retry.Msg, first.Msg)
	}
	if _, err := send(5, 2, mk("gap", 1), mk("b1", 1)); connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "sequence") {
		t.Fatalf("a gap: %v, want FailedPrecondition naming the sequence", err)
	}
	// Headers that carry the producer must be this request's.
	hdr := func(b []byte, pid int64, ep int16, seq int32) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint64(b[43:], uint64(pid))
		binary.BigEndian.PutUint16(b[51:], uint16(ep))
		binary.BigEndian.PutUint32(b[53:], uint32(seq))
		fixCRC(b)
		return b
	}
	if _, err := send(3, 2, hdr(mk("c0", 1), id, int16(epoch), 4), mk("c1", 1)); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "baseSequence 4, want 3") {
		t.Fatalf("a header sequence unlike the request's: %v", err)
	}
	if _, err := send(3, 2, hdr(mk("c0", 1), id+1, int16(epoch), 3), mk("c1", 1)); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "producerId") {
		t.Fatalf("a header producer unlike the request's: %v", err)
	}
	next, err := send(3, 2, hdr(mk("d0", 2), id, int16(epoch), 3), mk("d1", 1))
	if err != nil {
		t.Fatalf("headers carrying the request's producer: %v", err)
	}
	if r := next.Msg.Results; r[0].Offset != 3 || r[2].Partition != 1 || r[2].Offset != 2 {
		t.Fatalf("results %v", r)
	}
	recs := fetchBoth(t, n.c, "idem", 0, 5)
	for i, want := range []string{"a0-0", "a0-1", "a0-2", "d0-0", "d0-1"} {
		if string(recs[i].Value) != want {
			t.Fatalf("partition 0 record %d: %q, want %q (a retry or refused batch stored?)", i, recs[i].Value, want)
		}
	}
	d, err := n.c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: "idem"}))
	if err != nil {
		t.Fatal(err)
	}
	if d.Msg.Partitions[0].NextOffset != 5 || d.Msg.Partitions[1].NextOffset != 3 {
		t.Fatalf("next offsets %d, %d, want 5, 3", d.Msg.Partitions[0].NextOffset, d.Msg.Partitions[1].NextOffset)
	}
}

// TestBatchForm1000Partitions sends one request with a batch for each of
// 1,000 partitions, twice: one result per record, dense offsets, and
// every partition's batches fetched back.
func TestBatchForm1000Partitions(t *testing.T) {
	n := startNode(t, nil)
	ctx := context.Background()
	const parts = 1000
	createTopic(t, n.c, "wide", parts)
	ts := time.Now().UnixMilli()
	for round := range 2 {
		req := &varvev1.ProduceRequest{Topic: "wide"}
		for p := range int32(parts) {
			req.Batches = append(req.Batches, entry(p, batchOf(t,
				segment.Record{Value: fmt.Appendf(nil, "r%d-p%d-a", round, p), Timestamp: ts},
				segment.Record{Value: fmt.Appendf(nil, "r%d-p%d-b", round, p), Timestamp: ts})))
		}
		res, err := n.c.produce.Produce(ctx, connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Msg.Results) != 2*parts {
			t.Fatalf("%d results, want %d", len(res.Msg.Results), 2*parts)
		}
		for i, r := range res.Msg.Results {
			if r.Partition != int32(i/2) || r.Offset != int64(2*round+i%2) {
				t.Fatalf("result %d: %d/%d, want %d/%d", i, r.Partition, r.Offset, i/2, 2*round+i%2)
			}
		}
	}
	for _, p := range []int32{0, 1, 499, 998, 999} {
		recs := fetchBoth(t, n.c, "wide", p, 4)
		if string(recs[3].Value) != fmt.Sprintf("r1-p%d-b", p) {
			t.Fatalf("partition %d: last record %q", p, recs[3].Value)
		}
	}
}

// TestBatchFetchOneGetPerObjectPerCluster: consumers fetching stored
// batches from three fetch nodes read every record, decoded from the
// batches, with one GET per object for the whole cluster — the owner ships
// the stored bytes, the other nodes what the owner's block service gave
// them — as the record form does (TestOneGetPerObjectPerCluster).
func TestBatchFetchOneGetPerObjectPerCluster(t *testing.T) {
	c := startCluster(t, 3)
	const partitions, batches, per = 3, 4, 40
	createTopic(t, newClients(c.ingest.Addr()), "shared", partitions)
	produceBatches(t, c.ingest, "shared", partitions, batches, per, 0)
	objects := puts(c.rec)
	ctx := context.Background()
	for _, n := range c.fetch {
		cl := newClients(n.Addr())
		for p := range int32(partitions) {
			for off := int64(0); off < batches*per; {
				res, err := cl.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{Topic: "shared", Partition: p, Offset: off, MaxBytes: 300, RecordBatches: true}))
				if err != nil {
					t.Fatal(err)
				}
				recs, offs, err := segment.DecodeBatches(res.Msg.RecordBatches, off)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) == 0 || res.Msg.NextOffset <= off {
					t.Fatalf("%s/%d at %d: %d records, next %d", "shared", p, off, len(recs), res.Msg.NextOffset)
				}
				for i, r := range recs {
					if offs[i] != off || string(r.Value) != fmt.Sprintf("%d-%d", p, off) {
						t.Fatalf("partition %d: offset %d value %q, want offset %d value %d-%d", p, offs[i], r.Value, off, p, off)
					}
					off++
				}
				if off != res.Msg.NextOffset {
					t.Fatalf("partition %d: records end at %d, next offset %d", p, off, res.Msg.NextOffset)
				}
			}
		}
	}
	gets := wholeGets(t, c.rec)
	if len(gets) != objects {
		t.Errorf("%d objects were read from the bucket, want all %d", len(gets), objects)
	}
	for o, n := range gets {
		if n != 1 {
			t.Errorf("object %s: %d GETs, want 1", o, n)
		}
	}
}
