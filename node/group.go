package node

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/metadata/groups"
	"github.com/varve-io/varve/node/groupapi"
)

// mountGroups serves GroupService on mux and exports consumer lag as the
// gauge varve_group_lag{group,topic,partition}, read from etcd on scrape.
func (n *Node) mountGroups(mux *http.ServeMux, opts ...connect.HandlerOption) {
	gs := groups.New(n.meta)
	s := groupapi.New(groupapi.Config{Meta: n.meta, Groups: gs, Fetcher: n.fetcher, Node: n.cfg.NodeID, Log: n.log,
		ToConnect: toConnect, NoFetch: func() error { return unavailable(RoleFetch) }})
	mux.Handle(varvev1connect.NewGroupServiceHandler(s, opts...))
	m := n.meter.Meter("github.com/varve-io/varve/node/groups")
	lag, err := m.Int64ObservableGauge("varve.group.lag",
		metric.WithDescription("Records of a partition after the consumer group's committed offset."))
	if err == nil {
		_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			lags, err := gs.Lags(ctx)
			if err != nil {
				return err
			}
			for _, l := range lags {
				o.ObserveInt64(lag, max(0, l.End-l.Committed), metric.WithAttributes(
					attribute.String("group", l.Group), attribute.String("topic", l.Topic),
					attribute.String("partition", strconv.Itoa(int(l.Partition)))))
			}
			return nil
		}, lag)
	}
	if err != nil {
		n.log.Warn("group lag metric not registered", "err", err)
	}
}
