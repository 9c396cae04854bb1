package seqlog

import (
	"errors"
	"fmt"
	"sort"

	"github.com/varve-io/varve/metadata"
)

// Format versions. A decoder refuses a version it does not know, so a
// newer format needs a new number and a reader for it.
const (
	recordVersion     = 1
	checkpointVersion = 1
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
	body.uvarint(uint64(len(r.Commits)))
	for _, c := range r.Commits {
		body.uvarint(t.ref(c.ID))
		body.uvarint(uint64(len(c.Appends)))
		for i, a := range c.Appends {
			encodeAppend(&body, &t, a, c.Results[i])
		}
	}
	out := enc{b: make([]byte, 0, len(body.b)+16*len(t.strs)+32)}
	out.byte1(recordVersion)
	out.uvarint(r.Batch)
	out.varint(r.Term)
	out.uvarint(uint64(len(t.strs)))
	for _, s := range t.strs {
		out.str(s)
	}
	out.b = append(out.b, body.b...)
	return out.b
}

func encodeAppend(e *enc, t *table, a metadata.Append, res metadata.AppendResult) {
	e.uvarint(t.ref(a.Topic))
	e.varint(int64(a.Partition))
	e.uvarint(t.ref(a.Object))
	// MaxTS as its distance from MinTS: a few bytes instead of six.
	for _, v := range []int64{a.Off, a.Len, a.Records, a.MinTS, a.MaxTS - a.MinTS, a.RawBytes, res.Base} {
		e.varint(v)
	}
	encodeErr(e, t, res.Err)
	e.uvarint(uint64(len(a.Batches)))
	for j, b := range a.Batches {
		for _, v := range []int64{b.ID, int64(b.Epoch), int64(b.FirstSeq), int64(b.Count), b.Index} {
			e.varint(v)
		}
		var br metadata.BatchResult
		if j < len(res.Batches) {
			br = res.Batches[j]
		}
		e.varint(br.Base)
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

// DecodeRecord parses a record written by Encode.
func DecodeRecord(b []byte) (*Record, error) {
	d := &dec{b: b}
	if v := d.byte1("version"); d.err == nil && v != recordVersion {
		return nil, fmt.Errorf("%w: record version %d, this build reads %d", ErrMalformed, v, recordVersion)
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
	r.Commits = make([]Commit, d.count("commits", 2))
	for i := range r.Commits {
		c := &r.Commits[i]
		c.ID = d.ref(strs, "commit id")
		n := d.count("appends", 12)
		c.Appends, c.Results = make([]metadata.Append, n), make([]metadata.AppendResult, n)
		for j := range n {
			c.Appends[j], c.Results[j] = decodeAppend(d, strs)
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

func decodeAppend(d *dec, strs []string) (metadata.Append, metadata.AppendResult) {
	a := metadata.Append{Topic: d.ref(strs, "topic"), Partition: d.int32("partition"), Object: d.ref(strs, "object")}
	vs := make([]int64, 7)
	for i := range vs {
		vs[i] = d.varint("block field")
	}
	a.Off, a.Len, a.Records, a.MinTS, a.MaxTS, a.RawBytes = vs[0], vs[1], vs[2], vs[3], vs[3]+vs[4], vs[5]
	res := metadata.AppendResult{Base: vs[6], Err: decodeErr(d, strs)}
	n := d.count("producer batches", 7)
	for range n {
		b := metadata.ProducerBatch{ID: d.varint("producer id"), Epoch: d.int32("epoch"), FirstSeq: d.int32("sequence"), Count: d.int32("count"), Index: d.varint("index")}
		br := metadata.BatchResult{Base: d.varint("batch base"), Duplicate: d.byte1("duplicate") == 1}
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
