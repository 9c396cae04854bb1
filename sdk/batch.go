package sdk

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"
	"weak"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/tier/segment"
	"github.com/varve-io/varve/tier/segment/kafkabatch"
)

// The batch form of a produce request (docs/segment-format.md, "The
// produce wire form"): the producer encodes each partition's records as
// Kafka RecordBatch v2 batches, zstd-compressed, and the node stores their
// bytes as they are. The results come back one per record, the entries in
// request order and each entry's records in order.

// batchRequest fills req with the batch form of batch, whose record i goes
// to partition parts[i]: one entry per partition, in order of partition.
// It sorts batch (and parts) by partition, stably, so that the response's
// results, in entry order, match batch's order. Records without a
// timestamp get the current time (the node cannot stamp batches). cs, the
// topic sender's compressState (nil: always try zstd), decides whether
// this request's batches are compressed and learns from the outcome.
func batchRequest(req *varvev1.ProduceRequest, batch []*pendingRecord, parts []int32, cs *compressState) error {
	sortByPartition(batch, parts)
	compress := cs == nil || cs.skip == 0
	if !compress {
		cs.skip--
	}
	size, data := 0, 0

	now := time.Now().UnixMilli()
	req.Records = nil
	req.Batches = req.Batches[:0]
	nh := 0
	for _, p := range batch {
		nh += len(p.rec.Headers)
	}
	// The records' headers as segment.Headers, in one allocation: the
	// encoder copies them into the batch.
	hdrs := make([]segment.Header, 0, nh)
	recs := make([]segment.Record, 0, len(batch))
	for start := 0; start < len(batch); {
		end := start
		recs = recs[:0]
		for ; end < len(batch) && parts[end] == parts[start]; end++ {
			r := &batch[end].rec
			data += recordDataSize(r)
			sr := segment.Record{Key: r.Key, Value: r.Value, Timestamp: now}
			if !r.Timestamp.IsZero() {
				sr.Timestamp = r.Timestamp.UnixMilli()
			}
			if len(r.Headers) > 0 {
				h0 := len(hdrs)
				for _, h := range r.Headers {
					hdrs = append(hdrs, segment.Header(h))
				}
				sr.Headers = hdrs[h0:len(hdrs):len(hdrs)]
			}
			recs = append(recs, sr)
		}
		b, err := segment.AppendRecordBatches(nil, recs, 0, compress)
		if err != nil {
			return connect.NewError(connect.CodeInvalidArgument, err)
		}
		size += len(b)
		req.Batches = append(req.Batches, &varvev1.PartitionBatches{Partition: parts[start], RecordBatches: b})
		start = end
	}
	// Batches as sent at least 97% of the records' data: zstd saved
	// (almost) nothing.
	if compress && cs != nil && data >= incompressibleMin && int64(size)*100 >= int64(data)*incompressibleRatio {
		cs.skip = incompressibleSkip
	}
	return nil
}

// A topic's sender whose request zstd could not shrink below
// incompressibleRatio percent of its records' data (random or
// already-compressed values) sends its next incompressibleSkip requests
// uncompressed without trying, then tries again: compressing
// incompressible bytes costs as much CPU as compressing JSON, for (almost)
// nothing. Requests with less than incompressibleMin bytes of data do not
// count (a few small records may not compress even when the data does).
const (
	incompressibleSkip  = 7
	incompressibleRatio = 97
	incompressibleMin   = 64 << 10
)

// compressState is a topic sender's record of how its requests compress.
type compressState struct {
	skip int // requests still to send uncompressed
}

// sortByPartition sorts batch and parts by partition, stably: a counting
// sort over the partitions present, or a merge sort when they are spread
// over a range too wide to count.
func sortByPartition(batch []*pendingRecord, parts []int32) {
	lo, hi := int32(math.MaxInt32), int32(math.MinInt32)
	sorted := true
	for i, p := range parts {
		lo, hi = min(lo, p), max(hi, p)
		if i > 0 && p < parts[i-1] {
			sorted = false
		}
	}
	if sorted {
		return
	}
	sb := make([]*pendingRecord, len(batch))
	sp := make([]int32, len(batch))
	if span := int64(hi) - int64(lo) + 1; span <= int64(4*len(parts)+64) {
		pos := make([]int, span+1)
		for _, p := range parts {
			pos[p-lo+1]++
		}
		for i := 1; i < len(pos); i++ {
			pos[i] += pos[i-1]
		}
		for i, p := range parts {
			j := pos[p-lo]
			pos[p-lo]++
			sb[j], sp[j] = batch[i], p
		}
	} else {
		idx := make([]int, len(batch))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(parts[a], parts[b]) })
		for i, j := range idx {
			sb[i], sp[i] = batch[j], parts[j]
		}
	}
	copy(batch, sb)
	copy(parts, sp)
}

// requestCounts returns the records of each partition of req, in either
// form, and the partitions in request order.
func requestCounts(req *varvev1.ProduceRequest) (map[int32]int32, []int32) {
	counts := map[int32]int32{}
	var order []int32
	for _, r := range req.GetRecords() {
		if counts[r.GetPartition()] == 0 {
			order = append(order, r.GetPartition())
		}
		counts[r.GetPartition()]++
	}
	for _, e := range req.GetBatches() {
		n := batchRecords(e.GetRecordBatches())
		if n == 0 {
			continue
		}
		if counts[e.GetPartition()] == 0 {
			order = append(order, e.GetPartition())
		}
		counts[e.GetPartition()] += n
	}
	return counts, order
}

// requestRecords is the number of records req carries, in either form.
func requestRecords(req *varvev1.ProduceRequest) int {
	n := len(req.GetRecords())
	for _, e := range req.GetBatches() {
		n += int(batchRecords(e.GetRecordBatches()))
	}
	return n
}

// batchRecords sums the recordCount of batches this producer encoded.
func batchRecords(b []byte) int32 {
	var n int32
	for len(b) >= segment.BatchHeaderSize {
		n += int32(binary.BigEndian.Uint32(b[57:]))
		l := int(binary.BigEndian.Uint32(b[8:])) + 12
		if l < segment.BatchHeaderSize || l > len(b) {
			break
		}
		b = b[l:]
	}
	return n
}

// fetchBatches is Client.Fetch asking for the stored record batches and
// decoding them here, so the node ships stored bytes instead of
// rebuilding records.
func (c *Client) fetchBatches(ctx context.Context, topic string, partition int32, offset int64, maxBytes int32, maxWait time.Duration) (*FetchResult, error) {
	start := time.Now()
	res, err := c.batchFetcher().Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{
		Topic: topic, Partition: partition, Offset: offset, MaxBytes: maxBytes, MaxWaitMs: durationMs(maxWait),
		RecordBatches: true,
	}))
	if err != nil {
		c.fetched(topic, partition, nil, start, err)
		return nil, fmt.Errorf("fetch %s/%d at offset %d: %w", topic, partition, offset, err)
	}
	m := res.Msg
	var recs []Record
	if len(m.GetRecordBatches()) > 0 {
		recs, err = decodeFetched(topic, partition, m.GetRecordBatches(), offset)
		if err != nil {
			err = connect.NewError(connect.CodeDataLoss, fmt.Errorf("fetch %s/%d at offset %d: %w", topic, partition, offset, err))
			c.fetched(topic, partition, nil, start, err)
			return nil, err
		}
	} else {
		recs = fromProtoRecords(topic, m.GetRecords()) // a node without the batch form
	}
	c.fetched(topic, partition, recs, start, nil)
	return fetchResult(m, recs), nil
}

// decodeFetched decodes fetched record batches (absolute baseOffsets)
// into the records of topic/partition at or above offset from, walking
// the batches once into a slice sized from their headers. The records'
// headers share a few allocations, and their keys one string per run of
// equal keys.
func decodeFetched(topic string, partition int32, b []byte, from int64) ([]Record, error) {
	hint := min(segment.BatchesRecordCount(b), 1<<16)
	var recs []Record
	var slab []Header
	var lastKey string
	err := segment.VisitBatches(b, from, func(off int64, kr *kafkabatch.Record) {
		if recs == nil {
			recs = make([]Record, 0, hint)
		}
		r := Record{Topic: topic, Partition: partition, ExplicitPartition: true, Offset: off,
			Key: kr.Key, Value: kr.Value, Timestamp: time.UnixMilli(kr.Timestamp)}
		if kr.NumHeaders > 0 {
			if cap(slab)-len(slab) < kr.NumHeaders {
				slab = make([]Header, 0, max(kr.NumHeaders, min(kr.NumHeaders*max(hint-len(recs), 1), 4096)))
			}
			start := len(slab)
			kafkabatch.EachHeader(kr.Headers, kr.NumHeaders, func(k, v []byte) {
				if string(k) != lastKey {
					lastKey = string(k)
				}
				slab = append(slab, Header{Key: lastKey, Value: v})
			})
			r.Headers = slab[start:len(slab):len(slab)]
		}
		recs = append(recs, r)
	})
	if err != nil {
		return nil, err
	}
	if recs == nil {
		recs = []Record{} // as before: an empty fetch is an empty, not nil, slice
	}
	return recs, nil
}

// batchFetchers holds each Client's fetch client for batches, which asks
// for no gzip: stored batches are compressed already (zstd), and gzip
// would cap a fetch at the speed of one gzip stream, as for scans.
var batchFetchers sync.Map // weak.Pointer[Client] -> varvev1connect.FetchServiceClient

func (c *Client) batchFetcher() varvev1connect.FetchServiceClient {
	key := weak.Make(c)
	if f, ok := batchFetchers.Load(key); ok {
		return f.(varvev1connect.FetchServiceClient)
	}
	f := varvev1connect.NewFetchServiceClient(c.http, c.addr, append(c.copts[:len(c.copts):len(c.copts)], connect.WithAcceptCompression("gzip", nil, nil))...)
	if actual, loaded := batchFetchers.LoadOrStore(key, f); loaded {
		return actual.(varvev1connect.FetchServiceClient)
	}
	runtime.AddCleanup(c, func(k weak.Pointer[Client]) { batchFetchers.Delete(k) }, key)
	return f
}
