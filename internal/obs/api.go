package obs

import (
	"context"
	"encoding/binary"
	"log/slog"
	"sync"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/tier/segment/kafkabatch"
)

// apiTelemetry counts what the API moves per topic and logs administrative
// changes. Bytes of records are their payload: key, value and headers; of
// the batch form (Kafka RecordBatch v2, as the SDK sends and fetches), the
// batches' bytes as they cross the API (compressed), as Kafka's per-topic
// BytesIn and BytesOut count them.
type apiTelemetry struct {
	log                           *slog.Logger
	producedRecords, producedByte metric.Int64Counter
	fetchedRecords, fetchedBytes  metric.Int64Counter
	served                        metric.Int64Counter

	mu   sync.Mutex
	sets map[[2]string]metric.MeasurementOption // by attribute key and value
}

// APIInterceptor returns the server interceptor that counts what Varve's
// API moves per topic (records and payload bytes produced and fetched,
// response bytes served to readers per procedure) on mp, and logs every
// successful administrative change at info on log.
func APIInterceptor(mp metric.MeterProvider, log *slog.Logger) (connect.Interceptor, error) {
	return newAPITelemetry(mp, log)
}

func newAPITelemetry(mp metric.MeterProvider, log *slog.Logger) (*apiTelemetry, error) {
	m := mp.Meter("github.com/varve-io/varve/node")
	a := &apiTelemetry{log: log, sets: map[[2]string]metric.MeasurementOption{}}
	var err error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, e := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err == nil {
			err = e
		}
		return c
	}
	a.producedRecords = counter("varve.topic.produced.records", "", "Records acknowledged to producers, by topic.")
	a.producedByte = counter("varve.topic.produced.bytes", "By", "Bytes acknowledged to producers, by topic: payload (key, value, headers) of records, Kafka record batches as sent.")
	a.fetchedRecords = counter("varve.topic.fetched.records", "", "Records served by Fetch, FetchPartitions and Subscribe, by topic.")
	a.fetchedBytes = counter("varve.topic.fetched.bytes", "By", "Bytes served by Fetch, FetchPartitions and Subscribe, by topic: payload (key, value, headers) of records, Kafka record batches as stored.")
	a.served = counter("varve.served.bytes", "By", "Response bytes served to readers (Fetch, FetchPartitions, Subscribe, Scan), by procedure.")
	return a, err
}

func (a *apiTelemetry) topic(t string) metric.MeasurementOption { return a.attr("topic", t) }

func (a *apiTelemetry) proc(p string) metric.MeasurementOption { return a.attr("procedure", p) }

// attr returns the measurement option of the attribute key=value, made once.
func (a *apiTelemetry) attr(key, value string) metric.MeasurementOption {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.sets[[2]string{key, value}]
	if !ok {
		o = metric.WithAttributeSet(attribute.NewSet(attribute.String(key, value)))
		a.sets[[2]string{key, value}] = o
	}
	return o
}

func payload(r *varvev1.Record) int64 {
	n := len(r.GetKey()) + len(r.GetValue())
	for _, h := range r.GetHeaders() {
		n += len(h.GetKey()) + len(h.GetValue())
	}
	return int64(n)
}

// batchRecordsFrom counts the records at or after offset in stored Kafka
// RecordBatch v2 batches (absolute baseOffsets), from their headers alone:
// a batch fetch returns whole batches, so the first may start before the
// offset asked for. In a compacted batch (offset gaps) that straddles
// offset, the records before it are estimated from the offsets.
func batchRecordsFrom(b []byte, offset int64) int64 {
	var n int64
	for len(b) >= kafkabatch.BatchHeaderSize {
		base := int64(binary.BigEndian.Uint64(b[0:]))
		length := int(binary.BigEndian.Uint32(b[8:])) + kafkabatch.LengthBase
		if length < kafkabatch.BatchHeaderSize || length > len(b) {
			break
		}
		last := base + int64(int32(binary.BigEndian.Uint32(b[23:])))
		count := int64(int32(binary.BigEndian.Uint32(b[57:])))
		switch {
		case base >= offset:
			n += count
		case last >= offset:
			n += min(count, last-offset+1)
		}
		b = b[length:]
	}
	return n
}

func (a *apiTelemetry) fetched(ctx context.Context, topic string, recs []*varvev1.Record) {
	if len(recs) == 0 {
		return
	}
	var b int64
	for _, r := range recs {
		b += payload(r)
	}
	o := a.topic(topic)
	a.fetchedRecords.Add(ctx, int64(len(recs)), o)
	a.fetchedBytes.Add(ctx, b, o)
}

func (a *apiTelemetry) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil || req.Spec().IsClient {
			return res, err
		}
		ctx = context.WithoutCancel(ctx)
		switch m := req.Any().(type) {
		case *varvev1.ProduceRequest:
			var b int64
			for _, r := range m.GetRecords() {
				b += payload(r.GetRecord())
			}
			for _, e := range m.GetBatches() {
				b += int64(len(e.GetRecordBatches()))
			}
			o := a.topic(m.GetTopic())
			if out, ok := res.Any().(*varvev1.ProduceResponse); ok {
				// One result per record, in either form.
				a.producedRecords.Add(ctx, int64(len(out.GetResults())), o)
			}
			a.producedByte.Add(ctx, b, o)
		case *varvev1.FetchRequest:
			if out, ok := res.Any().(*varvev1.FetchResponse); ok {
				a.fetched(ctx, m.GetTopic(), out.GetRecords())
				if bs := out.GetRecordBatches(); len(bs) > 0 {
					o := a.topic(m.GetTopic())
					a.fetchedRecords.Add(ctx, batchRecordsFrom(bs, m.GetOffset()), o)
					a.fetchedBytes.Add(ctx, int64(len(bs)), o)
				}
				a.served.Add(ctx, int64(proto.Size(out)), a.proc(req.Spec().Procedure))
			}
		case *varvev1.FetchPartitionsRequest:
			if out, ok := res.Any().(*varvev1.FetchPartitionsResponse); ok {
				from := make(map[int32]int64, len(m.GetPartitions()))
				for _, p := range m.GetPartitions() {
					from[p.GetPartition()] = p.GetOffset()
				}
				o := a.topic(m.GetTopic())
				for _, r := range out.GetPartitions() {
					a.fetched(ctx, m.GetTopic(), r.GetRecords())
					if bs := r.GetRecordBatches(); len(bs) > 0 {
						a.fetchedRecords.Add(ctx, batchRecordsFrom(bs, from[r.GetPartition()]), o)
						a.fetchedBytes.Add(ctx, int64(len(bs)), o)
					}
				}
				a.served.Add(ctx, int64(proto.Size(out)), a.proc(req.Spec().Procedure))
			}
		default:
			a.admin(ctx, req, res)
		}
		return res, err
	}
}

// admin logs a successful administrative change at info.
func (a *apiTelemetry) admin(ctx context.Context, req connect.AnyRequest, res connect.AnyResponse) {
	var msg string
	attrs := []slog.Attr{slog.String("peer", req.Peer().Addr)}
	switch m := req.Any().(type) {
	case *varvev1.CreateTopicRequest:
		msg = "topic created"
		attrs = append(attrs, slog.String("topic", m.GetName()), slog.Int("partitions", int(m.GetPartitions())))
		if out, ok := res.Any().(*varvev1.CreateTopicResponse); ok {
			attrs = append(attrs, slog.String("id", out.GetTopic().GetId()), slog.String("config", jsonOf(out.GetTopic().GetConfig())))
		}
	case *varvev1.UpdateTopicRequest:
		msg = "topic altered"
		attrs = append(attrs, slog.String("topic", m.GetName()), slog.String("change", jsonOf(m)))
	case *varvev1.DeleteTopicRequest:
		msg = "topic deleted"
		attrs = append(attrs, slog.String("topic", m.GetName()))
	case *varvev1.ResetOffsetsRequest:
		msg = "group offsets reset"
		attrs = append(attrs, slog.String("group", m.GetGroup()), slog.String("topic", m.GetTopic()), slog.String("request", jsonOf(m)))
		if out, ok := res.Any().(*varvev1.ResetOffsetsResponse); ok {
			attrs = append(attrs, slog.String("offsets", jsonOf(out)))
		}
	case *varvev1.DeleteGroupRequest:
		msg = "group deleted"
		attrs = append(attrs, slog.String("group", m.GetGroup()))
	case *varvev1.PauseCompactionRequest:
		msg = "compaction paused"
	case *varvev1.ResumeCompactionRequest:
		msg = "compaction resumed"
	default:
		return
	}
	a.log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

func jsonOf(m proto.Message) string {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func (a *apiTelemetry) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *apiTelemetry) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(ctx, &countingConn{StreamingHandlerConn: conn, a: a, ctx: context.WithoutCancel(ctx)})
	}
}

// countingConn counts what a streaming reader (Subscribe, Scan) is sent.
type countingConn struct {
	connect.StreamingHandlerConn
	a     *apiTelemetry
	ctx   context.Context
	topic string
	proc  metric.MeasurementOption
}

func (c *countingConn) Receive(m any) error {
	err := c.StreamingHandlerConn.Receive(m)
	if err == nil {
		switch r := m.(type) {
		case *varvev1.SubscribeRequest:
			c.topic = r.GetTopic()
		case *varvev1.ScanRequest:
			c.topic = r.GetTopic()
		}
	}
	return err
}

func (c *countingConn) Send(m any) error {
	err := c.StreamingHandlerConn.Send(m)
	if err != nil {
		return err
	}
	switch r := m.(type) {
	case *varvev1.SubscribeResponse:
		c.a.fetched(c.ctx, c.topic, r.GetRecords())
	case *varvev1.ScanResponse:
	default:
		return nil
	}
	if c.proc == nil {
		c.proc = c.a.proc(c.Spec().Procedure)
	}
	c.a.served.Add(c.ctx, int64(proto.Size(m.(proto.Message))), c.proc)
	return nil
}
