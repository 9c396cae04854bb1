package scan

// The scan's decode path before segment.VisitBlock and the direct column
// writers (DecodeBlock into []segment.Record, then Arrow builders), kept
// in the tests only so that BenchmarkScan compares both in one run.

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// UseLegacyScanDecode switches every scan to the old decode path (on) or
// back (off).
func UseLegacyScanDecode(on bool) {
	if on {
		scanBlockFunc = func(s *Scanner, t *scanTask) ([]arrow.RecordBatch, error) {
			recs, err := s.legacyScanBlock(s.ctx, t.e)
			if err != nil {
				return nil, err
			}
			return s.legacyToArrow(t, recs)
		}
	} else {
		scanBlockFunc = (*Scanner).scanTaskBatches
	}
}

// legacyScanBlock reads a block like ReadBlock does (leaving the block
// cache alone) and decodes it whole.
func (s *Scanner) legacyScanBlock(ctx context.Context, e metadata.IndexEntry) ([]segment.Record, error) {
	b, cached, err := s.r.blocks.ReadBlock(ctx, e)
	if err != nil {
		return nil, err
	}
	if cached != nil {
		return cached, nil
	}
	recs, err := segment.DecodeBlock(b)
	if err == nil && int64(len(recs)) != e.Records {
		err = fmt.Errorf("%w: block has %d records, the index says %d", segment.ErrCorrupt, len(recs), e.Records)
	}
	if err != nil {
		s.r.log.Error("corrupt block", "object", e.Object, "off", e.Off, "err", err)
		return nil, blockcache.DataLoss(e, err)
	}
	return recs, nil
}

// toArrow turns the records [t.lo, t.hi) of a block that pass the filters
// into record batches of at most MaxBatchRecords rows.
func (s *Scanner) legacyToArrow(t *scanTask, recs []segment.Record) ([]arrow.RecordBatch, error) {
	var out []arrow.RecordBatch
	b := newLegacyBuilder(s.alloc)
	b.topicName = s.req.Topic
	defer b.release()
	for o := t.lo; o < t.hi; o++ {
		r := &recs[o-t.e.Base]
		if r.Timestamp < s.req.FromTime || (s.req.ToTime > 0 && r.Timestamp >= s.req.ToTime) {
			continue
		}
		if s.keys != nil {
			if r.Key == nil {
				continue
			}
			if _, ok := s.keys[string(r.Key)]; !ok {
				continue
			}
		}
		if b.rows == 0 {
			n := min(int(t.hi-o), s.req.MaxBatchRecords)
			b.reserve(recs[o-t.e.Base : o-t.e.Base+int64(n)])
		}
		b.append(s.req.Topic, t.e.Partition, o, r)
		if b.rows >= s.req.MaxBatchRecords {
			out = append(out, b.finish())
		}
	}
	if b.rows > 0 {
		out = append(out, b.finish())
	}
	return out, nil
}

// legacyBuilder appends records as rows of RecordSchema.
type legacyBuilder struct {
	rb      *array.RecordBuilder
	topic   *array.StringBuilder
	part    *array.Int32Builder
	off     *array.Int64Builder
	ts      *array.TimestampBuilder
	key     *array.BinaryBuilder
	value   *array.BinaryBuilder
	headers *array.ListBuilder
	hstruct *array.StructBuilder
	hkey    *array.StringBuilder
	hval    *array.BinaryBuilder
	rows    int

	topicName string
}

func newLegacyBuilder(alloc memory.Allocator) *legacyBuilder {
	rb := array.NewRecordBuilder(alloc, RecordSchema)
	b := &legacyBuilder{
		rb:      rb,
		topic:   rb.Field(0).(*array.StringBuilder),
		part:    rb.Field(1).(*array.Int32Builder),
		off:     rb.Field(2).(*array.Int64Builder),
		ts:      rb.Field(3).(*array.TimestampBuilder),
		key:     rb.Field(4).(*array.BinaryBuilder),
		value:   rb.Field(5).(*array.BinaryBuilder),
		headers: rb.Field(6).(*array.ListBuilder),
	}
	b.hstruct = b.headers.ValueBuilder().(*array.StructBuilder)
	b.hkey = b.hstruct.FieldBuilder(0).(*array.StringBuilder)
	b.hval = b.hstruct.FieldBuilder(1).(*array.BinaryBuilder)
	return b
}

// reserve sizes the builders for recs, so appends never reallocate.
func (b *legacyBuilder) reserve(recs []segment.Record) {
	var keys, values, hk, hv, hn int
	for i := range recs {
		keys += len(recs[i].Key)
		values += len(recs[i].Value)
		hn += len(recs[i].Headers)
		for _, h := range recs[i].Headers {
			hk += len(h.Key)
			hv += len(h.Value)
		}
	}
	b.rb.Reserve(len(recs))
	b.topic.ReserveData(len(recs) * len(b.topicName))
	b.key.ReserveData(keys)
	b.value.ReserveData(values)
	if hn > 0 {
		b.hstruct.Reserve(hn)
		b.hkey.ReserveData(hk)
		b.hval.ReserveData(hv)
	}
}

func (b *legacyBuilder) append(topic string, p int32, offset int64, r *segment.Record) {
	b.topic.Append(topic)
	b.part.Append(p)
	b.off.Append(offset)
	b.ts.Append(arrow.Timestamp(r.Timestamp))
	if r.Key == nil {
		b.key.AppendNull()
	} else {
		b.key.Append(r.Key)
	}
	if r.Value == nil {
		b.value.AppendNull()
	} else {
		b.value.Append(r.Value)
	}
	b.headers.Append(true)
	for _, h := range r.Headers {
		b.hstruct.Append(true)
		b.hkey.Append(h.Key)
		if h.Value == nil {
			b.hval.AppendNull()
		} else {
			b.hval.Append(h.Value)
		}
	}
	b.rows++
}

func (b *legacyBuilder) finish() arrow.RecordBatch {
	b.rows = 0
	return b.rb.NewRecordBatch()
}

func (b *legacyBuilder) release() { b.rb.Release() }
