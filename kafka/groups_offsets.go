package kafka

import (
	"context"
	"errors"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
)

// OffsetCommit v2 is the first with Kafka's own retention and no
// timestamps (v0 committed to ZooKeeper, v1 per-partition timestamps);
// v9+ (KIP-848 member epochs, topic ids) are left out. OffsetFetch v8
// fetches several groups at once. Committed offsets are Varve's
// (groups/<g>/offsets/<topic>/<p>): Varve's groups read them too.
func init() {
	register(8, 2, 8, handleOffsetCommit)
	register(9, 1, 8, handleOffsetFetch)
	register(47, 0, 0, handleOffsetDelete)
}

// commitFence checks an OffsetCommit against the group in memory and
// returns what its etcd transaction compares: the marker's revision, or
// 0 for a commit into a group without members (a simple commit,
// generation -1); or the error code.
func (co *coordinator) commitFence(req *kmsg.OffsetCommitRequest) (*group, int64, int16) {
	g := co.live(req.Group)
	if g == nil {
		switch {
		case req.Generation < 0:
			return nil, 0, 0
		case req.MemberID != "":
			return nil, 0, kerr.UnknownMemberID.Code
		}
		return nil, 0, kerr.IllegalGeneration.Code
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return nil, 0, kerr.NotCoordinator.Code
	}
	if len(g.members) == 0 {
		switch {
		case req.Generation < 0:
			return g, g.hold, 0
		case req.MemberID != "":
			return nil, 0, kerr.UnknownMemberID.Code
		}
		return nil, 0, kerr.IllegalGeneration.Code
	}
	if code := g.fenced(req.InstanceID, req.MemberID); code != 0 {
		return nil, 0, code
	}
	m := g.members[req.MemberID]
	switch {
	case m == nil:
		return nil, 0, kerr.UnknownMemberID.Code
	case req.Generation != g.generation:
		return nil, 0, kerr.IllegalGeneration.Code
	case g.state == groupCompleting:
		return nil, 0, kerr.RebalanceInProgress.Code
	}
	if m.join == nil {
		g.heartbeat(m) // a commit counts as a heartbeat, as in Kafka
	}
	return g, g.hold, 0
}

// commitErrorCode is the Kafka code of a partition's commit error.
func commitErrorCode(err error) int16 {
	switch {
	case errors.Is(err, groups.ErrMetadataTooLarge):
		return kerr.OffsetMetadataTooLarge.Code
	case errors.Is(err, groups.ErrCommitOutOfRange):
		return kerr.OffsetOutOfRange.Code
	case errors.Is(err, groups.ErrKafkaFenced):
		return kerr.NotCoordinator.Code
	case errors.Is(err, groups.ErrKafkaHeld):
		return kerr.CoordinatorLoadInProgress.Code
	case errors.Is(err, groups.ErrGroupActive):
		return kerr.UnknownMemberID.Code
	case errors.Is(err, metadata.ErrTopicNotFound), errors.Is(err, metadata.ErrPartitionOutOfRange):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, context.DeadlineExceeded), metadata.IsUnavailable(err):
		return kerr.CoordinatorNotAvailable.Code
	}
	return errorCode(err)
}

// handleOffsetCommit commits into etcd, fenced on the coordinator still
// holding the group (or on the group having no members, for a commit
// without a generation). Kafka's codes per partition: unknown topics and
// partitions, metadata over 4 KiB, offsets past the partition's end
// (OFFSET_OUT_OF_RANGE: Kafka takes them, Varve does not); a commit may
// move an offset backwards.
func handleOffsetCommit(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, groupRequestTimeout)
	defer cancel()
	req := kreq.(*kmsg.OffsetCommitRequest)
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	type at struct{ t, p int }
	var offsets []groups.OffsetCommit
	var where []at
	for ti, rt := range req.Topics {
		ot := kmsg.NewOffsetCommitResponseTopic()
		ot.Topic = rt.Topic
		allowed := c.allowed(authz.Topic, rt.Topic, authz.Consume)
		for pi, rp := range rt.Partitions {
			op := kmsg.NewOffsetCommitResponseTopicPartition()
			op.Partition = rp.Partition
			if !allowed {
				op.ErrorCode = kerr.TopicAuthorizationFailed.Code
			} else {
				md := ""
				if rp.Metadata != nil {
					md = *rp.Metadata
				}
				offsets = append(offsets, groups.OffsetCommit{Topic: rt.Topic, Partition: rp.Partition, Offset: rp.Offset, Metadata: md})
				where = append(where, at{ti, pi})
			}
			ot.Partitions = append(ot.Partitions, op)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	setAll := func(code int16) {
		for _, w := range where {
			resp.Topics[w.t].Partitions[w.p].ErrorCode = code
		}
	}
	if code, _ := c.groupCheck(req.Group, authz.Consume); code != 0 {
		for i := range resp.Topics {
			for j := range resp.Topics[i].Partitions {
				resp.Topics[i].Partitions[j].ErrorCode = code
			}
		}
		return resp, nil
	}
	if len(offsets) > groups.MaxCommitOffsets {
		setAll(kerr.InvalidRequest.Code)
		return resp, nil
	}
	for attempt := 0; ; attempt++ {
		g, hold, code := c.s.coord.commitFence(req)
		if code != 0 {
			setAll(code)
			return resp, nil
		}
		if len(offsets) == 0 {
			return resp, nil
		}
		errs, err := c.s.d.Groups.KafkaCommit(ctx, req.Group, hold, req.Generation, req.MemberID, offsets)
		if errors.Is(err, groups.ErrKafkaFenced) && g != nil && hold != 0 {
			g.mu.Lock()
			moved := g.hold != hold // released (emptied) meanwhile: commit again
			g.mu.Unlock()
			if moved && attempt == 0 {
				continue
			}
			if !moved {
				c.s.log.Warn("kafka coordinator lost a group's marker; its members rejoin", "group", g.name, "err", err)
				c.s.coord.forget(g)
				g.lostHold()
				g.drop(kerr.NotCoordinator.Code, false)
			}
		}
		if err != nil {
			setAll(commitErrorCode(err))
			return resp, nil
		}
		for i, e := range errs {
			if e != nil {
				resp.Topics[where[i].t].Partitions[where[i].p].ErrorCode = commitErrorCode(e)
			}
		}
		return resp, nil
	}
}

// fetchTopic is one topic of an OffsetFetch.
type fetchTopic struct {
	topic string
	parts []int32
}

// handleOffsetFetch answers from etcd on any node (offsets are not the
// coordinator's memory): -1 for a partition without a committed offset,
// unknown ones included; nil topics (v2+) are every committed offset.
func handleOffsetFetch(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, groupRequestTimeout)
	defer cancel()
	req := kreq.(*kmsg.OffsetFetchRequest)
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if req.Version >= 8 {
		for _, rg := range req.Groups {
			var topics []fetchTopic
			if rg.Topics != nil {
				topics = []fetchTopic{}
				for _, t := range rg.Topics {
					topics = append(topics, fetchTopic{t.Topic, t.Partitions})
				}
			}
			og := kmsg.NewOffsetFetchResponseGroup()
			og.Group = rg.Group
			og.Topics, og.ErrorCode = c.fetchOffsets(ctx, rg.Group, topics)
			resp.Groups = append(resp.Groups, og)
		}
		return resp, nil
	}
	var topics []fetchTopic
	if req.Topics != nil || req.Version < 2 {
		topics = []fetchTopic{}
		for _, t := range req.Topics {
			topics = append(topics, fetchTopic{t.Topic, t.Partitions})
		}
	}
	got, code := c.fetchOffsets(ctx, req.Group, topics)
	if code != 0 && req.Version < 2 {
		// v1 has no group error: every partition asked gets it.
		got = nil
		for _, t := range topics {
			gt := kmsg.NewOffsetFetchResponseGroupTopic()
			gt.Topic = t.topic
			for _, p := range t.parts {
				gp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				gp.Partition, gp.Offset, gp.LeaderEpoch, gp.ErrorCode = p, -1, -1, code
				gt.Partitions = append(gt.Partitions, gp)
			}
			got = append(got, gt)
		}
	}
	resp.ErrorCode = code
	for _, gt := range got {
		rt := kmsg.NewOffsetFetchResponseTopic()
		rt.Topic = gt.Topic
		for _, gp := range gt.Partitions {
			rp := kmsg.NewOffsetFetchResponseTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata, rp.ErrorCode = gp.Partition, gp.Offset, gp.LeaderEpoch, gp.Metadata, gp.ErrorCode
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp, nil
}

// fetchOffsets reads group g's committed offsets of topics (nil: all).
func (c *conn) fetchOffsets(ctx context.Context, g string, topics []fetchTopic) ([]kmsg.OffsetFetchResponseGroupTopic, int16) {
	if err := groups.ValidateName(g); err != nil {
		return nil, kerr.InvalidGroupID.Code
	}
	if !c.allowed(authz.Group, g, authz.Describe) {
		return nil, kerr.GroupAuthorizationFailed.Code
	}
	st, err := c.s.d.Groups.State(ctx, g)
	if err != nil {
		c.s.log.Warn("kafka offset fetch failed", "group", g, "err", err)
		return nil, kerr.CoordinatorNotAvailable.Code
	}
	committed := make(map[tp]groups.CommittedOffset, len(st.Offsets))
	for _, o := range st.Offsets {
		committed[tp{o.Topic, o.Partition}] = o
	}
	part := func(topic string, p int32) kmsg.OffsetFetchResponseGroupTopicPartition {
		gp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
		gp.Partition, gp.Offset, gp.LeaderEpoch = p, -1, -1
		md := ""
		if o, ok := committed[tp{topic, p}]; ok {
			gp.Offset, md = o.Offset, o.Metadata
		}
		gp.Metadata = &md
		return gp
	}
	var out []kmsg.OffsetFetchResponseGroupTopic
	if topics == nil {
		for _, o := range st.Offsets { // sorted by topic, partition
			if len(out) == 0 || out[len(out)-1].Topic != o.Topic {
				if !c.allowed(authz.Topic, o.Topic, authz.Describe) {
					continue
				}
				gt := kmsg.NewOffsetFetchResponseGroupTopic()
				gt.Topic = o.Topic
				out = append(out, gt)
			}
			if last := &out[len(out)-1]; last.Topic == o.Topic {
				last.Partitions = append(last.Partitions, part(o.Topic, o.Partition))
			}
		}
		return out, 0
	}
	for _, t := range topics {
		gt := kmsg.NewOffsetFetchResponseGroupTopic()
		gt.Topic = t.topic
		allowed := c.allowed(authz.Topic, t.topic, authz.Describe)
		for _, p := range t.parts {
			gp := part(t.topic, p)
			if !allowed {
				gp.Offset, gp.Metadata, gp.ErrorCode = -1, nil, kerr.TopicAuthorizationFailed.Code
			}
			gt.Partitions = append(gt.Partitions, gp)
		}
		out = append(out, gt)
	}
	return out, 0
}

// handleOffsetDelete deletes committed offsets of a group, but not those
// of topics its members subscribe to (GROUP_SUBSCRIBED_TO_TOPIC), Kafka
// members' or Varve members'.
func handleOffsetDelete(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, groupRequestTimeout)
	defer cancel()
	req := kreq.(*kmsg.OffsetDeleteRequest)
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	for _, rt := range req.Topics {
		ot := kmsg.NewOffsetDeleteResponseTopic()
		ot.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			op := kmsg.NewOffsetDeleteResponseTopicPartition()
			op.Partition = rp.Partition
			ot.Partitions = append(ot.Partitions, op)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	if code, _ := c.groupCheck(req.Group, authz.Delete); code != 0 {
		resp.ErrorCode = code
		return resp, nil
	}
	for attempt := 0; ; attempt++ {
		st, err := c.s.d.Groups.State(ctx, req.Group)
		if err != nil {
			c.s.log.Warn("kafka offset delete failed", "group", req.Group, "err", err)
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			return resp, nil
		}
		if !st.Exists {
			resp.ErrorCode = kerr.GroupIDNotFound.Code
			return resp, nil
		}
		subscribed, code := c.s.coord.subscribed(st)
		if code != 0 {
			resp.ErrorCode = code
			return resp, nil
		}
		var del []groups.TopicPartition
		for i, rt := range req.Topics {
			allowed := c.allowed(authz.Topic, rt.Topic, authz.Consume)
			t, known := c.s.d.Topics.Topic(rt.Topic)
			for j, rp := range rt.Partitions {
				op := &resp.Topics[i].Partitions[j]
				switch {
				case !allowed:
					op.ErrorCode = kerr.TopicAuthorizationFailed.Code
				case !known || rp.Partition < 0 || rp.Partition >= t.Partitions:
					op.ErrorCode = kerr.UnknownTopicOrPartition.Code
				case slices.Contains(subscribed, rt.Topic):
					op.ErrorCode = kerr.GroupSubscribedToTopic.Code
				default:
					del = append(del, groups.TopicPartition{Topic: rt.Topic, Partition: rp.Partition})
				}
			}
		}
		err = c.s.d.Groups.DeleteOffsets(ctx, req.Group, del, st.Revision)
		if errors.Is(err, groups.ErrGroupActive) && attempt < 3 {
			continue // a member came or went: check again
		}
		if err != nil {
			c.s.log.Warn("kafka offset delete failed", "group", req.Group, "err", err)
			resp.ErrorCode = commitErrorCode(err)
		}
		return resp, nil
	}
}

// subscribed are the topics the members of a group subscribe to: Varve
// members' (in etcd) and Kafka members' (their consumer-protocol
// metadata, in this coordinator's memory). A group of Kafka members of
// another protocol type is NON_EMPTY_GROUP; one whose marker another node
// holds, COORDINATOR_LOAD_IN_PROGRESS.
func (co *coordinator) subscribed(st groups.State) ([]string, int16) {
	var topics []string
	kafka := false
	for _, m := range st.Members {
		if m.ID == groups.KafkaMemberID {
			kafka = true
			continue
		}
		topics = append(topics, m.Topics...)
	}
	g := co.live(st.Name)
	if g == nil {
		if kafka {
			return nil, kerr.CoordinatorLoadInProgress.Code
		}
		return topics, 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.members) == 0 {
		return topics, 0
	}
	if g.protocolType != "consumer" {
		return nil, kerr.NonEmptyGroup.Code
	}
	for _, m := range g.members {
		var md kmsg.ConsumerMemberMetadata
		if md.ReadFrom(m.metadataOf(g.protocol)) == nil || md.ReadFrom(m.protocols[0].Metadata) == nil {
			topics = append(topics, md.Topics...)
		}
	}
	return topics, 0
}
