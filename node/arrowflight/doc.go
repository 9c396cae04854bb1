// Package arrowflight serves scans over Arrow Flight, the read-only Flight
// port of a fetch node: GetFlightInfo plans one endpoint per partition,
// DoGet streams an endpoint's record batches (from scan.Reader), and
// ListFlights lists topics. Package node starts it on flight_listen.
//
// It owns the Flight command and ticket formats and the mapping of errors
// onto gRPC codes. It never writes: DoPut, DoExchange and actions are
// unimplemented.
package arrowflight
