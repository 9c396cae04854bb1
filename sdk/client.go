package sdk

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/sdk/internal/failover"
	"github.com/varve-io/varve/sdk/internal/place"
)

// AnyPartition in Record.Partition lets the cluster (or the producer's
// Partitioner) choose the partition, as the zero value does: murmur2 of the
// key, or the sticky partition for records without a key. It is kept for
// code written when the zero value meant partition 0.
const AnyPartition int32 = -1

// MaxRecordBytes is the largest record (key, value and headers) any topic
// accepts: the upper bound of a topic's max_record_bytes. The SDK refuses a
// larger record before sending it.
const MaxRecordBytes = 64 << 20

// Offsets with a meaning of their own, accepted by Consumer.Seek and
// Client.Tail.
const (
	// OffsetEarliest is the partition's log start offset.
	OffsetEarliest int64 = -2
	// OffsetLatest is the partition's next offset (its high watermark): only
	// records produced from now on.
	OffsetLatest int64 = -1
)

// Header is a record header. A nil Value is a null value.
type Header struct {
	Key   string
	Value []byte
}

// Record is a record as produced and fetched.
//
// When producing, the partition is chosen for the record unless
// ExplicitPartition is set, as Kafka's default partitioner does: murmur2 of
// the key (so a key always lands in the same partition, the one a Kafka
// client would pick), or the sticky partition for records without a key.
// The cluster chooses, or the producer (ProducerOptions). So the zero value
// sdk.Record{Topic: t, Key: k, Value: v} is placed by its key.
//
// To write to a given partition, set ExplicitPartition and Partition:
// sdk.Record{Topic: t, Partition: p, ExplicitPartition: true, Value: v}
// writes to partition p, 0 included. A Partition other than 0 (or
// AnyPartition) without ExplicitPartition is refused with
// connect.CodeInvalidArgument rather than ignored.
//
// Offset must be 0. A zero Timestamp means "now" (the cluster assigns it).
// Null and empty keys differ: a nil Key has no key (placed by the sticky
// partitioner), a non-nil empty Key is hashed. A nil Value is a tombstone on
// compacted topics.
//
// Fetched records and records handed to producer callbacks carry their
// Topic, Partition and Offset, with ExplicitPartition set: produced again
// as they are, they go to the same partition number (clear
// ExplicitPartition and Partition to let the key decide instead).
type Record struct {
	Topic     string
	Partition int32
	// ExplicitPartition makes Partition the partition to produce to.
	ExplicitPartition bool
	Offset            int64
	Key               []byte
	Value             []byte
	Headers           []Header
	Timestamp         time.Time
}

// targetPartition returns the partition a record to produce names, or -1
// when it is to be chosen; bad combinations are InvalidArgument.
func (r *Record) targetPartition() (int32, error) {
	switch {
	case r.ExplicitPartition && r.Partition >= 0:
		return r.Partition, nil
	case r.ExplicitPartition:
		return 0, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("record names partition %d: a partition is 0 or more", r.Partition))
	case r.Partition == 0 || r.Partition == AnyPartition:
		return -1, nil
	}
	return 0, connect.NewError(connect.CodeInvalidArgument,
		fmt.Errorf("record sets Partition %d without ExplicitPartition: set ExplicitPartition to produce to partition %d, or leave Partition 0 to let the key decide", r.Partition, r.Partition))
}

// checkProduce refuses a record the SDK must not send: a bad partition, or
// one larger than any topic accepts.
func (r *Record) checkProduce() (int32, error) {
	part, err := r.targetPartition()
	if err != nil {
		return 0, err
	}
	if n := recordDataSize(r); n > MaxRecordBytes {
		return 0, connect.NewError(connect.CodeInvalidArgument,
			fmt.Errorf("record of %d bytes (key, value and headers) is larger than any topic accepts: max_record_bytes is at most %d", n, MaxRecordBytes))
	}
	return part, nil
}

// Offset is where a produced record was stored.
type Offset struct {
	Partition int32
	Offset    int64
}

// FetchResult is the answer of Client.Fetch.
type FetchResult struct {
	// Records from the requested offset on, in offset order; empty when the
	// wait expired with nothing new.
	Records []Record
	// NextOffset is the offset to fetch next.
	NextOffset int64
	// LogStartOffset is the partition's first stored offset.
	LogStartOffset int64
	// HighWatermark is the partition's next offset when the fetch was served.
	HighWatermark int64
}

// Client talks to a Varve cluster. It is safe for concurrent use.
type Client struct {
	addr    string
	http    connect.HTTPClient
	own     *http.Client // non-nil when New created the HTTP client
	topics  varvev1connect.TopicServiceClient
	produce varvev1connect.ProduceServiceClient
	place   *place.Transport // the produce client's transport
	fetch   varvev1connect.FetchServiceClient
	scan    varvev1connect.ScanServiceClient
	groups  varvev1connect.GroupServiceClient
	copts   []connect.ClientOption
	log     *slog.Logger
	hooks   []Hooks
	// noFetchPartitions holds when (UnixNano) a node last answered that it
	// has no FetchPartitions (older than it): consumers fetch partition by
	// partition for a while (fetchEach).
	noFetchPartitions atomic.Int64
}

type clientConfig struct {
	http     connect.HTTPClient
	grpc     bool
	connOpts []connect.ClientOption
	tracer   trace.TracerProvider
	prop     propagation.TextMapPropagator
	log      *slog.Logger
	hooks    []Hooks
	tls      *tls.Config
}

// Option configures a Client.
type Option func(*clientConfig)

// WithHTTPClient makes the client send its requests through hc instead of
// its own HTTP/2 (h2c for http:// addresses) client.
func WithHTTPClient(hc connect.HTTPClient) Option {
	return func(c *clientConfig) { c.http = hc }
}

// WithGRPC makes the client speak the gRPC protocol instead of Connect.
func WithGRPC() Option {
	return func(c *clientConfig) { c.grpc = true }
}

// WithClientOptions passes further options (interceptors, compression, ...)
// to the underlying Connect clients.
func WithClientOptions(opts ...connect.ClientOption) Option {
	return func(c *clientConfig) { c.connOpts = append(c.connOpts, opts...) }
}

// WithTracerProvider traces every call of the client with OpenTelemetry
// (a client span per RPC, through connectrpc.com/otelconnect) and passes
// the trace on to the cluster, whose spans (produce, flush, fetch, ...)
// then join the caller's trace. Spans start from the context given to each
// call; the Producer's batches, sent in the background, start their own.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *clientConfig) { c.tracer = tp }
}

// WithPropagator sets how the trace is passed to the cluster (default: W3C
// trace context and baggage). Without WithTracerProvider it uses
// OpenTelemetry's global tracer provider.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *clientConfig) { c.prop = p }
}

// NewHTTPClient returns the HTTP client New uses by default: HTTP/2 only,
// cleartext (h2c) for http:// addresses and TLS for https:// ones, with
// keepalive pings so that a dead connection under a long poll or stream is
// noticed.
func NewHTTPClient() *http.Client {
	t, ok := http.DefaultTransport.(*http.Transport)
	if ok {
		t = t.Clone()
	} else {
		t = &http.Transport{}
	}
	t.Proxy = nil // h2c cannot cross an HTTP proxy
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP2(true)
	t.Protocols.SetUnencryptedHTTP2(true)
	t.HTTP2 = &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second}
	return &http.Client{Transport: t}
}

// New returns a client of the cluster at addr, such as
// "http://127.0.0.1:7700" (a bare host:port means http://), or at several
// nodes' addresses separated by commas: requests go to one of them and
// move on to the next when it does not answer. It connects lazily: New
// does no I/O.
//
// Produce requests follow the cluster's placement of producers: when a
// node names another as this client's writer (at low load the cluster
// places every producer on few nodes), the client sends its Produce
// requests there once it could reach it, and comes back to addr when that
// node stops answering (docs/metadata.md, "Producer placement").
func New(addr string, opts ...Option) *Client {
	var cfg clientConfig
	for _, o := range opts {
		o(&cfg)
	}
	addrs := failover.Addresses(addr)
	addr = addrs[0]
	c := &Client{addr: addr, http: cfg.http, log: cfg.log, hooks: cfg.hooks}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.http == nil {
		c.own = NewHTTPClient()
		applyTLS(c.own, cfg.tls)
		c.http = c.own
	}
	direct := c.http
	if len(addrs) > 1 {
		c.http = failover.New(c.http, addrs)
	}
	// Produce follows the cluster's placement of producers (a node's
	// answer may name the node this client belongs on; internal/place).
	c.place = place.New(c.http, direct, addr)
	copts := []connect.ClientOption{}
	if cfg.grpc {
		copts = append(copts, connect.WithGRPC())
	}
	if cfg.tracer != nil || cfg.prop != nil {
		prop := cfg.prop
		if prop == nil {
			prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
		}
		oopts := []otelconnect.Option{otelconnect.WithPropagator(prop), otelconnect.WithoutMetrics()}
		if cfg.tracer != nil {
			oopts = append(oopts, otelconnect.WithTracerProvider(cfg.tracer))
		}
		// NewInterceptor fails only on invalid options; these are valid.
		if ic, err := otelconnect.NewInterceptor(oopts...); err == nil {
			copts = append(copts, connect.WithInterceptors(ic))
		}
	}
	copts = append(copts, cfg.connOpts...)
	c.copts = copts
	c.topics = varvev1connect.NewTopicServiceClient(c.http, addr, copts...)
	c.groups = varvev1connect.NewGroupServiceClient(c.http, addr, copts...)
	// A Produce answer is one offset per record: gzip would cost the node
	// and the client more CPU than the few bytes it saves, and the
	// request's batches are compressed already (zstd), so produce asks for
	// no gzip (the node still answers gzip to clients that ask).
	c.produce = varvev1connect.NewProduceServiceClient(c.place, addr, append(copts[:len(copts):len(copts)], connect.WithAcceptCompression("gzip", nil, nil))...)
	c.fetch = varvev1connect.NewFetchServiceClient(c.http, addr, copts...)
	// Arrow batches of a scan are large; gzip would cap a scan at the speed
	// of one gzip stream (~50 MB/s), so the scan asks for none.
	c.scan = varvev1connect.NewScanServiceClient(c.http, addr, append(copts[:len(copts):len(copts)], connect.WithAcceptCompression("gzip", nil, nil))...)
	return c
}

// Addr returns the cluster address the client talks to (the first one).
func (c *Client) Addr() string { return c.addr }

// ConnectConfig returns what the client's Connect service clients are
// built from: its HTTP client, the cluster's base URL and the client
// options (protocol, tracing, interceptors). Packages building on the
// client, such as sdk/admin, make their service clients from it.
func (c *Client) ConnectConfig() (connect.HTTPClient, string, []connect.ClientOption) {
	return c.http, c.addr, c.copts[:len(c.copts):len(c.copts)]
}

// Close releases the idle connections of the client's own HTTP client. It
// does not stop producers or consumers; close those first.
func (c *Client) Close() {
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
}

// partitionCount returns the number of partitions of topic, for the
// producer's partitioner and the consumer's assignment.
func (c *Client) partitionCount(ctx context.Context, topic string) (int32, error) {
	res, err := c.topics.DescribeTopic(ctx, connect.NewRequest(&varvev1.DescribeTopicRequest{Name: topic}))
	if err != nil {
		return 0, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	return res.Msg.GetTopic().GetPartitions(), nil
}

// Produce appends recs to topic in one RPC, without batching or retries,
// and returns where each record was stored, in order. Record.Topic is
// ignored. Either every record is stored or none is.
func (c *Client) Produce(ctx context.Context, topic string, recs []Record) ([]Offset, error) {
	req := &varvev1.ProduceRequest{Topic: topic, Records: make([]*varvev1.ProduceRecord, len(recs))}
	for i := range recs {
		part, err := recs[i].checkProduce()
		if err != nil {
			return nil, fmt.Errorf("produce %d records to %s: record %d: %w", len(recs), topic, i, err)
		}
		req.Records[i] = toProduceRecord(&recs[i], part)
	}
	bytes := 0
	for i := range recs {
		bytes += recordDataSize(&recs[i])
	}
	res, err := c.produceRPC(ctx, req, bytes)
	if err != nil {
		return nil, fmt.Errorf("produce %d records to %s: %w", len(recs), topic, err)
	}
	results := res.Msg.GetResults()
	if len(results) != len(recs) {
		return nil, fmt.Errorf("produce %d records to %s: %w", len(recs), topic,
			connect.NewError(connect.CodeInternal, fmt.Errorf("cluster answered %d results", len(results))))
	}
	out := make([]Offset, len(results))
	for i, r := range results {
		out[i] = Offset{Partition: r.GetPartition(), Offset: r.GetOffset()}
	}
	return out, nil
}

// Fetch returns records of one partition from offset on: about maxBytes of
// them (0 means 1 MiB; at least one record when one exists). When offset is
// the high watermark it waits up to maxWait for new records and returns an
// empty result if none arrives. An offset before the log start or after the
// high watermark is connect.CodeOutOfRange.
func (c *Client) Fetch(ctx context.Context, topic string, partition int32, offset int64, maxBytes int32, maxWait time.Duration) (*FetchResult, error) {
	start := time.Now()
	res, err := c.fetch.Fetch(ctx, connect.NewRequest(&varvev1.FetchRequest{
		Topic: topic, Partition: partition, Offset: offset, MaxBytes: maxBytes, MaxWaitMs: durationMs(maxWait),
	}))
	if err != nil {
		c.fetched(topic, partition, nil, start, err)
		return nil, fmt.Errorf("fetch %s/%d at offset %d: %w", topic, partition, offset, err)
	}
	m := res.Msg
	recs := fromProtoRecords(topic, m.GetRecords())
	c.fetched(topic, partition, recs, start, nil)
	return fetchResult(m, recs), nil
}

// fetchResult is the answer m with its records recs.
func fetchResult(m *varvev1.FetchResponse, recs []Record) *FetchResult {
	return &FetchResult{
		Records:        recs,
		NextOffset:     m.GetNextOffset(),
		LogStartOffset: m.GetLogStartOffset(),
		HighWatermark:  m.GetHighWatermark(),
	}
}

// ListOffsets returns an offset per partition (every partition of the
// topic when partitions is empty): with OFFSET_SPEC_EARLIEST the log start,
// with OFFSET_SPEC_LATEST the next offset (high watermark), with
// OFFSET_SPEC_TIMESTAMP the first offset whose record's timestamp is at or
// after ts (the next offset when there is none). ts is ignored otherwise.
func (c *Client) ListOffsets(ctx context.Context, topic string, spec varvev1.OffsetSpec, ts time.Time, partitions ...int32) (map[int32]int64, error) {
	req := &varvev1.ListOffsetsRequest{Topic: topic, Partitions: partitions, Spec: spec}
	if spec == varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP {
		req.TimestampMs = ts.UnixMilli()
	}
	res, err := c.fetch.ListOffsets(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, fmt.Errorf("list %s offsets of %s: %w", specName(spec), topic, err)
	}
	out := make(map[int32]int64, len(res.Msg.GetOffsets()))
	for _, o := range res.Msg.GetOffsets() {
		out[o.GetPartition()] = o.GetOffset()
	}
	return out, nil
}

func specName(s varvev1.OffsetSpec) string {
	switch s {
	case varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST:
		return "earliest"
	case varvev1.OffsetSpec_OFFSET_SPEC_LATEST:
		return "latest"
	case varvev1.OffsetSpec_OFFSET_SPEC_TIMESTAMP:
		return "timestamp"
	}
	return s.String()
}

// Tail follows one partition from offset (or OffsetEarliest, OffsetLatest)
// over the server-streaming Subscribe RPC and calls fn with each batch of
// records as it is committed, in order, from this goroutine; once ctx is
// done (fn may cancel it) fn is not called again. It reconnects from the
// next offset after retriable failures. It returns fn's error, the
// stream's first non-retriable error, or ctx's error once ctx is done.
func (c *Client) Tail(ctx context.Context, topic string, partition int32, offset int64, fn func([]Record) error) error {
	var err error
	if offset, err = c.resolveOffset(ctx, topic, partition, offset); err != nil {
		return err
	}
	retry := defaultRetry()
	attempt := 0
	for {
		got, err := c.tailOnce(ctx, topic, partition, &offset, fn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var fnErr *callbackError
		if errors.As(err, &fnErr) {
			return fnErr.err
		}
		if got {
			attempt = 0
		}
		if err == nil {
			// The server ended the stream (it is draining): reconnect.
			err = connect.NewError(connect.CodeUnavailable, errors.New("stream ended"))
		}
		if !Retriable(err) || attempt >= retry.retries {
			return fmt.Errorf("tail %s/%d at offset %d: %w", topic, partition, offset, err)
		}
		if err := sleepCtx(ctx, retry.delay(err, attempt)); err != nil {
			return err
		}
		attempt++
	}
}

// callbackError marks an error returned by a user callback.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// tailOnce runs one Subscribe stream; got reports whether it received
// anything.
func (c *Client) tailOnce(ctx context.Context, topic string, partition int32, offset *int64, fn func([]Record) error) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.fetch.Subscribe(sctx, connect.NewRequest(&varvev1.SubscribeRequest{Topic: topic, Partition: partition, Offset: *offset}))
	if err != nil {
		return false, err
	}
	defer stream.Close()
	for stream.Receive() {
		got = true
		m := stream.Msg()
		recs := fromProtoRecords(topic, m.GetRecords())
		if m.GetNextOffset() > *offset {
			*offset = m.GetNextOffset()
		}
		if len(recs) > 0 {
			if ctx.Err() != nil {
				// Done (fn may have cancelled it): a message already
				// received is not delivered.
				return got, ctx.Err()
			}
			if err := fn(recs); err != nil {
				return got, &callbackError{err}
			}
		}
	}
	return got, stream.Err()
}

// resolveOffset turns OffsetEarliest and OffsetLatest into offsets.
func (c *Client) resolveOffset(ctx context.Context, topic string, partition int32, offset int64) (int64, error) {
	var spec varvev1.OffsetSpec
	switch offset {
	case OffsetEarliest:
		spec = varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST
	case OffsetLatest:
		spec = varvev1.OffsetSpec_OFFSET_SPEC_LATEST
	default:
		return offset, nil
	}
	offs, err := c.ListOffsets(ctx, topic, spec, time.Time{}, partition)
	if err != nil {
		return 0, err
	}
	o, ok := offs[partition]
	if !ok {
		return 0, fmt.Errorf("list offsets of %s/%d: %w", topic, partition,
			connect.NewError(connect.CodeInternal, errors.New("partition missing from the answer")))
	}
	return o, nil
}

func durationMs(d time.Duration) int32 {
	ms := d.Milliseconds()
	if ms < 0 {
		return 0
	}
	if ms > 1<<31-1 {
		return 1<<31 - 1
	}
	return int32(ms)
}

// toProduceRecord converts r; a negative partition is left unset, for the
// cluster to choose.
func toProduceRecord(r *Record, partition int32) *varvev1.ProduceRecord {
	pr := &varvev1.Record{Key: r.Key, Value: r.Value}
	if !r.Timestamp.IsZero() {
		pr.TimestampMs = r.Timestamp.UnixMilli()
	}
	if len(r.Headers) > 0 {
		pr.Headers = make([]*varvev1.Header, len(r.Headers))
		for i, h := range r.Headers {
			pr.Headers[i] = &varvev1.Header{Key: h.Key, Value: h.Value}
		}
	}
	out := &varvev1.ProduceRecord{Record: pr}
	if partition >= 0 {
		out.Partition = &partition
	}
	return out
}

func fromProtoRecords(topic string, prs []*varvev1.Record) []Record {
	if len(prs) == 0 {
		return nil
	}
	out := make([]Record, len(prs))
	for i, pr := range prs {
		r := Record{
			Topic: topic, Partition: pr.GetPartition(), ExplicitPartition: true, Offset: pr.GetOffset(),
			Key: pr.Key, Value: pr.Value, Timestamp: time.UnixMilli(pr.GetTimestampMs()),
		}
		if len(pr.GetHeaders()) > 0 {
			r.Headers = make([]Header, len(pr.GetHeaders()))
			for j, h := range pr.GetHeaders() {
				r.Headers[j] = Header{Key: h.GetKey(), Value: h.Value}
			}
		}
		out[i] = r
	}
	return out
}

// recordSize bounds the bytes a record occupies in a Produce request (its
// protobuf encoding: every length and number at its widest) and is what it
// counts for in the producer's buffer.
func recordSize(r *Record) int {
	n := len(r.Key) + len(r.Value) + 48
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value) + 20
	}
	return n
}

// recordDataSize is a record's key, value and header bytes.
func recordDataSize(r *Record) int {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}
