package node

import (
	"fmt"
	"net"

	"github.com/varve-io/varve/node/arrowflight"
)

// startFlight serves Arrow Flight on cfg.FlightListen (when set, on a node
// with the fetch role) until the node stops.
func (n *Node) startFlight(cfg Config) error {
	if cfg.FlightListen == "" || n.fetcher == nil {
		return nil
	}
	var err error
	n.flightLn, err = net.Listen("tcp", cfg.FlightListen)
	if err != nil {
		return fmt.Errorf("listen for Arrow Flight on %s: %w", cfg.FlightListen, err)
	}
	// No location: clients DoGet from the node that planned (or any).
	svc := arrowflight.NewFlightService(n.scanReader(), n.meta)
	go func() {
		if err := arrowflight.ServeFlight(n.baseCtx, n.flightLn, svc, n.flightOptions()...); err != nil {
			n.log.Error("arrow flight server stopped", "err", err)
		}
	}()
	return nil
}
