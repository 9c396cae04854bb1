package scan_test

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/varve-io/varve/node/arrowflight"
	"github.com/varve-io/varve/scan"
)

// TestFlight reads scans through arrow-go's own Flight client over a real
// gRPC connection: GetFlightInfo plans one endpoint per partition, DoGet
// streams each, and the records equal what Fetch returns.
func TestFlight(t *testing.T) {
	e := newScanEnv(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	e.produceFlushes(t, "fl", 3, 3, 80, base)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- arrowflight.ServeFlight(ctx, ln, arrowflight.NewFlightService(e.r, e.meta, "grpc+tcp://"+ln.Addr().String()))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve flight: %v", err)
		}
	})
	cl, err := flight.NewClientWithMiddleware(ln.Addr().String(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	readAll := func(t *testing.T, d *flight.FlightDescriptor) ([]row, *flight.FlightInfo) {
		t.Helper()
		info, err := cl.GetFlightInfo(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		schema, err := flight.DeserializeSchema(info.GetSchema(), memory.DefaultAllocator)
		if err != nil || !schema.Equal(scan.RecordSchema) {
			t.Fatalf("flight info schema %v: %v", schema, err)
		}
		var out []row
		for _, ep := range info.GetEndpoint() {
			if len(ep.GetLocation()) != 1 || ep.GetLocation()[0].GetUri() != "grpc+tcp://"+ln.Addr().String() {
				t.Fatalf("endpoint locations %v", ep.GetLocation())
			}
			stream, err := cl.DoGet(ctx, ep.GetTicket())
			if err != nil {
				t.Fatal(err)
			}
			rd, err := flight.NewRecordReader(stream)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := rowsOf(t, rd)
			rd.Release()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, rows...)
		}
		return out, info
	}

	// The whole topic, by path.
	got, info := readAll(t, &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"fl"}})
	if len(info.GetEndpoint()) != 3 || info.GetTotalRecords() != 3*240 {
		t.Fatalf("%d endpoints, %d records; want 3 and 720", len(info.GetEndpoint()), info.GetTotalRecords())
	}
	var want []row
	for p := range int32(3) {
		want = append(want, fetchRange(t, e.f, "fl", p, 0, 240, 0, 0, nil)...)
	}
	sameRows(t, got, want)

	// A command: two partitions, an offset and a time range.
	cmd, _ := json.Marshal(arrowflight.FlightCommand{Topic: "fl", Partitions: []int32{2, 1}, FromOffset: 50, ToOffset: 200, FromTime: base + 1000})
	got, info = readAll(t, &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: cmd})
	if len(info.GetEndpoint()) != 2 {
		t.Fatalf("%d endpoints, want 2", len(info.GetEndpoint()))
	}
	want = nil
	for _, p := range []int32{2, 1} {
		want = append(want, fetchRange(t, e.f, "fl", p, 50, 200, base+1000, 0, nil)...)
	}
	sameRows(t, got, want)

	// Bad input gets gRPC codes.
	for _, tc := range []struct {
		d    *flight.FlightDescriptor
		code codes.Code
	}{
		{&flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"nope"}}, codes.NotFound},
		{&flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(`{"topic":"fl","from_offset":9,"to_offset":2}`)}, codes.InvalidArgument},
		{&flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(`not json`)}, codes.InvalidArgument},
		{&flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: []byte(`{"topic":"fl","partitions":[3]}`)}, codes.InvalidArgument},
	} {
		_, err := cl.GetFlightInfo(ctx, tc.d)
		if status.Code(err) != tc.code {
			t.Errorf("GetFlightInfo(%v): %v, want %v", tc.d, err, tc.code)
		}
	}
	stream, err := cl.DoGet(ctx, &flight.Ticket{Ticket: []byte("forged")})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("DoGet of a forged ticket: %v", err)
	}
}
