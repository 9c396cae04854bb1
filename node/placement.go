package node

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/metric"

	"github.com/varve-io/varve/internal/placement"
	"github.com/varve-io/varve/internal/rendezvous"
)

// placer answers, for an ingest node, where a producer client belongs
// (docs/metadata.md, "Producer placement"): the sequencer records how
// many writers the produce rate calls for (metadata.SetWriters), the
// writers are that many of the live ingest nodes, lowest node ids first,
// and each client is placed on one of them by its key
// (rendezvous.Pick). A Produce or InitProducer answer names the client's
// writer when it is another node (placement.ToHeader); the node still
// takes the request.
type placer struct {
	self   string
	placed atomic.Int64 // answers that named another node

	mu      sync.RWMutex
	members map[string]string // live ingest nodes: id → base URL
	want    int               // writers recorded; 0: none, no placement
	ids     []string          // the writers
}

func (p *placer) setMembers(m map[string]string) {
	p.mu.Lock()
	p.members = m
	p.update()
	p.mu.Unlock()
}

func (p *placer) setWriters(n int) {
	p.mu.Lock()
	p.want = n
	p.update()
	p.mu.Unlock()
}

func (p *placer) update() {
	p.ids = nil
	if p.want <= 0 || len(p.members) < 2 {
		return
	}
	ids := slices.Sorted(maps.Keys(p.members))
	p.ids = ids[:min(p.want, len(ids))]
}

// to returns the base URL of the node the client with key belongs on, or
// "" when that is this node, or nothing is placed.
func (p *placer) to(key string) string {
	if p == nil || !placement.ValidKey(key) {
		return ""
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	id := rendezvous.Pick(key, p.ids)
	if id == "" || id == p.self {
		return ""
	}
	return p.members[id]
}

// placeAnswer sets the placement header of an answer to the client
// whose request carried h.
func (p *placer) placeAnswer(req, resp http.Header) {
	if to := p.to(req.Get(placement.ClientHeader)); to != "" {
		resp.Set(placement.ToHeader, to)
		p.placed.Add(1)
	}
}

// startPlacer keeps the ingest node's placer current: the live ingest
// nodes and the writers the sequencer recorded, each through a watch.
func (n *Node) startPlacer(ctx context.Context) error {
	p := &placer{self: n.cfg.NodeID}
	stop, err := n.meta.WatchNodes(ctx, RoleIngest, p.setMembers)
	if err != nil {
		return err
	}
	n.onClose = append(n.onClose, stop)
	stop, err = n.meta.WatchWriters(ctx, p.setWriters)
	if err != nil {
		return err
	}
	n.onClose = append(n.onClose, stop)
	n.place = p
	if err := p.instrument(n.meter); err != nil {
		n.log.Warn("placement metrics not registered", "err", err)
	}
	return nil
}

// instrument exports varve_produce_placed_total (answers that
// named another node) and varve_produce_writers (the writers this node
// sees; 0: no placement).
func (p *placer) instrument(mp metric.MeterProvider) error {
	m := mp.Meter("github.com/varve-io/varve/node/placement")
	placed, err := m.Int64ObservableCounter("varve.produce.placed",
		metric.WithDescription("Produce and InitProducer answers that named another ingest node as the client's writer (docs/metadata.md, \"Producer placement\")."))
	if err != nil {
		return err
	}
	writers, err := m.Int64ObservableGauge("varve.produce.writers",
		metric.WithDescription("Ingest nodes producers are placed on, as this node sees them (0: no placement)."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(placed, p.placed.Load())
		p.mu.RLock()
		o.ObserveInt64(writers, int64(len(p.ids)))
		p.mu.RUnlock()
		return nil
	}, placed, writers)
	return err
}
