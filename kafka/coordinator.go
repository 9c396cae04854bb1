package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/internal/rendezvous"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
)

// Bounds of the group coordinator.
const (
	// maxGroups bounds the groups one node coordinates in memory; past it
	// a join is answered COORDINATOR_NOT_AVAILABLE.
	maxGroups = 10000
	// maxGroupMembers bounds a group's members and pending member ids
	// (GROUP_MAX_SIZE_REACHED past it).
	maxGroupMembers = 1000
	// Session timeouts: Kafka's group.min.session.timeout.ms and Varve's
	// own maximum.
	minSessionTimeout = 6 * time.Second
	maxSessionTimeout = groups.MaxSessionTimeout
	// maxRebalanceTimeout caps a member's rebalance timeout (Kafka's
	// max.poll.interval.ms default): how long a rebalance waits for
	// members to rejoin and for the leader's assignment.
	maxRebalanceTimeout = 5 * time.Minute
	// maxProtocolBytes bounds the protocol metadata of one member, and
	// maxGroupProtocolBytes those of a group's members together (what the
	// leader's JoinGroup answer carries); past it a join is answered
	// GROUP_MAX_SIZE_REACHED.
	maxProtocolBytes      = 1 << 20
	maxGroupProtocolBytes = 16 << 20
	// markerTTL is the lease of the coordinator's markers: how long a
	// group stays held after its coordinator died.
	markerTTL = 10 * time.Second
	// etcdTimeout bounds one etcd call of the coordinator.
	etcdTimeout = 5 * time.Second
	// groupRequestTimeout bounds the etcd work of one offset or admin
	// request of the group APIs.
	groupRequestTimeout = 15 * time.Second
)

// coordinator runs the classic consumer groups this node coordinates
// (groups.go): the node rendezvous hashing picks for the group's name
// among the live Kafka brokers. Members, generations, protocols and
// assignments live in its memory; committed offsets and the marker that
// fences the node's writes are in etcd (metadata/groups/kafka.go).
type coordinator struct {
	s   *Server
	ctx context.Context // background etcd work; ends at close
	end context.CancelFunc
	wg  sync.WaitGroup

	mu     sync.Mutex
	groups map[string]*group
	closed bool

	leaseMu sync.Mutex
	lease   *groups.KafkaLease
}

func newCoordinator(s *Server) *coordinator {
	co := &coordinator{s: s, groups: map[string]*group{}}
	co.ctx, co.end = context.WithCancel(metadata.WithCaller(context.Background(), metadata.CallerNode))
	return co
}

// coordinatorOf is the broker that coordinates group g.
func (s *Server) coordinatorOf(g string) broker {
	bs := s.brokerList()
	ids := make([]string, len(bs))
	for i, b := range bs {
		ids[i] = b.node
	}
	w := rendezvous.Pick(g, ids)
	for _, b := range bs {
		if b.node == w {
			return b
		}
	}
	return bs[0]
}

// coordinates reports whether this node coordinates group g.
func (co *coordinator) coordinates(g string) bool {
	return co.s.coordinatorOf(g).node == co.s.cfg.NodeID
}

// brokersChanged is told the live brokers: groups this node no longer
// coordinates are let go (their members get NOT_COORDINATOR and find the
// new coordinator, which takes the group once this node released it).
func (co *coordinator) brokersChanged([]broker) {
	co.mu.Lock()
	var moved []*group
	for name, g := range co.groups {
		if !co.coordinates(name) {
			moved = append(moved, g)
			delete(co.groups, name)
		}
	}
	co.mu.Unlock()
	for _, g := range moved {
		co.s.log.Info("kafka group moved to another coordinator", "group", g.name, "coordinator", co.s.coordinatorOf(g.name).node)
		g.drop(kerr.NotCoordinator.Code, false)
	}
}

// close lets every group go and revokes the markers' lease, so other
// nodes take the groups at once.
func (co *coordinator) close() {
	co.mu.Lock()
	co.closed = true
	gs := co.groups
	co.groups = map[string]*group{}
	co.mu.Unlock()
	for _, g := range gs {
		g.drop(kerr.NotCoordinator.Code, true)
	}
	co.end()
	co.wg.Wait()
	co.leaseMu.Lock()
	l := co.lease
	co.lease = nil
	co.leaseMu.Unlock()
	if l != nil {
		ctx, cancel := context.WithTimeout(metadata.WithCaller(context.Background(), metadata.CallerNode), etcdTimeout)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			co.s.log.Warn("kafka coordinator: releasing the groups' markers failed; they expire with their lease", "err", err, "ttl", markerTTL)
		}
	}
}

// group returns the group named g in memory, creating it if create; nil
// with an error code when there is none or the node is closing or full.
func (co *coordinator) group(g string, create bool) (*group, int16) {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.closed {
		return nil, kerr.CoordinatorNotAvailable.Code
	}
	if gr := co.groups[g]; gr != nil {
		return gr, 0
	}
	if !create {
		return nil, 0
	}
	if len(co.groups) >= maxGroups {
		co.s.log.Warn("kafka coordinator: too many groups; a join is refused", "max", maxGroups, "group", g)
		return nil, kerr.CoordinatorNotAvailable.Code
	}
	gr := newGroup(co, g)
	co.groups[g] = gr
	return gr, 0
}

// live returns the group named g if it is in memory and not dropped.
func (co *coordinator) live(g string) *group {
	gr, _ := co.group(g, false)
	return gr
}

// forget removes gr from the groups in memory (if it is still the one
// named so).
func (co *coordinator) forget(gr *group) {
	co.mu.Lock()
	if co.groups[gr.name] == gr {
		delete(co.groups, gr.name)
	}
	co.mu.Unlock()
}

// currentLease returns the lease markers are held under, granting a new
// one when there is none or it was lost.
func (co *coordinator) currentLease(ctx context.Context) (*groups.KafkaLease, error) {
	co.leaseMu.Lock()
	defer co.leaseMu.Unlock()
	if l := co.lease; l != nil {
		select {
		case <-l.Done():
		default:
			return l, nil
		}
	}
	co.mu.Lock()
	closed := co.closed
	co.mu.Unlock()
	if closed {
		return nil, errCoordinatorClosed
	}
	l, err := co.s.d.Groups.NewKafkaLease(ctx, co.s.cfg.NodeID, markerTTL)
	if err != nil {
		return nil, err
	}
	co.lease = l
	co.wg.Add(1)
	go func() {
		defer co.wg.Done()
		select {
		case <-l.Done():
		case <-co.ctx.Done():
			return
		}
		co.s.log.Warn("kafka coordinator: the lease of its groups' markers was lost; their members rejoin")
		co.mu.Lock()
		var lost []*group
		for name, g := range co.groups {
			if g.heldUnder(l) {
				lost = append(lost, g)
				delete(co.groups, name)
			}
		}
		co.mu.Unlock()
		for _, g := range lost {
			g.lostHold()
			g.drop(kerr.NotCoordinator.Code, false)
		}
	}()
	return l, nil
}

var errCoordinatorClosed = errors.New("kafka coordinator closed")

// FindCoordinator v4 batches keys (KIP-699). Key type 0 is a group; there
// are no transaction coordinators.
func init() { register(10, 0, 4, handleFindCoordinator) }

func handleFindCoordinator(_ context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.FindCoordinatorRequest)
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	keys := req.CoordinatorKeys
	if req.Version < 4 {
		keys = []string{req.CoordinatorKey}
	}
	for _, k := range keys {
		rc := kmsg.NewFindCoordinatorResponseCoordinator()
		rc.Key, rc.NodeID, rc.Port = k, -1, -1
		var err error
		switch {
		case req.CoordinatorType != 0:
			rc.ErrorCode = kerr.InvalidRequest.Code
			err = fmt.Errorf("coordinator type %d: Varve has group coordinators only (no transactions)", req.CoordinatorType)
		case groups.ValidateName(k) != nil:
			rc.ErrorCode = kerr.InvalidGroupID.Code
			err = groups.ValidateName(k)
		case !c.allowed(authz.Group, k, authz.Describe):
			rc.ErrorCode = kerr.GroupAuthorizationFailed.Code
			err = fmt.Errorf("principal %q may not describe group %q", c.id.Principal, k)
		default:
			b := c.s.coordinatorOf(k)
			rc.NodeID, rc.Host, rc.Port = b.id, b.host, b.port
		}
		rc.ErrorMessage = errorMessage(err)
		resp.Coordinators = append(resp.Coordinators, rc)
	}
	if req.Version < 4 {
		rc := resp.Coordinators[0]
		resp.Coordinators = nil
		resp.ErrorCode, resp.ErrorMessage = rc.ErrorCode, rc.ErrorMessage
		resp.NodeID, resp.Host, resp.Port = rc.NodeID, rc.Host, rc.Port
	}
	return resp, nil
}
