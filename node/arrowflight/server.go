package arrowflight

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/varve-io/varve/blockcache"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/scan"
)

// FlightCommand is what a Flight descriptor asks for: a CMD descriptor holds
// it as JSON; a PATH descriptor [topic] means the whole topic. The fields
// mean what scan.Request's do (times in ms since the epoch; keys as base64
// in JSON).
type FlightCommand struct {
	Topic      string   `json:"topic"`
	Partitions []int32  `json:"partitions,omitempty"`
	FromOffset int64    `json:"from_offset,omitempty"`
	ToOffset   int64    `json:"to_offset,omitempty"`
	FromTime   int64    `json:"from_ms,omitempty"`
	ToTime     int64    `json:"to_ms,omitempty"`
	Keys       [][]byte `json:"keys,omitempty"`
	Columns    []string `json:"columns,omitempty"`
}

// flightTicket is one endpoint's share: one partition, offsets resolved
// when GetFlightInfo answered, so every DoGet reads the same snapshot.
type flightTicket struct {
	Topic     string   `json:"topic"`
	TopicID   string   `json:"topic_id"`
	Partition int32    `json:"partition"`
	From      int64    `json:"from"`
	To        int64    `json:"to"`
	FromTime  int64    `json:"from_ms,omitempty"`
	ToTime    int64    `json:"to_ms,omitempty"`
	Keys      [][]byte `json:"keys,omitempty"`
	Columns   []string `json:"columns,omitempty"`
}

// FlightService serves scans over Arrow Flight: GetFlightInfo answers one
// endpoint per partition that has records in the range (offsets fixed at
// that moment), DoGet streams an endpoint's record batches, ListFlights
// lists topics. It is read-only: DoPut, DoExchange and actions are
// unimplemented.
type FlightService struct {
	flight.BaseFlightServer
	scans  *scan.Reader
	topics TopicLister
	// Locations are given in every endpoint (empty: the service that
	// answered GetFlightInfo, as the Flight spec allows).
	locations []*flight.Location
}

// TopicLister lists the topics (metadata.Client implements it).
type TopicLister interface {
	ListTopics(ctx context.Context) ([]metadata.Topic, error)
}

// NewFlightService makes a Flight service on the scans of r, listing the
// topics of topics. locations (such as "grpc+tcp://host:port") tell
// clients where to DoGet.
func NewFlightService(r *scan.Reader, topics TopicLister, locations ...string) *FlightService {
	s := &FlightService{scans: r, topics: topics}
	for _, l := range locations {
		s.locations = append(s.locations, &flight.Location{Uri: l})
	}
	return s
}

// ServeFlight serves s on ln until ctx ends (graceful stop) or serving
// fails. It is the Flight port of a fetch node.
func ServeFlight(ctx context.Context, ln net.Listener, s *FlightService, opts ...grpc.ServerOption) error {
	srv := flight.NewServerWithMiddleware(nil, opts...)
	srv.RegisterFlightService(s)
	srv.InitListener(ln)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			srv.Shutdown()
		case <-done:
		}
	}()
	return srv.Serve()
}

func flightErr(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !errors.Is(err, context.Canceled) {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, metadata.ErrInvalidArgument), errors.Is(err, metadata.ErrPartitionOutOfRange):
		code = codes.InvalidArgument
	case errors.Is(err, metadata.ErrTopicNotFound):
		code = codes.NotFound
	case errors.Is(err, blockcache.ErrDataLoss):
		code = codes.DataLoss
	case errors.Is(err, blockcache.ErrUnavailable), metadata.IsUnavailable(err):
		code = codes.Unavailable
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

func (s *FlightService) command(d *flight.FlightDescriptor) (FlightCommand, error) {
	var c FlightCommand
	switch d.GetType() {
	case flight.DescriptorPATH:
		if len(d.GetPath()) != 1 {
			return c, status.Errorf(codes.InvalidArgument, "a path descriptor names one topic, got %q", d.GetPath())
		}
		c.Topic = d.GetPath()[0]
	case flight.DescriptorCMD:
		if err := json.Unmarshal(d.GetCmd(), &c); err != nil {
			return c, status.Errorf(codes.InvalidArgument, "command is not a JSON scan request: %v", err)
		}
	default:
		return c, status.Errorf(codes.InvalidArgument, "unknown descriptor type %v", d.GetType())
	}
	return c, nil
}

// GetFlightInfo plans a scan: one endpoint per partition with records in
// the range.
func (s *FlightService) GetFlightInfo(ctx context.Context, d *flight.FlightDescriptor) (*flight.FlightInfo, error) {
	c, err := s.command(d)
	if err != nil {
		return nil, err
	}
	sc, err := s.scans.Scan(ctx, scan.Request{Topic: c.Topic, Partitions: c.Partitions, FromOffset: c.FromOffset, ToOffset: c.ToOffset,
		FromTime: c.FromTime, ToTime: c.ToTime, Keys: c.Keys, Columns: c.Columns})
	if err != nil {
		return nil, flightErr(err)
	}
	defer sc.Release() // nothing is read: Scan only planned
	t, _ := s.scans.Topic(ctx, c.Topic)
	info := &flight.FlightInfo{
		Schema: flight.SerializeSchema(sc.Schema(), memory.DefaultAllocator), FlightDescriptor: d,
		TotalRecords: -1, TotalBytes: sc.Progress().RawBytesTotal, Ordered: true,
	}
	if len(c.Keys) == 0 && c.FromTime == 0 && c.ToTime == 0 {
		info.TotalRecords = 0
	}
	for _, pr := range sc.Ranges() {
		tk, _ := json.Marshal(flightTicket{Topic: c.Topic, TopicID: t.ID, Partition: pr.Partition, From: pr.From, To: pr.To,
			FromTime: c.FromTime, ToTime: c.ToTime, Keys: c.Keys, Columns: c.Columns})
		info.Endpoint = append(info.Endpoint, &flight.FlightEndpoint{Ticket: &flight.Ticket{Ticket: tk}, Location: s.locations})
		if info.TotalRecords >= 0 {
			info.TotalRecords += pr.To - pr.From
		}
	}
	return info, nil
}

// GetSchema answers the scan schema for any valid descriptor.
func (s *FlightService) GetSchema(ctx context.Context, d *flight.FlightDescriptor) (*flight.SchemaResult, error) {
	c, err := s.command(d)
	if err != nil {
		return nil, err
	}
	t, err := s.scans.Topic(ctx, c.Topic)
	if err != nil {
		return nil, flightErr(err)
	}
	schema, err := scan.SchemaOf(t, c.Columns)
	if err != nil {
		return nil, flightErr(err)
	}
	return &flight.SchemaResult{Schema: flight.SerializeSchema(schema, memory.DefaultAllocator)}, nil
}

// DoGet streams one endpoint: a partition's offsets as planned.
func (s *FlightService) DoGet(tk *flight.Ticket, stream flight.FlightService_DoGetServer) error {
	var t flightTicket
	if err := json.Unmarshal(tk.GetTicket(), &t); err != nil || t.To <= t.From {
		return status.Errorf(codes.InvalidArgument, "not a ticket of this service")
	}
	ctx := stream.Context()
	if cur, err := s.scans.Topic(ctx, t.Topic); err != nil {
		return flightErr(err)
	} else if cur.ID != t.TopicID {
		return status.Errorf(codes.NotFound, "topic %q was deleted since the ticket was issued", t.Topic)
	}
	sc, err := s.scans.Scan(ctx, scan.Request{Topic: t.Topic, Partitions: []int32{t.Partition}, FromOffset: t.From, ToOffset: t.To,
		FromTime: t.FromTime, ToTime: t.ToTime, Keys: t.Keys, Columns: t.Columns})
	if err != nil {
		return flightErr(err)
	}
	defer sc.Release()
	w := flight.NewRecordWriter(stream, ipc.WithSchema(sc.Schema()))
	defer w.Close()
	for sc.Next() {
		if err := w.Write(sc.RecordBatch()); err != nil {
			return flightErr(fmt.Errorf("flight %s/%d: %w", t.Topic, t.Partition, err))
		}
	}
	return flightErr(sc.Err())
}

// ListFlights lists every topic as a path descriptor.
func (s *FlightService) ListFlights(_ *flight.Criteria, stream flight.FlightService_ListFlightsServer) error {
	ts, err := s.topics.ListTopics(stream.Context())
	if err != nil {
		return flightErr(err)
	}
	for _, t := range ts {
		sch, err := scan.SchemaOf(t, nil)
		if err != nil {
			sch = scan.RecordSchema // a stored schema this node cannot read: scans of it fail
		}
		schema := flight.SerializeSchema(sch, memory.DefaultAllocator)
		if err := stream.Send(&flight.FlightInfo{Schema: schema, TotalRecords: -1, TotalBytes: -1,
			FlightDescriptor: &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{t.Name}}}); err != nil {
			return err
		}
	}
	return nil
}
