package kafka

// coordinator runs the classic consumer groups this node coordinates
// (groups.go). Placeholder until the group APIs land.
type coordinator struct{ s *Server }

func newCoordinator(s *Server) *coordinator { return &coordinator{s: s} }

// brokersChanged is told the live brokers: groups this node no longer
// coordinates are let go.
func (co *coordinator) brokersChanged([]broker) {}

func (co *coordinator) close() {}
