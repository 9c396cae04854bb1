package seqlog

import (
	"errors"
	"fmt"
	"sort"

	"github.com/klauspost/compress/zstd"

	"github.com/varve-io/varve/metadata"
)

// Format versions. A decoder refuses a version it does not know, so a
// newer format needs a new number and a reader for it.
const (
	// recordVersion 3 is version 2 (block fields as deltas) compressed
	// with zstd after the version byte; versions 1 and 2 are still read
	// (records written before an upgrade).
	recordVersion     = 3
	recordV2          = 2
	recordV1          = 1
	checkpointVersion = 1
)

// maxRecordBytes bounds a record's decompressed size: etcd holds at most
// 1.5 MiB a request, and a record compresses a few times at most, so a
// larger one is corrupt (or a decompression bomb), not a record.
const maxRecordBytes = 16 << 20

var (
	recordEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	recordDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxRecordBytes))
)

// Record is one committed sequencer batch: every commit the batch answered,
// each with its blocks and the results the ingest nodes were given (base
// offsets, refusals, producer batch outcomes), so that a retried commit is
// answered the same after a failover and fetch nodes can index the blocks.
type Record struct {
	Batch uint64
	Term  int64
	// TopicIDs maps each topic named in the batch to its id: a topic
	// deleted and created again has a new id and starts at offset 0.
	TopicIDs map[string]string
	Commits  []Commit
}

// Commit is one ingest flush: its id (the object key) and one result per
// append.
type Commit struct {
	ID      string
	Appends []metadata.Append
	Results []metadata.AppendResult
}

// Refusal codes map a result's error to a sentinel of package metadata.
var refusalCodes = []error{nil, metadata.ErrTopicNotFound, metadata.ErrPartitionOutOfRange,
	metadata.ErrBlockRefused, metadata.ErrProducerFenced, metadata.ErrOutOfOrderSequence,
	metadata.ErrUnknownProducer, metadata.ErrInvalidArgument}

// codeOther is a refusal without a sentinel.
const codeOther = byte(8) // len(refusalCodes)

func codeOf(err error) byte {
	for i, s := range refusalCodes[1:] {
		if errors.Is(err, s) {
			return byte(i + 1)
		}
	}
	return codeOther
}

// Refusal is a decoded refusal: its message as first given, and the
// sentinel it wraps.
type Refusal struct {
	Msg      string
	Sentinel error
}

func (r *Refusal) Error() string { return r.Msg }
func (r *Refusal) Unwrap() error { return r.Sentinel }

func refusal(code byte, msg string) error {
	if int(code) < len(refusalCodes) {
		return &Refusal{Msg: msg, Sentinel: refusalCodes[code]}
	}
	return &Refusal{Msg: msg}
}

// Encode returns the record's binary form (docs/metadata.md, "The
// sequencer"). Results must hold one entry per append, and one batch
// result per producer batch.
func (r *Record) Encode() []byte {
	var t table
	var body enc
	names := make([]string, 0, len(r.TopicIDs))
	for n := range r.TopicIDs {
		names = append(names, n)
	}
	sort.Strings(names)
	body.uvarint(uint64(len(names)))
	for _, n := range names {
		body.uvarint(t.ref(n))
		body.uvarint(t.ref(r.TopicIDs[n]))
	}
	// Version 2: block timestamps relative to the first block's MinTS
	// (a batch spans milliseconds, not decades), producer ids through a
	// table of the batch's producers, a block's offset in its object
	// relative to where the commit's previous block of that object ended
	// (blocks are written back to back), a producer batch's base relative
	// to its block's base: a few bytes a block instead of dozens.
	var tsBase int64
	pids := map[int64]uint64{}
	var pidList []int64
	for _, c := range r.Commits {
		for _, a := range c.Appends {
			if tsBase == 0 {
				tsBase = a.MinTS
			}
			for _, b := range a.Batches {
				if _, ok := pids[b.ID]; !ok {
					pids[b.ID] = uint64(len(pidList))
					pidList = append(pidList, b.ID)
				}
			}
		}
	}
	body.varint(tsBase)
	body.uvarint(uint64(len(pidList)))
	for _, id := range pidList {
		body.varint(id)
	}
	body.uvarint(uint64(len(r.Commits)))
	for _, c := range r.Commits {
		body.uvarint(t.ref(c.ID))
		body.uvarint(uint64(len(c.Appends)))
		var ends blockEnds
		for i, a := range c.Appends {
			encodeAppend(&body, &t, a, c.Results[i], tsBase, pids, &ends)
		}
	}
	out := enc{b: make([]byte, 0, len(body.b)+16*len(t.strs)+32)}
	out.uvarint(r.Batch)
	out.varint(r.Term)
	out.uvarint(uint64(len(t.strs)))
	for _, s := range t.strs {
		out.str(s)
	}
	out.b = append(out.b, body.b...)
	// The string table and the varints of a batch's blocks repeat a lot:
	// zstd takes etcd's bytes per block down a further 1.5-2.5 times.
	return recordEncoder.EncodeAll(out.b, []byte{recordVersion})
}

// blockEnds remembers where a commit's previous block of each object
// ended: the next one usually starts there.
type blockEnds struct {
	obj string
	end int64
}

func (b *blockEnds) expect(obj string) int64 {
	if obj == b.obj {
		return b.end
	}
	return 0
}

func (b *blockEnds) saw(obj string, off, n int64) { b.obj, b.end = obj, off+n }

func encodeAppend(e *enc, t *table, a metadata.Append, res metadata.AppendResult, tsBase int64, pids map[int64]uint64, ends *blockEnds) {
	e.uvarint(t.ref(a.Topic))
	e.varint(int64(a.Partition))
	e.uvarint(t.ref(a.Object))
	for _, v := range []int64{a.Off - ends.expect(a.Object), a.Len, a.Records, a.MinTS - tsBase, a.MaxTS - a.MinTS, a.RawBytes, res.Base} {
		e.varint(v)
	}
	ends.saw(a.Object, a.Off, a.Len)
	encodeErr(e, t, res.Err)
	e.uvarint(uint64(len(a.Batches)))
	for j, b := range a.Batches {
		e.uvarint(pids[b.ID])
		for _, v := range []int64{int64(b.Epoch), int64(b.FirstSeq), int64(b.Count), b.Index} {
			e.varint(v)
		}
		var br metadata.BatchResult
		if j < len(res.Batches) {
			br = res.Batches[j]
		}
		e.varint(br.Base - res.Base)
		if br.Duplicate {
			e.byte1(1)
		} else {
			e.byte1(0)
		}
		encodeErr(e, t, br.Err)
	}
}

func encodeErr(e *enc, t *table, err error) {
	if err == nil {
		e.byte1(0)
		return
	}
	e.byte1(codeOf(err))
	e.uvarint(t.ref(err.Error()))
}

// DecodeRecord parses a record written by Encode (this version or
// version 1).
func DecodeRecord(b []byte) (*Record, error) {
	d := &dec{b: b}
	v := d.byte1("version")
	if d.err == nil && v != recordVersion && v != recordV2 && v != recordV1 {
		return nil, fmt.Errorf("%w: record version %d, this build reads %d to %d", ErrMalformed, v, recordV1, recordVersion)
	}
	if v == recordVersion {
		body, err := recordDecoder.DecodeAll(d.b, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: record: %v", ErrMalformed, err)
		}
		d.b = body
	}
	r := &Record{Batch: d.uvarint("batch"), Term: d.varint("term"), TopicIDs: map[string]string{}}
	strs := make([]string, d.count("strings", 1))
	for i := range strs {
		strs[i] = d.str("string")
	}
	for range d.count("topics", 2) {
		n := d.ref(strs, "topic name")
		r.TopicIDs[n] = d.ref(strs, "topic id")
	}
	var x v2ctx
	if v != recordV1 {
		x.v2 = true
		x.tsBase = d.varint("timestamp base")
		x.pids = make([]int64, d.count("producers", 1))
		for i := range x.pids {
			x.pids[i] = d.varint("producer id")
		}
	}
	r.Commits = make([]Commit, d.count("commits", 2))
	for i := range r.Commits {
		c := &r.Commits[i]
		c.ID = d.ref(strs, "commit id")
		n := d.count("appends", 12)
		c.Appends, c.Results = make([]metadata.Append, n), make([]metadata.AppendResult, n)
		x.ends = blockEnds{}
		for j := range n {
			c.Appends[j], c.Results[j] = decodeAppend(d, strs, &x)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// v2ctx is what decoding a version 2 record's blocks needs besides the
// strings (all zero for version 1, which wrote absolute values).
type v2ctx struct {
	v2     bool
	tsBase int64
	pids   []int64
	ends   blockEnds
}

func decodeAppend(d *dec, strs []string, x *v2ctx) (metadata.Append, metadata.AppendResult) {
	a := metadata.Append{Topic: d.ref(strs, "topic"), Partition: d.int32("partition"), Object: d.ref(strs, "object")}
	vs := make([]int64, 7)
	for i := range vs {
		vs[i] = d.varint("block field")
	}
	if x.v2 {
		vs[0] += x.ends.expect(a.Object)
		vs[3] += x.tsBase
		x.ends.saw(a.Object, vs[0], vs[1])
	}
	a.Off, a.Len, a.Records, a.MinTS, a.MaxTS, a.RawBytes = vs[0], vs[1], vs[2], vs[3], vs[3]+vs[4], vs[5]
	res := metadata.AppendResult{Base: vs[6], Err: decodeErr(d, strs)}
	n := d.count("producer batches", 7)
	for range n {
		var b metadata.ProducerBatch
		if x.v2 {
			i := d.uvarint("producer")
			if d.err == nil && i >= uint64(len(x.pids)) {
				d.fail("producer out of range")
			}
			if d.err == nil {
				b.ID = x.pids[i]
			}
		} else {
			b.ID = d.varint("producer id")
		}
		b.Epoch, b.FirstSeq, b.Count, b.Index = d.int32("epoch"), d.int32("sequence"), d.int32("count"), d.varint("index")
		br := metadata.BatchResult{Base: d.varint("batch base"), Duplicate: d.byte1("duplicate") == 1}
		if x.v2 {
			br.Base += res.Base
		}
		br.Err = decodeErr(d, strs)
		a.Batches = append(a.Batches, b)
		res.Batches = append(res.Batches, br)
	}
	return a, res
}

func decodeErr(d *dec, strs []string) error {
	code := d.byte1("refusal code")
	if code == 0 || d.err != nil {
		return nil
	}
	if code > codeOther {
		d.fail("refusal code out of range")
		return nil
	}
	return refusal(code, d.ref(strs, "refusal message"))
}

// RefusalCode is the format's code for a result's error (0 for nil); the
// internal API uses the same numbers.
func RefusalCode(err error) byte {
	if err == nil {
		return 0
	}
	return codeOf(err)
}

// RefusalError rebuilds a result's error from its code and message (nil
// for code 0): its text is msg and it wraps the code's sentinel.
func RefusalError(code byte, msg string) error {
	if code == 0 {
		return nil
	}
	if code > codeOther {
		code = codeOther
	}
	return refusal(code, msg)
}
