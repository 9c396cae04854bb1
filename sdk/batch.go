package sdk

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
	"weak"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/tier/segment"
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
// timestamp get the current time (the node cannot stamp batches).
func batchRequest(req *varvev1.ProduceRequest, batch []*pendingRecord, parts []int32) error {
	idx := make([]int, len(batch))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return int(parts[a]) - int(parts[b]) })
	sorted := make([]*pendingRecord, len(batch))
	sparts := make([]int32, len(batch))
	for i, j := range idx {
		sorted[i], sparts[i] = batch[j], parts[j]
	}
	copy(batch, sorted)
	copy(parts, sparts)

	now := time.Now().UnixMilli()
	req.Records = nil
	req.Batches = req.Batches[:0]
	recs := make([]segment.Record, 0, len(batch))
	for start := 0; start < len(batch); {
		end := start
		recs = recs[:0]
		for ; end < len(batch) && parts[end] == parts[start]; end++ {
			r := &batch[end].rec
			sr := segment.Record{Key: r.Key, Value: r.Value, Timestamp: now}
			if !r.Timestamp.IsZero() {
				sr.Timestamp = r.Timestamp.UnixMilli()
			}
			if len(r.Headers) > 0 {
				sr.Headers = make([]segment.Header, len(r.Headers))
				for i, h := range r.Headers {
					sr.Headers[i] = segment.Header{Key: h.Key, Value: h.Value}
				}
			}
			recs = append(recs, sr)
		}
		b, err := segment.AppendProducerBatches(nil, recs)
		if err != nil {
			return connect.NewError(connect.CodeInvalidArgument, err)
		}
		req.Batches = append(req.Batches, &varvev1.PartitionBatches{Partition: parts[start], RecordBatches: b})
		start = end
	}
	return nil
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
		srecs, offs, err := segment.DecodeBatches(m.GetRecordBatches(), offset)
		if err != nil {
			err = connect.NewError(connect.CodeDataLoss, fmt.Errorf("fetch %s/%d at offset %d: %w", topic, partition, offset, err))
			c.fetched(topic, partition, nil, start, err)
			return nil, err
		}
		recs = make([]Record, len(srecs))
		for i, r := range srecs {
			recs[i] = Record{Topic: topic, Partition: partition, ExplicitPartition: true, Offset: offs[i],
				Key: r.Key, Value: r.Value, Timestamp: time.UnixMilli(r.Timestamp)}
			if len(r.Headers) > 0 {
				recs[i].Headers = make([]Header, len(r.Headers))
				for j, h := range r.Headers {
					recs[i].Headers[j] = Header{Key: h.Key, Value: h.Value}
				}
			}
		}
	} else {
		recs = fromProtoRecords(topic, m.GetRecords()) // a node without the batch form
	}
	c.fetched(topic, partition, recs, start, nil)
	return fetchResult(m, recs), nil
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
