package kafka

import (
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata/groups"
)

// DescribeGroups v5 is the last without KIP-1043's error message
// semantics (v6 answers GROUP_ID_NOT_FOUND for unknown groups; ≤ v5 a
// "Dead" group); ListGroups v4 filters by state (v5's type filter is
// KIP-848). Varve's own groups are listed and described too, as consumer
// groups with protocol "varve-<strategy>".
func init() {
	register(15, 0, 5, handleDescribeGroups)
	register(16, 0, 4, handleListGroups)
	register(42, 0, 2, handleDeleteGroups)
}

// groupOperations is the Kafka ACL operations bit field of a group.
func (c *conn) groupOperations(g string) int32 {
	var ops int32
	if c.allowed(authz.Group, g, authz.Consume) {
		ops |= 1 << opRead
	}
	if c.allowed(authz.Group, g, authz.Describe) {
		ops |= 1 << opDescribe
	}
	if c.allowed(authz.Group, g, authz.Delete) {
		ops |= 1 << opDelete
	}
	return ops
}

func handleDescribeGroups(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, groupRequestTimeout)
	defer cancel()
	req := kreq.(*kmsg.DescribeGroupsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, name := range req.Groups {
		dg := kmsg.NewDescribeGroupsResponseGroup()
		dg.Group = name
		dg.AuthorizedOperations = math.MinInt32
		if code, _ := c.groupCheck(name, authz.Describe); code != 0 {
			dg.ErrorCode = code
			resp.Groups = append(resp.Groups, dg)
			continue
		}
		if req.IncludeAuthorizedOperations {
			dg.AuthorizedOperations = c.groupOperations(name)
		}
		if g := c.s.coord.live(name); g == nil || !g.describe(&dg) {
			c.describeStored(ctx, &dg)
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp, nil
}

// describe fills dg from the group in memory; false if it has no members
// and no marker (the stored group says more: Varve members, the last
// generation).
func (g *group) describe(dg *kmsg.DescribeGroupsResponseGroup) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead || len(g.members) == 0 && g.hold == 0 {
		return false
	}
	dg.State, dg.ProtocolType, dg.Protocol = g.state.String(), g.protocolType, g.protocol
	for _, m := range g.sorted() {
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.InstanceID, dm.ClientID, dm.ClientHost = m.id, m.instance, m.clientID, m.host
		if g.state == groupStable {
			dm.ProtocolMetadata, dm.MemberAssignment = m.metadataOf(g.protocol), g.syncResult(m).assignment
		}
		dg.Members = append(dg.Members, dm)
	}
	return true
}

// describeStored fills dg from etcd: Dead for a group that does not
// exist, Empty for one without members; one that Varve members hold is
// Stable, its members and assignment encoded as the consumer protocol's.
func (c *conn) describeStored(ctx context.Context, dg *kmsg.DescribeGroupsResponseGroup) {
	st, err := c.s.d.Groups.State(ctx, dg.Group)
	if err != nil {
		c.s.log.Warn("kafka describe group failed", "group", dg.Group, "err", err)
		dg.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return
	}
	switch {
	case !st.Exists:
		dg.State = groupDead.String()
		return
	case !st.Active():
		dg.State = groupEmpty.String()
		if st.Meta.Generation > 0 {
			dg.ProtocolType = "consumer"
		}
		return
	case st.Members[0].ID == groups.KafkaMemberID:
		// Another node still holds it: the group is moving here.
		dg.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return
	}
	strategy := st.Meta.Strategy
	if strategy == "" || strategy == groups.StrategyKafka {
		strategy = st.Members[0].Strategy // before its first generation
	}
	dg.State, dg.ProtocolType, dg.Protocol = groupStable.String(), "consumer", "varve-"+strategy
	for _, m := range st.Members {
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.ClientID = m.ID, m.ClientID
		md := kmsg.NewConsumerMemberMetadata()
		md.Topics = m.Topics
		dm.ProtocolMetadata = md.AppendTo(nil)
		a := kmsg.NewConsumerMemberAssignment()
		for _, t := range slices.Sorted(maps.Keys(st.Meta.Assignment[m.ID])) {
			at := kmsg.NewConsumerMemberAssignmentTopic()
			at.Topic, at.Partitions = t, st.Meta.Assignment[m.ID][t]
			a.Topics = append(a.Topics, at)
		}
		dm.MemberAssignment = a.AppendTo(nil)
		dg.Members = append(dg.Members, dm)
	}
}

// handleListGroups lists the groups this node coordinates (a client asks
// every broker), Varve's own included.
func handleListGroups(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, groupRequestTimeout)
	defer cancel()
	req := kreq.(*kmsg.ListGroupsRequest)
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	sums, err := c.s.d.Groups.Summaries(ctx)
	if err != nil {
		c.s.log.Warn("kafka list groups failed", "err", err)
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp, nil
	}
	all := c.allowed(authz.Cluster, "", authz.Describe)
	for _, s := range sums {
		if !c.s.coord.coordinates(s.Name) || !all && !c.allowed(authz.Group, s.Name, authz.Describe) {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group = s.Name
		state := groupEmpty
		known := false
		if g := c.s.coord.live(s.Name); g != nil {
			g.mu.Lock()
			if known = !g.dead && (len(g.members) > 0 || g.hold != 0); known {
				state, lg.ProtocolType = g.state, g.protocolType
			}
			g.mu.Unlock()
		}
		switch {
		case known:
		case s.Members > 0:
			state, lg.ProtocolType = groupStable, "consumer"
		case s.Kafka:
			state, lg.ProtocolType = groupPreparing, "consumer" // moving between coordinators
		case s.HasMeta:
			lg.ProtocolType = "consumer"
		}
		lg.GroupState = state.String()
		if len(req.StatesFilter) > 0 && !slices.ContainsFunc(req.StatesFilter, func(f string) bool { return strings.EqualFold(f, lg.GroupState) }) {
			continue
		}
		resp.Groups = append(resp.Groups, lg)
	}
	return resp, nil
}

// handleDeleteGroups deletes groups without members: their meta and
// committed offsets.
func handleDeleteGroups(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, groupRequestTimeout)
	defer cancel()
	req := kreq.(*kmsg.DeleteGroupsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, name := range req.Groups {
		rg := kmsg.NewDeleteGroupsResponseGroup()
		rg.Group = name
		rg.ErrorCode, _ = c.groupCheck(name, authz.Delete)
		if rg.ErrorCode == 0 {
			rg.ErrorCode = c.deleteGroup(ctx, name)
		}
		resp.Groups = append(resp.Groups, rg)
	}
	return resp, nil
}

func (c *conn) deleteGroup(ctx context.Context, name string) int16 {
	if g := c.s.coord.live(name); g != nil {
		g.mu.Lock()
		active := len(g.members) > 0
		g.mu.Unlock()
		if active {
			return kerr.NonEmptyGroup.Code
		}
		// Emptied just now: write its last generation and release its
		// marker before deleting.
		if !g.flush(ctx, false) {
			return kerr.CoordinatorNotAvailable.Code
		}
	}
	err := c.s.d.Groups.Delete(ctx, name)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, groups.ErrGroupNotFound):
		return kerr.GroupIDNotFound.Code
	case errors.Is(err, groups.ErrGroupActive):
		return kerr.NonEmptyGroup.Code
	}
	c.s.log.Warn("kafka delete group failed", "group", name, "err", err)
	return kerr.CoordinatorNotAvailable.Code
}
