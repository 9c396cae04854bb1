package node

import (
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/tier/gc"
)

// startJanitor runs retention, orphan collection and etcd history
// compaction under the compact role (tier/gc). Janitors of a cluster elect
// one leader in etcd; the others wait. It stops with the node's base
// context.
func (n *Node) startJanitor() error {
	if !n.cfg.has(RoleCompact) {
		return nil
	}
	history := n.cfg.EtcdCompactionInterval
	if history == 0 {
		history = -1 // disabled: etcd compacts itself
	}
	index, err := n.maintenanceIndex()
	if err != nil {
		return err
	}
	j, err := gc.New(gc.Config{
		NodeID:            n.cfg.NodeID,
		RetentionInterval: n.cfg.RetentionCheckInterval,
		GCInterval:        n.cfg.GCInterval,
		Grace:             n.cfg.GCGrace,
		HistoryInterval:   history,
		HistoryRetain:     n.cfg.EtcdHistoryRetain,
		RecordGrace:       gc.RecordGrace(n.cfg.SequencerDedupeWindow),
		Index:             index,
	}, n.store, n.meta, n.log.With("job", "janitor"), n.meter)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		j.Run(metadata.WithCaller(n.baseCtx, metadata.CallerJanitor))
	}()
	n.onClose = append(n.onClose, func() { <-done })
	return nil
}
