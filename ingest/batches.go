package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// Batches is one partition's records in the batch form of a produce
// request: Kafka RecordBatch v2 batches, back to back, as the producer
// built and compressed them (docs/segment-format.md, "The produce wire
// form").
type Batches struct {
	Partition int32
	Bytes     []byte
}

// BatchResult is where an entry of ProduceBatches landed: its records
// have offsets Base .. Base+Records-1.
type BatchResult struct {
	Partition int32
	Base      int64
	Records   int
}

// MaxBatchUncompressedBytes bounds what one produced batch may decompress
// to (the decompression-bomb guard of the node's validation).
const MaxBatchUncompressedBytes = 64 << 20

// CoalesceBelow: an entry whose records are smaller than this uncompressed
// (and whose batches carry no producer id) has its records re-encoded
// into the block's batch being filled, so that the small batches of a
// producer at a low rate are compressed together at flush (zstd of a few
// records barely compresses, and each batch costs a 61-byte header). At
// higher rates entries are larger and stored as they are.
const CoalesceBelow = 32 << 10

// coalesce reports whether entry i of req is appended record by record.
func (r *produceReq) coalesce(i int) bool {
	info := &r.infos[i]
	raw := 0
	for j := range info.Batches {
		if info.Batches[j].ProducerID >= 0 {
			return false
		}
		raw += info.Batches[j].UncompressedBytes
	}
	return raw < CoalesceBelow
}

// entryBytes is the memory entry i of req holds once appended.
func (r *produceReq) entryBytes(i int) int64 {
	if r.coalesce(i) {
		// The records re-encoded: deltas may take a few bytes more.
		n := 16 * r.infos[i].Records
		for j := range r.infos[i].Batches {
			n += r.infos[i].Batches[j].UncompressedBytes
		}
		return int64(n)
	}
	return int64(len(r.batches[i].Bytes))
}

// rawBytes is entry i's records uncompressed (the varve.ingest.bytes
// counter): its batches' decompressed records, or their stored size when
// that is not known.
func (r *produceReq) rawBytes(i int) int64 {
	var n int64
	for _, b := range r.infos[i].Batches {
		if b.UncompressedBytes > 0 {
			n += int64(b.UncompressedBytes)
		} else {
			n += int64(b.Length)
		}
	}
	return n
}

// appendEntry appends entry i of req to block b: its batches as they are,
// or its records when it is small (coalesce).
func (r *produceReq) appendEntry(b *segment.BlockBuilder, i int) {
	var err error
	if r.coalesce(i) {
		err = b.AppendBatchesRecords(r.batches[i].Bytes, &r.infos[i])
	} else {
		err = b.AppendBatches(r.batches[i].Bytes, &r.infos[i])
	}
	if err != nil {
		// Cannot happen: the infos describe these bytes, checked in full.
		panic(fmt.Sprintf("ingest: append validated batches of partition %d: %v", r.batches[i].Partition, err))
	}
}

// produceReq is a produce request in either form: records, or batches
// with what ValidateBatches found in each entry.
type produceReq struct {
	recs    []Record
	batches []Batches
	infos   []segment.BatchesInfo
}

// counts returns the records of each partition of the request. A record
// without a partition is refused: an idempotent producer chooses them.
func (r *produceReq) counts(topicName string) (map[int32]int32, error) {
	counts := map[int32]int32{}
	if r.batches != nil {
		for i, e := range r.batches {
			counts[e.Partition] = int32(r.infos[i].Records)
		}
		return counts, nil
	}
	for i, rec := range r.recs {
		if rec.Partition < 0 {
			return nil, fmt.Errorf("%w: produce to %q: record %d has no partition; an idempotent producer chooses every record's partition",
				metadata.ErrInvalidArgument, topicName, i)
		}
		counts[rec.Partition]++
	}
	return counts, nil
}

// ProduceBatches appends the batch form of a request to topic — each
// entry one partition's batches — and returns, per entry, where its
// records landed, once all are stored and committed. The batches are
// checked in full (ValidateBatches, Strict: CRC, framing, counts, every
// record, the topic's max_record_bytes per record, timestamps, header
// keys) and stored as they are: no record is decoded into a Record or
// encoded again. Either every entry is accepted or none is; a refused
// request changes nothing.
//
// With idem (nil without idempotence), each entry's records form the
// partition's batch of that producer, as in ProduceIdempotent; batch
// headers must carry producerId -1 or exactly the request's producer,
// epoch and sequences.
func (in *Ingester) ProduceBatches(ctx context.Context, topicName string, bs []Batches, idem *Idempotence) ([]BatchResult, error) {
	if err := metadata.ValidateTopicName(topicName); err != nil {
		return nil, err
	}
	if len(bs) == 0 {
		return nil, fmt.Errorf("%w: produce to %q: empty batch", metadata.ErrInvalidArgument, topicName)
	}
	maxP := int32(-1)
	for _, e := range bs {
		maxP = max(maxP, e.Partition)
	}
	t, err := in.topicFor(ctx, topicName, maxP)
	if err != nil {
		return nil, err
	}
	req := &produceReq{batches: bs}
	size, err := in.checkBatches(t, req, idem)
	if err != nil {
		return nil, err
	}
	if idem != nil {
		res, err := in.produceIdempotent(ctx, t, req, size, idem)
		if err != nil {
			return nil, err
		}
		out := make([]BatchResult, len(bs))
		for i, e := range bs {
			out[i] = BatchResult{Partition: e.Partition, Base: res[i].Offset, Records: req.infos[i].Records}
		}
		return out, nil
	}

	in.mu.Lock()
	f, err := in.acceptLocked(ctx, size)
	if err != nil {
		in.mu.Unlock()
		return nil, err
	}
	starts := make([]int, len(bs))
	records := 0
	var raw int64
	for i, e := range bs {
		tp := tpKey{t.Name, e.Partition}
		b := f.blocks[tp]
		if b == nil {
			b = in.newBlockLocked(f, tp)
		}
		starts[i] = b.Len()
		req.appendEntry(b, i)
		records += req.infos[i].Records
		raw += req.rawBytes(i)
	}
	in.addAndUnlock(ctx, f, size, raw, records)
	if err := await(ctx, f, topicName); err != nil {
		return nil, err
	}
	out := make([]BatchResult, len(bs))
	for i, e := range bs {
		tp := tpKey{t.Name, e.Partition}
		if err := f.errs[tp]; err != nil {
			return nil, err
		}
		out[i] = BatchResult{Partition: e.Partition, Base: f.bases[tp] + int64(starts[i]), Records: req.infos[i].Records}
	}
	return out, nil
}

// checkBatches validates every entry of req against topic t (filling
// req.infos) and returns the bytes the request holds.
func (in *Ingester) checkBatches(t metadata.Topic, req *produceReq, idem *Idempotence) (int64, error) {
	seen := make(map[int32]bool, len(req.batches))
	req.infos = make([]segment.BatchesInfo, len(req.batches))
	limits := segment.BatchLimits{
		MaxRecordBytes:       int(t.MaxRecordBytes),
		MaxUncompressedBytes: MaxBatchUncompressedBytes,
		Strict:               true,
		Produced:             true,
	}
	var size int64
	for i, e := range req.batches {
		if e.Partition < 0 || e.Partition >= t.Partitions {
			return 0, fmt.Errorf("%w: produce to %q: batches entry %d: topic has %d partitions, got partition %d",
				metadata.ErrPartitionOutOfRange, t.Name, i, t.Partitions, e.Partition)
		}
		if seen[e.Partition] {
			return 0, fmt.Errorf("%w: produce to %q: partition %d has two batches entries; put its batches in one",
				metadata.ErrInvalidArgument, t.Name, e.Partition)
		}
		seen[e.Partition] = true
		info, err := segment.ValidateBatches(e.Bytes, limits)
		if err != nil {
			sentinel := metadata.ErrInvalidArgument
			if errors.Is(err, segment.ErrBatchRecordTooLarge) {
				sentinel = ErrRecordTooLarge
				err = fmt.Errorf("%v (topic %q allows %d: max_record_bytes, counted as the record's Kafka encoding)", err, t.Name, t.MaxRecordBytes)
			}
			return 0, fmt.Errorf("%w: produce to %q partition %d: %v", sentinel, t.Name, e.Partition, err)
		}
		if err := checkBatchProducer(t.Name, e.Partition, &info, idem); err != nil {
			return 0, err
		}
		req.infos[i] = info
		size += req.entryBytes(i)
	}
	if size > in.cfg.MaxBufferBytes {
		return 0, fmt.Errorf("%w: batches of %d bytes exceed the node's buffer of %d bytes; send smaller requests",
			metadata.ErrInvalidArgument, size, in.cfg.MaxBufferBytes)
	}
	return size, nil
}

// checkBatchProducer checks the producer fields of a partition's batch
// headers against the request's idempotence: -1 everywhere, or the
// request's producer id and epoch with sequences that continue each other
// from the partition's first sequence.
func checkBatchProducer(topic string, p int32, info *segment.BatchesInfo, idem *Idempotence) error {
	var next int64 = -1
	if idem != nil {
		if seq, ok := idem.Sequences[p]; ok {
			next = int64(seq)
		}
	}
	for j := range info.Batches {
		b := &info.Batches[j]
		if b.ProducerID < 0 {
			// Not idempotent: baseSequence means nothing. Kafka's brokers
			// ignore it, and clients send 0 as well as -1 (franz-go).
			if next >= 0 {
				next += int64(b.Records)
			}
			continue
		}
		switch {
		case idem == nil:
			return fmt.Errorf("%w: produce to %q partition %d: batch %d carries producerId %d; send the request's producer_id, producer_epoch and sequences (or producerId -1)",
				metadata.ErrInvalidArgument, topic, p, j, b.ProducerID)
		case b.ProducerID != idem.ProducerID || int32(b.ProducerEpoch) != idem.Epoch:
			return fmt.Errorf("%w: produce to %q partition %d: batch %d: producerId %d epoch %d, the request's are %d and %d",
				metadata.ErrInvalidArgument, topic, p, j, b.ProducerID, b.ProducerEpoch, idem.ProducerID, idem.Epoch)
		case next >= 0 && int64(b.BaseSequence) != next%(math.MaxInt32+1):
			return fmt.Errorf("%w: produce to %q partition %d: batch %d: baseSequence %d, want %d (the request's sequences)",
				metadata.ErrInvalidArgument, topic, p, j, b.BaseSequence, next)
		}
		if next >= 0 {
			next += int64(b.Records)
		}
	}
	return nil
}
