package scan

import (
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/segment"
)

// The record columns, in schema order.
const (
	colTopic = iota
	colPartition
	colOffset
	colTimestamp
	colKey
	colValue
	colHeaders
	numRecordCols
)

// scanLayout is what a scan returns: which record columns, which typed
// columns of the topic schema and whether the error column.
type scanLayout struct {
	rec    [numRecordCols]bool
	vs     *ValueSchema // nil: the topic has no schema
	typed  []bool       // per field of vs: returned
	errCol bool
	schema *arrow.Schema
}

// needJSON reports whether values must be matched against the schema.
func (l *scanLayout) needJSON() bool {
	return l.vs != nil && (l.errCol || slices.Contains(l.typed, true))
}

// topicLayout is the layout of a scan of t returning columns.
func topicLayout(t metadata.Topic, columns []string) (*scanLayout, error) {
	var vs *ValueSchema
	if t.Schema != nil {
		var err error
		if vs, err = ParseTopicSchema(*t.Schema); err != nil {
			return nil, fmt.Errorf("scan %q: the stored topic schema: %w", t.Name, err)
		}
	}
	return newLayout(t.Name, vs, columns)
}

// SchemaOf is the schema of a scan of a topic returning columns
// (empty: the default columns).
func SchemaOf(t metadata.Topic, columns []string) (*arrow.Schema, error) {
	l, err := topicLayout(t, columns)
	if err != nil {
		return nil, err
	}
	return l.schema, nil
}

// newLayout resolves the columns asked (empty: the default set) against
// the topic's schema (nil: none).
func newLayout(topic string, vs *ValueSchema, columns []string) (*scanLayout, error) {
	l := &scanLayout{vs: vs}
	if vs != nil {
		l.typed = make([]bool, len(vs.Fields))
	}
	recIdx := map[string]int{}
	for i, f := range RecordSchema.Fields() {
		recIdx[f.Name] = i
	}
	if len(columns) == 0 {
		for i := range l.rec {
			// With a schema, value and headers only when asked.
			l.rec[i] = vs == nil || (i != colValue && i != colHeaders)
		}
		for i := range l.typed {
			l.typed[i] = true
		}
		l.errCol = vs != nil
	} else {
		fieldIdx := map[string]int{}
		if vs != nil {
			for i, f := range vs.Fields {
				fieldIdx[f.Name] = i
			}
		}
		seen := map[string]bool{}
		for _, c := range columns {
			if seen[c] {
				return nil, fmt.Errorf("%w: scan %q: column %q listed twice", metadata.ErrInvalidArgument, topic, c)
			}
			seen[c] = true
			if i, ok := recIdx[c]; ok {
				l.rec[i] = true
				continue
			}
			if i, ok := fieldIdx[c]; ok {
				l.typed[i] = true
				continue
			}
			if c == ErrorColumn && vs != nil {
				l.errCol = true
				continue
			}
			avail := "topic, partition, offset, timestamp, key, value, headers"
			if vs != nil {
				for _, f := range vs.Fields {
					avail += ", " + f.Name
				}
				avail += ", " + ErrorColumn
			}
			return nil, fmt.Errorf("%w: scan %q: unknown column %q (the topic has %s)", metadata.ErrInvalidArgument, topic, c, avail)
		}
	}
	var fields []arrow.Field
	for i, f := range RecordSchema.Fields() {
		if l.rec[i] {
			fields = append(fields, f)
		}
	}
	if vs != nil {
		for i, f := range vs.arrowFields() {
			if l.typed[i] {
				fields = append(fields, f)
			}
		}
		if l.errCol {
			fields = append(fields, arrow.Field{Name: ErrorColumn, Type: arrow.BinaryTypes.String, Nullable: true})
		}
	}
	l.schema = arrow.NewSchema(fields, nil)
	return l, nil
}

// scanTaskBatches reads one block and turns the records [t.lo, t.hi) that
// pass the filters into record batches of at most MaxBatchRecords rows,
// straight from the block's decompressed bytes into Arrow buffers.
func (s *Scanner) scanTaskBatches(t *scanTask) ([]arrow.RecordBatch, error) {
	b, cached, err := s.r.blocks.ReadBlock(s.ctx, t.e)
	if err != nil {
		return nil, err
	}
	bb := newBatchBuilder(s.alloc, s.recycle, s.layout, s.req.Topic, t.e.Partition)
	defer bb.release()
	// Rows of the first batch, and value bytes expected per row.
	remaining := int(min(t.hi-t.lo, t.e.Records))
	perRow := 0
	if t.e.Records > 0 {
		perRow = int(s.decodedBytes(t.e.RawBytes) / t.e.Records)
	}
	var out []arrow.RecordBatch
	decoded := int64(0) // key and value bytes of the block's records
	defer func() { s.learnDecodeRatio(decoded, t.e.RawBytes) }()
	keep := func(off, ts int64, key []byte) bool {
		if off < t.lo || off >= t.hi || ts < s.req.FromTime || (s.req.ToTime > 0 && ts >= s.req.ToTime) {
			return false
		}
		if s.keys != nil {
			if key == nil {
				return false
			}
			if _, ok := s.keys[string(key)]; !ok {
				return false
			}
		}
		return true
	}
	start := func() {
		if bb.rows == 0 {
			n := min(remaining, s.req.MaxBatchRecords)
			bb.reserve(n, n*perRow)
		}
	}
	done := func(off int64) {
		remaining = int(min(int64(remaining), t.hi-off-1))
		if bb.rows >= s.req.MaxBatchRecords {
			out = append(out, bb.finish())
		}
	}
	fail := func(err error) ([]arrow.RecordBatch, error) {
		for _, r := range out {
			r.Release()
		}
		return nil, err
	}
	if cached != nil {
		offs := segment.Offsets(t.e.Base, cached)
		for i := range cached {
			r := &cached[i]
			decoded += int64(len(r.Key) + len(r.Value))
			if !keep(offs[i], r.Timestamp, r.Key) {
				continue
			}
			start()
			bb.appendRecord(offs[i], r.Timestamp, r.Key, r.Value)
			if bb.hdr != nil {
				for _, h := range r.Headers {
					bb.hdr.addString(h.Key, h.Value)
				}
				bb.hdr.endRow()
			}
			done(offs[i])
		}
	} else {
		n, err := segment.VisitBlock(b, t.e.Base, func(v *segment.RecordView) error {
			decoded += int64(len(v.Key) + len(v.Value))
			if !keep(v.Offset, v.Timestamp, v.Key) {
				return nil
			}
			start()
			bb.appendRecord(v.Offset, v.Timestamp, v.Key, v.Value)
			if bb.hdr != nil {
				v.EachHeader(bb.hdr.add)
				bb.hdr.endRow()
			}
			done(v.Offset)
			return nil
		})
		if err == nil && int64(n) != t.e.Records {
			err = fmt.Errorf("%w: block has %d records, the index says %d", segment.ErrCorrupt, n, t.e.Records)
		}
		if err != nil {
			s.r.log.Error("corrupt block", "object", t.e.Object, "off", t.e.Off, "err", err)
			return fail(blockcache.DataLoss(t.e, err))
		}
	}
	if bb.rows > 0 {
		out = append(out, bb.finish())
	}
	return out, nil
}

// batchBuilder appends records as rows of a scan layout. The record
// columns are written straight into Arrow buffers; typed columns go
// through Arrow builders.
type batchBuilder struct {
	alloc  memory.Allocator
	l      *scanLayout
	topic  string
	part   int32
	rows   int
	off    *fixedCol[int64]
	ts     *fixedCol[int64]
	key    *binCol
	value  *binCol
	hdr    *headerCol
	typed  []array.Builder // per schema field; nil when not returned
	errb   *array.StringBuilder
	jr     *jsonRow
	tsType arrow.DataType
}

// newBatchBuilder makes a builder whose record columns take their
// buffers from cols (which need not zero them) and typed columns from
// alloc.
func newBatchBuilder(alloc, cols memory.Allocator, l *scanLayout, topic string, part int32) *batchBuilder {
	b := &batchBuilder{alloc: cols, l: l, topic: topic, part: part, tsType: RecordSchema.Field(colTimestamp).Type}
	if l.rec[colOffset] {
		b.off = newFixedCol[int64](cols)
	}
	if l.rec[colTimestamp] {
		b.ts = newFixedCol[int64](cols)
	}
	if l.rec[colKey] {
		b.key = newBinCol(cols)
	}
	if l.rec[colValue] {
		b.value = newBinCol(cols)
	}
	if l.rec[colHeaders] {
		b.hdr = newHeaderCol(cols)
	}
	if l.needJSON() {
		b.jr = newJSONRow(l.vs)
		b.typed = make([]array.Builder, len(l.vs.Fields))
		for i, f := range l.vs.Fields {
			if l.typed[i] {
				b.typed[i] = array.NewBuilder(alloc, f.Type)
			}
		}
		if l.errCol {
			b.errb = array.NewStringBuilder(alloc)
		}
	}
	return b
}

// reserve sizes the buffers for rows more rows holding about valueBytes of
// values, so appends rarely reallocate.
func (b *batchBuilder) reserve(rows, valueBytes int) {
	if b.off != nil {
		b.off.reserve(rows)
	}
	if b.ts != nil {
		b.ts.reserve(rows)
	}
	if b.key != nil {
		b.key.reserve(rows, rows*16)
	}
	if b.value != nil {
		b.value.reserve(rows, valueBytes)
	}
	if b.hdr != nil {
		b.hdr.lists.reserve(rows)
	}
	for _, tb := range b.typed {
		if tb != nil {
			tb.Reserve(rows)
		}
	}
	if b.errb != nil {
		b.errb.Reserve(rows)
	}
}

func (b *batchBuilder) appendRecord(off, ts int64, key, value []byte) {
	if b.off != nil {
		b.off.append(off)
	}
	if b.ts != nil {
		b.ts.append(ts)
	}
	if b.key != nil {
		b.key.append(key)
	}
	if b.value != nil {
		b.value.append(value)
	}
	if b.jr != nil {
		if err := b.jr.match(value); err != nil {
			for _, tb := range b.typed {
				if tb != nil {
					tb.AppendNull()
				}
			}
			if b.errb != nil {
				b.errb.Append(err.Error())
			}
		} else {
			b.jr.appendTo(b.typed)
			if b.errb != nil {
				b.errb.AppendNull()
			}
		}
	}
	b.rows++
}

// finish returns the rows so far as a record batch and starts anew.
func (b *batchBuilder) finish() arrow.RecordBatch {
	n := b.rows
	b.rows = 0
	var cols []arrow.Array
	defer func() {
		for _, c := range cols {
			c.Release()
		}
	}()
	if b.l.rec[colTopic] {
		cols = append(cols, constString(b.alloc, b.topic, n))
	}
	if b.l.rec[colPartition] {
		cols = append(cols, constInt32(b.alloc, b.part, n))
	}
	if b.off != nil {
		cols = append(cols, b.off.finish(arrow.PrimitiveTypes.Int64))
	}
	if b.ts != nil {
		cols = append(cols, b.ts.finish(b.tsType))
	}
	if b.key != nil {
		cols = append(cols, b.key.finish(arrow.BinaryTypes.Binary))
	}
	if b.value != nil {
		cols = append(cols, b.value.finish(arrow.BinaryTypes.Binary))
	}
	if b.hdr != nil {
		cols = append(cols, b.hdr.finish(RecordSchema.Field(colHeaders).Type))
	}
	for _, tb := range b.typed {
		if tb != nil {
			cols = append(cols, tb.NewArray())
		}
	}
	if b.errb != nil {
		cols = append(cols, b.errb.NewArray())
	}
	return array.NewRecordBatch(b.l.schema, cols, int64(n))
}

func (b *batchBuilder) release() {
	if b.off != nil {
		b.off.release()
	}
	if b.ts != nil {
		b.ts.release()
	}
	if b.key != nil {
		b.key.release()
	}
	if b.value != nil {
		b.value.release()
	}
	if b.hdr != nil {
		b.hdr.release()
	}
	for _, tb := range b.typed {
		if tb != nil {
			tb.Release()
		}
	}
	if b.errb != nil {
		b.errb.Release()
	}
}
