package node

import (
	"context"
	"net"
	"net/http"
	"sync"

	"connectrpc.com/connect"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
)

// seqWiring is the node's part of the sequencer (docs/metadata.md, "The
// sequencer"): the candidate it runs with the sequence role, and the
// client its ingester commits through with commit_path sequencer.
type seqWiring struct {
	mu   sync.Mutex
	seq  *sequencer.Sequencer // nil until started, or without the role
	self string               // the id seq campaigns with
}

// committer is what the ingester commits through: etcd directly, or the
// elected sequencer.
func (n *Node) committer() ingest.Committer {
	if n.cfg.CommitPath != CommitSequencer {
		return n.meta
	}
	if !n.cfg.has(RoleSequence) {
		n.log.Warn("this ingest node commits through the elected sequencer (commit_path sequencer, the default) but is no candidate: some node of the cluster must run the sequence role (run it with ingest: roles ingest,sequence), else every commit fails after a minute", "roles", n.cfg.Roles)
	}
	peers := newPeerClient(n.sec.peer, n.sec.guard.NodeSecret())
	n.onClose = append(n.onClose, peers.close)
	n.watchSequencerLeader(peers.http)
	var opts []connect.ClientOption
	if secret := n.sec.guard.NodeSecret(); secret != "" {
		opts = append(opts, connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set(guard.SecretHeader, secret)
				return next(ctx, req)
			}
		})))
	}
	remote := sequencer.NewDialer(peers.http, opts...)
	dial := func(ctx context.Context, id string) (sequencer.Service, error) {
		// This node's own sequencer is called in process: its ingester's
		// last commits still reach it while the API drains.
		n.seqw.mu.Lock()
		s, self := n.seqw.seq, n.seqw.self
		n.seqw.mu.Unlock()
		if s != nil && id == self {
			return s, nil
		}
		return remote(ctx, id)
	}
	return sequencer.NewClient(n.meta, dial)
}

// startSequencer runs, with the sequence role and commit_path sequencer,
// a sequencer candidate campaigning with this node's internal API URL
// (what other nodes dial), and serves its SequencerService on mux (the
// guard lets only nodes call it). It stops, resigning its term, when the
// node stops.
func (n *Node) startSequencer(mux *http.ServeMux, hopts []connect.HandlerOption) error {
	if !n.cfg.has(RoleSequence) || n.cfg.CommitPath != CommitSequencer {
		return nil
	}
	id := n.internalURL()
	s, err := sequencer.New(n.meta, sequencer.Config{ID: id, Logger: n.log, MeterProvider: n.meter, DedupeWindow: n.cfg.SequencerDedupeWindow, Gather: n.cfg.SequencerGather,
		WriterBytes: n.cfg.WriterBytesPerSecond})
	if err != nil {
		return err
	}
	mux.Handle(sequencer.NewHandler(s, hopts...))
	n.seqw.mu.Lock()
	n.seqw.seq, n.seqw.self = s, id
	n.seqw.mu.Unlock()
	ctx, cancel := context.WithCancel(metadata.WithCaller(n.baseCtx, metadata.CallerSequencer))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx)
	}()
	// Run resigns its term on the way out, so another candidate leads at
	// once instead of after the lease.
	n.onClose = append(n.onClose, func() { cancel(); <-done })
	n.log.Info("sequencer candidate started", "id", id)
	return nil
}

// Sequencer returns the node's sequencer candidate (nil without the
// sequence role or with commit_path direct).
func (n *Node) Sequencer() *sequencer.Sequencer {
	n.seqw.mu.Lock()
	defer n.seqw.mu.Unlock()
	return n.seqw.seq
}

// internalURL is the base URL other nodes reach this node's API at: Addr,
// with an unspecified listen host (0.0.0.0, ::) replaced by this host's
// first non-loopback address.
func (n *Node) internalURL() string {
	host, port, err := net.SplitHostPort(n.ln.Addr().String())
	if err != nil {
		return n.Addr()
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
		return n.Addr()
	}
	if ip := hostAddress(); ip != nil {
		return n.scheme() + net.JoinHostPort(ip.String(), port)
	}
	return n.scheme() + net.JoinHostPort("127.0.0.1", port)
}

// hostAddress returns this host's first global unicast address, IPv4
// first (nil when it has none).
func hostAddress() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var v6 net.IP
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || !ipn.IP.IsGlobalUnicast() {
			continue
		}
		if ipn.IP.To4() != nil {
			return ipn.IP
		}
		if v6 == nil {
			v6 = ipn.IP
		}
	}
	return v6
}
