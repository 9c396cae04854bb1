package kafka

import (
	"fmt"
	"strings"

	"github.com/varve-io/varve/internal/rendezvous"
)

// A node registers under Role with the value "host:port roles": its
// advertised Kafka address and which of the ingest and fetch roles it
// runs ("ingest,fetch", "ingest" or "fetch"). A bare "host:port" (a
// node of an earlier version) runs both.

// Registration is the value a node registers under Role.
func Registration(advertised string, ingest, fetch bool) string {
	var roles []string
	if ingest {
		roles = append(roles, "ingest")
	}
	if fetch {
		roles = append(roles, "fetch")
	}
	return advertised + " " + strings.Join(roles, ",")
}

// parseRegistration reads a value registered under Role.
func parseRegistration(v string) (addr string, ingest, fetch bool, err error) {
	addr, roles, ok := strings.Cut(v, " ")
	if !ok {
		return addr, true, true, nil
	}
	for r := range strings.SplitSeq(roles, ",") {
		switch r {
		case "ingest":
			ingest = true
		case "fetch":
			fetch = true
		case "":
		default:
			return "", false, false, fmt.Errorf("unknown role %q", r)
		}
	}
	if !ingest && !fetch {
		return "", false, false, fmt.Errorf("no ingest or fetch role in %q", v)
	}
	return addr, ingest, fetch, nil
}

// pickBroker returns the broker of bs that keep accepts with the highest
// rendezvous score for key, or false when none is accepted.
func pickBroker(bs []broker, key string, keep func(broker) bool) (broker, bool) {
	var best broker
	var bestScore uint64
	found := false
	for _, b := range bs {
		if !keep(b) {
			continue
		}
		if s := rendezvous.Score(b.node, key); !found || s > bestScore || s == bestScore && b.node < best.node {
			best, bestScore, found = b, s, true
		}
	}
	return best, found
}

func partitionKey(topic string, p int32) string { return fmt.Sprintf("%s/%d", topic, p) }

// leaderOf is the broker Metadata names leader of a partition: this node
// when it takes writes (the node the client reached), else an ingest node
// chosen per partition, so a client's produce requests spread over the
// ingest tier. -1: no live ingest node.
func (s *Server) leaderOf(bs []broker, topic string, p int32) int32 {
	if s.d.In != nil {
		return s.self
	}
	b, ok := pickBroker(bs, partitionKey(topic, p), func(b broker) bool { return b.ingest })
	if !ok {
		return -1
	}
	return b.id
}

// readReplicaOf is the fetch node a node without the fetch role sends a
// partition's consumers to (KIP-392's preferred read replica), chosen per
// partition; -1: no live fetch node.
func (s *Server) readReplicaOf(bs []broker, topic string, p int32) int32 {
	b, ok := pickBroker(bs, partitionKey(topic, p), func(b broker) bool { return b.fetch })
	if !ok {
		return -1
	}
	return b.id
}

// replicasOf are the brokers Metadata lists as a partition's replicas
// (and in-sync replicas): its leader, then the fetch nodes that may serve
// its reads (at most 4 of them, chosen per partition), so a client that
// is sent to one as preferred read replica knows it.
func (s *Server) replicasOf(bs []broker, leader int32, topic string, p int32) []int32 {
	out := []int32{leader}
	if s.d.Fetcher != nil || leader < 0 {
		return out
	}
	if r := s.readReplicaOf(bs, topic, p); r >= 0 && r != leader {
		out = append(out, r)
	}
	return out
}
