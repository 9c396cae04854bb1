package node

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/compaction"
	"github.com/varve-io/varve/tier/compact"
	"github.com/varve-io/varve/tier/segment"
)

// startCompaction mounts the admin API (every node answers it: it only
// reads and writes etcd) and, under the compact role, runs a compactor
// (tier/compact) until the node shuts down. A node with the fetch role
// shares its index cache with the compactor and the janitor; a
// compact-only node watches the index itself (maintenanceIndex).
func (n *Node) startCompaction(mux *http.ServeMux, opts ...connect.HandlerOption) error {
	mux.Handle(varvev1connect.NewAdminServiceHandler(&adminService{meta: n.meta}, opts...))
	if !n.cfg.has(RoleCompact) {
		return nil
	}
	index, err := n.maintenanceIndex()
	if err != nil {
		return err
	}
	c, err := compact.New(compact.Config{
		NodeID:      n.cfg.NodeID,
		Interval:    n.cfg.CompactionInterval,
		TargetBytes: n.cfg.CompactionTargetBytes,
		MinEntries:  n.cfg.CompactionMinEntries,
		// Off the ack path: spend the CPU for smaller long-lived objects.
		Level: segment.LevelDefault,
		// A swap must apply well before the GC may delete its output.
		MaxSwapDelay: n.cfg.GCGrace / 2,
		// Sequencer records may be pruned 1.5 dedupe windows after their
		// commit: compact their entries by then, however few.
		RecordMaxAge: n.cfg.SequencerDedupeWindow,
		// Claims are kept up to a share of the partitions per live
		// compact node.
		Compactors: func(ctx context.Context) (int, error) {
			nodes, err := n.meta.Nodes(ctx, RoleCompact)
			return len(nodes), err
		},
	}, n.store, n.meta, index, n.log.With("job", "compaction"), n.meter)
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(metadata.WithCaller(n.baseCtx, metadata.CallerCompaction))
	}()
	n.onClose = append(n.onClose, func() { <-done })
	return nil
}

// maintenanceIndex returns the watched index the compact role's compactor
// and janitor plan from: the fetch role's, or one of their own on a node
// without it (made once).
func (n *Node) maintenanceIndex() (*metadata.Cache, error) {
	if n.index != nil {
		return n.index, nil
	}
	if n.ownIndex == nil {
		index, err := n.meta.NewCache(n.baseCtx, true)
		if err != nil {
			return nil, err
		}
		n.ownIndex = index
		n.onClose = append(n.onClose, index.Close)
	}
	return n.ownIndex, nil
}

// adminService pauses, resumes and reports on compaction, cluster-wide.
type adminService struct {
	varvev1connect.UnimplementedAdminServiceHandler
	meta *metadata.Client
}

func (s *adminService) PauseCompaction(ctx context.Context, _ *connect.Request[varvev1.PauseCompactionRequest]) (*connect.Response[varvev1.PauseCompactionResponse], error) {
	if err := compaction.New(s.meta).SetPaused(ctx, true); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(&varvev1.PauseCompactionResponse{}), nil
}

func (s *adminService) ResumeCompaction(ctx context.Context, _ *connect.Request[varvev1.ResumeCompactionRequest]) (*connect.Response[varvev1.ResumeCompactionResponse], error) {
	if err := compaction.New(s.meta).SetPaused(ctx, false); err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	return connect.NewResponse(&varvev1.ResumeCompactionResponse{}), nil
}

func (s *adminService) CompactionStatus(ctx context.Context, req *connect.Request[varvev1.CompactionStatusRequest]) (*connect.Response[varvev1.CompactionStatusResponse], error) {
	topic := req.Msg.GetTopic()
	if topic != "" {
		if _, err := s.meta.GetTopic(ctx, topic); err != nil {
			return nil, toConnect(err)
		}
	}
	paused, err := compaction.New(s.meta).Paused(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	backlog, err := compaction.New(s.meta).Backlog(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnavailable, err)
	}
	out := &varvev1.CompactionStatusResponse{Paused: paused}
	for _, b := range backlog {
		if topic != "" && b.Topic != topic {
			continue
		}
		out.Partitions = append(out.Partitions, &varvev1.PartitionCompaction{
			Topic: b.Topic, Partition: b.Partition, IndexEntries: b.Entries, BacklogEntries: b.L0Entries, BacklogBytes: b.L0Bytes,
		})
		out.IndexEntries += b.Entries
		out.BacklogEntries += b.L0Entries
		out.BacklogBytes += b.L0Bytes
	}
	return connect.NewResponse(out), nil
}
