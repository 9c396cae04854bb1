package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// produceIdempotent is the write path of an idempotent producer's request
// (see docs/idempotence.md). The records were validated by produce.
//
// Each partition's batch is decided before anything is buffered, against
// the producer's state in etcd plus the batches this node holds and has not
// committed yet:
//   - the same batch already held here: wait for it and share its answer;
//   - a duplicate of a committed batch: answer with its original offsets;
//   - ahead of the producer's sequence (a gap): wait, up to OrderWait, for
//     the earlier batches to reach this node and decide again. A producer
//     pipelines its requests, which the node decides concurrently, so one
//     may overtake its predecessor on the way in; Kafka gets this order
//     from its connection;
//   - fenced, unknown or out of order: refuse the request, buffer nothing;
//   - otherwise buffer it. The commit transaction decides again, and is
//     the authority (another node may commit a retry meanwhile).
//
// For the record form the answer is one Result per record; for the batch
// form one per entry, the offset of its first record.
func (in *Ingester) produceIdempotent(ctx context.Context, t metadata.Topic, req *produceReq, size int64, idem *Idempotence) ([]Result, error) {
	topicName := t.Name
	parts, batches, err := idempotentBatches(topicName, req, idem)
	if err != nil {
		return nil, err
	}
	answers := make(map[int32]idemAnswer, len(parts))
	remembered := true // first try the states this node remembers
	fresh := false     // then what the reader holds, then etcd itself
	var waitUntil time.Time
	for attempt := 0; ; {
		in.mu.Lock()
		var view *metadata.ProducerView
		if remembered {
			view = in.pcache.view(idem.ProducerID, topicName, parts)
		}
		if view == nil {
			remembered = false
			done0 := in.idemDone
			in.mu.Unlock()
			in.m.stateReads.Add(ctx, 1)
			var err error
			view, err = in.meta.ReadProducer(ctx, idem.ProducerID, idem.Epoch, fresh, topicName, parts)
			if err != nil {
				return nil, fmt.Errorf("produce to %q: %w", topicName, err)
			}
			in.mu.Lock()
			attempt++
			if in.idemDone != done0 {
				if attempt < 3 {
					// A held batch was committed (and forgotten) since the
					// read: the view may miss it. Read again.
					in.mu.Unlock()
					continue
				}
			} else {
				in.pcache.remember(view, idem.ProducerID, topicName, parts)
			}
		}
		// A view the sequencer answered from the identity it holds only
		// accepts, as remembered states do: anything else is decided on a
		// fresh read (a newer epoch may have fenced it meanwhile).
		held := !remembered && view.Held()
		toAppend, decided, ahead, err := in.decideLocked(ctx, view, remembered || held, idem.ProducerID, topicName, parts, batches, answers)
		if ahead {
			if waitUntil.IsZero() {
				waitUntil = time.Now().Add(in.cfg.OrderWait)
				in.m.orderWaits.Add(ctx, 1)
			}
			if time.Now().Before(waitUntil) {
				changed := in.idemChangeLocked()
				in.mu.Unlock()
				if err := waitChange(ctx, changed, waitUntil); err != nil {
					return nil, fmt.Errorf("produce to %q: %w", topicName, err)
				}
				remembered = true
				continue
			}
		}
		if err != nil {
			if errors.Is(err, metadata.ErrOutOfOrderSequence) {
				in.m.outOfOrder.Add(ctx, 1)
			}
			in.mu.Unlock()
			return nil, fmt.Errorf("produce to %q: %w", topicName, err)
		}
		if !decided {
			remembered = false
			fresh = fresh || held
			in.mu.Unlock()
			continue
		}
		if len(toAppend) > 0 {
			if err := in.bufferBatchesLocked(ctx, idem.ProducerID, topicName, req, size, toAppend, batches, answers); err != nil {
				in.mu.Unlock()
				return nil, err
			}
		}
		in.mu.Unlock()
		break
	}
	return idempotentResults(ctx, topicName, req, answers)
}

// idempotentBatches checks an idempotent request's producer fields and
// returns its partitions, sorted, and each one's batch.
func idempotentBatches(topicName string, req *produceReq, idem *Idempotence) ([]int32, map[int32]metadata.ProducerBatch, error) {
	if idem.ProducerID <= 0 || idem.Epoch < 0 {
		return nil, nil, fmt.Errorf("%w: produce to %q: producer id %d epoch %d: ids are positive and epochs not negative (get both from InitProducer)",
			metadata.ErrInvalidArgument, topicName, idem.ProducerID, idem.Epoch)
	}
	counts, err := req.counts(topicName)
	if err != nil {
		return nil, nil, err
	}
	for p := range idem.Sequences {
		if counts[p] == 0 {
			return nil, nil, fmt.Errorf("%w: produce to %q: a sequence is given for partition %d, which has no record in the request",
				metadata.ErrInvalidArgument, topicName, p)
		}
	}
	parts := make([]int32, 0, len(counts))
	batches := make(map[int32]metadata.ProducerBatch, len(counts))
	for p, n := range counts {
		seq, ok := idem.Sequences[p]
		switch {
		case !ok:
			return nil, nil, fmt.Errorf("%w: produce to %q: partition %d has %d records but no first sequence",
				metadata.ErrInvalidArgument, topicName, p, n)
		case seq < 0 || int64(seq)+int64(n) > math.MaxInt32:
			return nil, nil, fmt.Errorf("%w: produce to %q: partition %d: first sequence %d with %d records is out of range [0, 2^31)",
				metadata.ErrInvalidArgument, topicName, p, seq, n)
		}
		parts = append(parts, p)
		batches[p] = metadata.ProducerBatch{ID: idem.ProducerID, Epoch: idem.Epoch, FirstSeq: seq, Count: n}
	}
	slices.Sort(parts)
	return parts, batches, nil
}

// idemAnswer is how a partition's batch is answered.
type idemAnswer struct {
	dupBase int64         // >= 0: a committed duplicate
	pb      *pendingBatch // else: the batch held here (own or shared)
}

// decideLocked decides each partition's batch against view plus the
// batches held here: shared with the same batch held, answered as a
// committed duplicate, or to append (toAppend). It fills answers (cleared
// first). With remembered states it decides only what they accept:
// decided is false when a partition needs a fresh read. An error is the
// view's refusal of a batch. ahead reports a batch refused (or not
// accepted) because it starts past the sequence expected: an earlier batch
// may still arrive.
func (in *Ingester) decideLocked(ctx context.Context, view *metadata.ProducerView, remembered bool, id int64, topicName string,
	parts []int32, batches map[int32]metadata.ProducerBatch, answers map[int32]idemAnswer) (toAppend []int32, decided, ahead bool, err error) {
	clear(answers)
	for _, p := range parts {
		b := batches[p]
		key := idemKey{id, tpKey{topicName, p}}
		var shared *pendingBatch
		for _, pb := range in.idem[key] {
			if pb.b.Epoch == b.Epoch && pb.b.FirstSeq == b.FirstSeq && pb.b.Count == b.Count {
				shared = pb
				break
			}
			view.Assume(p, pb.b)
		}
		if shared != nil {
			answers[p] = idemAnswer{dupBase: -1, pb: shared}
			continue
		}
		dup, err := view.Check(p, b)
		if remembered && (err != nil || dup >= 0) {
			// Remembered states only accept: decide anything else on
			// a fresh read (they may be stale).
			return nil, false, err != nil && view.Ahead(p, b), nil
		}
		if err != nil {
			return nil, false, view.Ahead(p, b), err
		}
		if dup >= 0 {
			answers[p] = idemAnswer{dupBase: dup}
			in.m.duplicates.Add(ctx, 1)
			continue
		}
		toAppend = append(toAppend, p)
	}
	return toAppend, true, false, nil
}

// idemChangeLocked returns a channel closed at the next change of the
// held batches or remembered states.
func (in *Ingester) idemChangeLocked() <-chan struct{} {
	if in.idemChanged == nil {
		in.idemChanged = make(chan struct{})
	}
	return in.idemChanged
}

// idemChangedLocked wakes the requests waiting for a change.
func (in *Ingester) idemChangedLocked() {
	if in.idemChanged != nil {
		close(in.idemChanged)
		in.idemChanged = nil
	}
}

// waitChange waits until changed is closed or until, whichever is first;
// it fails only when ctx ends.
func waitChange(ctx context.Context, changed <-chan struct{}, until time.Time) error {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// bufferBatchesLocked holds the batches of the partitions toAppend in the
// open file (a new one if the block would pass the producers one etcd
// transaction can commit) and appends their records.
func (in *Ingester) bufferBatchesLocked(ctx context.Context, id int64, topicName string, req *produceReq, size int64,
	toAppend []int32, batches map[int32]metadata.ProducerBatch, answers map[int32]idemAnswer) error {
	f, err := in.acceptLocked(ctx, size)
	if err != nil {
		return err
	}
	// Keep each block's commit within one etcd transaction.
	for _, p := range toAppend {
		tp := tpKey{topicName, p}
		if ids := f.producers[tp]; len(ids) >= metadata.MaxProducersPerBlock && !ids[id] {
			in.sealLocked()
			f = in.newFileLocked()
			break
		}
	}
	for _, p := range toAppend {
		tp := tpKey{topicName, p}
		b := f.blocks[tp]
		if b == nil {
			b = in.newBlockLocked(f, tp)
		}
		pb := batches[p]
		pb.Index = int64(b.Len())
		if f.producers[tp] == nil {
			f.producers[tp] = map[int64]bool{}
		}
		f.producers[tp][id] = true
		held := &pendingBatch{b: pb, f: f, tp: tp, j: len(f.batches[tp])}
		f.batches[tp] = append(f.batches[tp], pb)
		key := idemKey{id, tp}
		in.idem[key] = append(in.idem[key], held)
		answers[p] = idemAnswer{dupBase: -1, pb: held}
	}
	in.idemChangedLocked()
	var appended, appendedBytes, rawBytes int64
	appending := make(map[int32]bool, len(toAppend))
	for _, p := range toAppend {
		appending[p] = true
	}
	recs := req.recs
	for i := range recs {
		if appending[recs[i].Partition] {
			f.blocks[tpKey{topicName, recs[i].Partition}].Append(recs[i].Record)
			appended++
			appendedBytes += int64(segment.BatchEncodedSize(recs[i].Record))
			rawBytes += int64(segment.BatchEncodedSize(recs[i].Record))
		}
	}
	for i, e := range req.batches {
		if appending[e.Partition] {
			req.appendEntry(f.blocks[tpKey{topicName, e.Partition}], i)
			appended += int64(req.infos[i].Records)
			appendedBytes += req.entryBytes(i)
			rawBytes += req.rawBytes(i)
		}
	}
	f.bytes += appendedBytes
	f.records += int(appended)
	in.traceRequestLocked(ctx, f)
	in.pending.Add(appendedBytes)
	in.pendRec.Add(appended)
	if f.bytes >= int64(in.cfg.FlushBytes) {
		in.sealLocked()
	}
	in.m.records.Add(ctx, appended)
	in.m.bytes.Add(ctx, rawBytes)
	return nil
}

// idempotentResults waits for the batches held and answers each record:
// its batch's first offset plus its index within the batch.
func idempotentResults(ctx context.Context, topicName string, req *produceReq, answers map[int32]idemAnswer) ([]Result, error) {
	if req.batches != nil {
		out := make([]Result, len(req.batches))
		for i, e := range req.batches {
			a := answers[e.Partition]
			base := a.dupBase
			if a.pb != nil {
				var err error
				if base, err = a.pb.wait(ctx, topicName); err != nil {
					return nil, err
				}
			}
			out[i] = Result{Partition: e.Partition, Offset: base}
		}
		return out, nil
	}
	recs := req.recs
	out := make([]Result, len(recs))
	next := make(map[int32]int64, len(answers)) // index within the partition's batch
	for i, r := range recs {
		p := r.Partition
		a := answers[p]
		base := a.dupBase
		if a.pb != nil {
			var err error
			if base, err = a.pb.wait(ctx, topicName); err != nil {
				return nil, err
			}
		}
		out[i] = Result{Partition: p, Offset: base + next[p]}
		next[p]++
	}
	return out, nil
}

// newBlockLocked adds tp's block to f.
func (in *Ingester) newBlockLocked(f *file, tp tpKey) *segment.BlockBuilder {
	// Every block is a version 3 block: the batch form's batches as sent,
	// the record form's records encoded into batches.
	b := segment.NewBatchBlockBuilder(tp.topic, tp.p)
	// Compress the records' batches at flush, outside in.mu.
	b.DeferCompression()
	// Room for what the partition's block took in the last file: a block
	// otherwise grows from nothing every tick, and with N ingest nodes
	// each block is 1/N as large, so that growth was a per-node cost.
	// The room is bounded: a file's blocks sum to about flush_bytes.
	if n := in.grow[tp]; n > 0 {
		b.Grow(n + n/8)
	}
	f.blocks[tp] = b
	f.order = append(f.order, b)
	return b
}

// wait waits for the held batch's commit and returns its first offset.
func (pb *pendingBatch) wait(ctx context.Context, topicName string) (int64, error) {
	f := pb.f
	select {
	case <-f.done:
	case <-ctx.Done():
		return 0, fmt.Errorf("produce to %q: %w", topicName, ctx.Err())
	}
	if f.err != nil {
		return 0, f.err
	}
	if res := f.batchRes[pb.tp]; pb.j < len(res) {
		r := res[pb.j]
		if r.Err != nil {
			return 0, fmt.Errorf("produce to %s/%d: %w", pb.tp.topic, pb.tp.p, r.Err)
		}
		return r.Base, nil
	}
	if err := f.errs[pb.tp]; err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%w: commit %s answered no result for %s/%d's producer batch", ErrFlushFailed, f.object, pb.tp.topic, pb.tp.p)
}

// forgetBatchesLocked drops f's batches from the held set once answered.
func (in *Ingester) forgetBatchesLocked(f *file) {
	if len(f.batches) == 0 {
		return
	}
	for tp, bs := range f.batches {
		for _, b := range bs {
			key := idemKey{b.ID, tp}
			held := in.idem[key]
			held = slices.DeleteFunc(held, func(pb *pendingBatch) bool { return pb.f == f })
			if len(held) == 0 {
				delete(in.idem, key)
			} else {
				in.idem[key] = held
			}
		}
	}
	in.idemDone++
}

// rememberCommitsLocked updates the remembered producer states with f's
// outcome: each committed batch advances its producer's state; any other
// outcome (a duplicate, a refusal, a failed or unknown commit) makes the
// node forget the producer, whose next batch is then decided on a read.
func (in *Ingester) rememberCommitsLocked(f *file) {
	for tp, bs := range f.batches {
		res := f.batchRes[tp]
		for j, b := range bs {
			if f.err == nil && f.errs[tp] == nil && j < len(res) && res[j].Err == nil && !res[j].Duplicate {
				in.pcache.committed(tp, b, res[j].Base)
			} else {
				in.pcache.forget(b.ID)
			}
		}
	}
}

// AdvanceProducer moves producer id to epoch when its epoch is older
// (metadata.AdvanceProducerEpoch): a Kafka client bumped it itself.
func (in *Ingester) AdvanceProducer(ctx context.Context, id int64, epoch int32) (metadata.Producer, error) {
	p, err := in.meta.AdvanceProducerEpoch(ctx, id, epoch)
	in.mu.Lock()
	in.pcache.forget(id)
	in.mu.Unlock()
	return p, err
}

// InitProducer issues an idempotent producer identity: a new id at epoch 0
// (id 0) or the next epoch of an existing id, which fences older instances.
func (in *Ingester) InitProducer(ctx context.Context, id int64) (metadata.Producer, error) {
	p, err := in.meta.InitProducer(ctx, id, in.cfg.ProducerStateTTL)
	if id != 0 {
		in.mu.Lock()
		in.pcache.forget(id)
		in.mu.Unlock()
	}
	return p, err
}
