package fetch

import (
	"context"
	"time"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// BatchesResult is the answer to FetchBatches.
type BatchesResult struct {
	// Batches are Kafka RecordBatch v2 batches as stored, baseOffset made
	// absolute, back to back (segment.BlockBatches): whole blocks, so the
	// first batch may start before the offset asked for.
	Batches []byte
	// Next is the offset to fetch next.
	Next           int64
	HighWatermark  int64
	LogStartOffset int64
}

// FetchBatches is Fetch answering with the stored record batches of the
// blocks from offset on, up to about maxBytes of them (at least one block
// when a record exists), instead of decoded records: a version 3 block's
// batches are copied as they are (only baseOffset is rewritten), older
// blocks are encoded into batches. Checks, waiting and errors are Fetch's.
func (f *Fetcher) FetchBatches(ctx context.Context, topic string, p int32, offset int64, maxBytes int, maxWait time.Duration) (BatchesResult, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	// Position, wait and refuse exactly as Fetch does, with one record
	// (found without decoding its block where it has no compaction gaps).
	first, err := f.fetch(ctx, topic, p, offset, 1, maxWait, true)
	res := BatchesResult{Next: first.Next, HighWatermark: first.HighWatermark, LogStartOffset: first.LogStartOffset}
	if err != nil || len(first.Records) == 0 {
		return res, err
	}
	return f.batchesFrom(ctx, topic, p, first, maxBytes)
}

// batchesFrom answers the stored batches of p's blocks from the record
// first (a position found by fetch) on, up to about maxBytes of them.
func (f *Fetcher) batchesFrom(ctx context.Context, topic string, p int32, first Result, maxBytes int) (BatchesResult, error) {
	res := BatchesResult{Next: first.Next, HighWatermark: first.HighWatermark, LogStartOffset: first.LogStartOffset}
	at := first.Records[0].Offset
	entries := f.index.Entries(topic, p, at, 16)
	if len(entries) == 0 || entries[0].Base > at {
		// The watched index trails etcd: ask it for the block.
		e, _, found, _, err := f.meta.LookupIndex(ctx, topic, p, at)
		if err != nil {
			return BatchesResult{}, err
		}
		if !found {
			return res, nil
		}
		entries = []metadata.IndexEntry{e}
	}
	// Room for the stored bytes of the blocks the answer may take, at
	// once: at many partitions a block holds a few records and an answer
	// joins up to 16 of them, where growing by append copied each answer
	// about twice. (A block held only decoded is encoded larger and may
	// still grow it; so does a block past the bound on what is reserved.)
	room := int64(0)
	for _, e := range entries {
		if e.End() > at {
			room += max(e.Len, 0)
		}
		if room >= int64(maxBytes) {
			break
		}
	}
	res.Batches = make([]byte, 0, min(room, 2*int64(max(maxBytes, 0))+1<<20))
	next := at
	for _, e := range entries {
		if e.Base > next || e.End() <= next {
			if e.Base > next {
				break // never skip records
			}
			continue
		}
		var err error
		if res.Batches, err = f.blockBatches(ctx, res.Batches, e); err != nil {
			if len(res.Batches) > 0 {
				break // serve what is intact; the next fetch gets the error
			}
			return BatchesResult{}, f.blockFailed(ctx, e, next, err)
		}
		next = e.End()
		res.HighWatermark = max(res.HighWatermark, next)
		if len(res.Batches) >= maxBytes {
			break
		}
	}
	res.Next = next
	return res, nil
}

// blockBatches appends the batches of e's block to dst: its stored bytes
// as they are (BlockBatches: the block and batch CRCs checked, nothing
// decompressed) when a block tier has them — memory, or a fresh object
// read whole from its owner or the bucket (blockcache.Reader.BlockStored)
// —, else its records encoded into uncompressed batches (a block held only
// decoded: fresh from this node's ingester, or read block by block from a
// peer). A block read from disk or by range leaves its stored bytes in
// memory.
func (f *Fetcher) blockBatches(ctx context.Context, dst []byte, e metadata.IndexEntry) ([]byte, error) {
	b, recs, err := f.blocks.BlockStored(ctx, e)
	if err != nil {
		return dst, err
	}
	if b == nil {
		if b, _ = f.blocks.Memory().Stored(e.Object, e.Off); int64(len(b)) != e.Len {
			return segment.AppendRecordBatches(dst, recs, e.Base, false)
		}
	}
	return segment.BlockBatches(dst, b, e.Base)
}
