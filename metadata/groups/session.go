package groups

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// JoinSpec describes a member joining a group.
type JoinSpec struct {
	Group    string
	Topics   []string
	Strategy string // StrategySticky (default) or StrategyRange
	// SessionTimeout is how long the member stays without a heartbeat
	// (DefaultSessionTimeout when 0; MinSessionTimeout to MaxSessionTimeout).
	SessionTimeout time.Duration
	ClientID       string
	Node           string // the node holding the session, for DescribeGroup
}

func (s *JoinSpec) normalize() error {
	if err := ValidateName(s.Group); err != nil {
		return err
	}
	if len(s.Topics) == 0 {
		return fmt.Errorf("join group %q: %w: no topics", s.Group, metadata.ErrInvalidArgument)
	}
	if len(s.Topics) > 100 {
		return fmt.Errorf("join group %q: %w: %d topics, at most 100", s.Group, metadata.ErrInvalidArgument, len(s.Topics))
	}
	for _, t := range s.Topics {
		if err := metadata.ValidateTopicName(t); err != nil {
			return fmt.Errorf("join group %q: %w", s.Group, err)
		}
	}
	s.Topics = slices.Clone(s.Topics)
	slices.Sort(s.Topics)
	s.Topics = slices.Compact(s.Topics)
	switch s.Strategy {
	case "":
		s.Strategy = StrategySticky
	case StrategySticky, StrategyRange:
	default:
		return fmt.Errorf("join group %q: %w: strategy must be %q or %q, not %q", s.Group, metadata.ErrInvalidArgument, StrategySticky, StrategyRange, s.Strategy)
	}
	switch {
	case s.SessionTimeout == 0:
		s.SessionTimeout = DefaultSessionTimeout
	case s.SessionTimeout < MinSessionTimeout || s.SessionTimeout > MaxSessionTimeout:
		return fmt.Errorf("join group %q: %w: session timeout must be between %v and %v, got %v", s.Group, metadata.ErrInvalidArgument, MinSessionTimeout, MaxSessionTimeout, s.SessionTimeout)
	}
	if len(s.ClientID) > 255 {
		return fmt.Errorf("join group %q: %w: client id is %d bytes, at most 255", s.Group, metadata.ErrInvalidArgument, len(s.ClientID))
	}
	return nil
}

// Generation is what one member learns of a generation.
type Generation struct {
	Generation int64
	Strategy   string
	Members    int
	Assigned   Assignment
	// Revoked are the partitions the member lost in this generation; it may
	// still commit them during it.
	Revoked Assignment
}

// Session is one member's membership. The member key is bound to a
// lease of the session timeout that Heartbeat renews (from any node); the
// session watches the group and recomputes the assignment when the member
// set changes. Leave ends it at once.
type Session struct {
	c      *Groups
	group  string
	id     string
	lease  clientv3.LeaseID
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	latest  Generation
	changed chan struct{} // closed and replaced when latest changes
	err     error         // why the session ended
	left    bool
}

// Join adds a member to the group. Every topic must exist
// (metadata.ErrTopicNotFound); the strategy must match the one of the members
// already in the group (ErrInconsistentStrategy).
func (c *Groups) Join(ctx context.Context, spec JoinSpec) (*Session, error) {
	if err := spec.normalize(); err != nil {
		return nil, err
	}
	for _, t := range spec.Topics {
		if _, err := c.meta.GetTopic(ctx, t); err != nil {
			return nil, fmt.Errorf("join group %q: %w", spec.Group, err)
		}
	}
	st, err := c.State(ctx, spec.Group)
	if err != nil {
		return nil, err
	}
	if st.Active() && st.Members[0].Strategy != spec.Strategy {
		return nil, fmt.Errorf("join group %q with strategy %q: %w: its members use %q", spec.Group, spec.Strategy, ErrInconsistentStrategy, st.Members[0].Strategy)
	}
	ttl := int64((spec.SessionTimeout + time.Second - 1) / time.Second)
	lease, err := c.cli.Grant(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("join group %q: grant session lease: %w", spec.Group, err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	m := Member{
		ID: "m-" + hex.EncodeToString(b[:]), ClientID: spec.ClientID, Topics: spec.Topics, Strategy: spec.Strategy,
		SessionTimeoutMs: int32(spec.SessionTimeout / time.Millisecond), JoinedMs: time.Now().UnixMilli(),
		Node: spec.Node, Lease: int64(lease.ID),
	}
	v, _ := json.Marshal(m)
	k := keys.GroupMember(spec.Group, m.ID)
	// A Kafka coordinator's marker (kafka.go) taken since the read
	// above keeps Varve members out too.
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(keys.GroupMember(spec.Group, KafkaMemberID)), "=", 0)).
		Then(clientv3.OpPut(k, string(v), clientv3.WithLease(lease.ID))).
		Else(clientv3.OpGet(keys.GroupMember(spec.Group, KafkaMemberID), clientv3.WithCountOnly())).
		Commit()
	if err != nil || !resp.Succeeded {
		_, _ = c.cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		if err == nil {
			err = errors.New("member id taken")
			if resp.Responses[0].GetResponseRange().Count > 0 {
				err = fmt.Errorf("%w: its members use %q", ErrInconsistentStrategy, StrategyKafka)
			}
		}
		return nil, fmt.Errorf("join group %q: %w", spec.Group, err)
	}
	sctx, cancel := context.WithCancel(metadata.WithCaller(context.Background(), metadata.CallerGroups))
	s := &Session{
		c: c, group: spec.Group, id: m.ID, lease: lease.ID, cancel: cancel,
		done: make(chan struct{}), changed: make(chan struct{}),
	}
	go s.run(sctx, resp.Header.Revision)
	return s, nil
}

// ID is the member id.
func (s *Session) ID() string { return s.id }

// Done is closed when the session has ended; Err says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended: nil after Leave, ErrUnknownMember when the
// member key disappeared (its lease expired without heartbeats).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Next returns the first generation newer than after that includes the
// member, waiting for it; or the session's end (ErrUnknownMember wrapped,
// or ErrClosedSession after Leave); or ctx's error.
func (s *Session) Next(ctx context.Context, after int64) (Generation, error) {
	for {
		s.mu.Lock()
		g, ch, err := s.latest, s.changed, s.err
		left := s.left
		s.mu.Unlock()
		if g.Generation > after {
			return g, nil
		}
		if err != nil {
			return Generation{}, err
		}
		if left {
			return Generation{}, fmt.Errorf("member %s of group %q: %w", s.id, s.group, ErrClosedSession)
		}
		select {
		case <-ch:
		case <-s.done:
		case <-ctx.Done():
			return Generation{}, ctx.Err()
		}
	}
}

// ErrClosedSession is returned by Next after Leave.
var ErrClosedSession = errors.New("group session closed")

// Leave removes the member at once (revoking its lease) and recomputes the
// assignment of the members left.
func (s *Session) Leave(ctx context.Context) error {
	s.mu.Lock()
	s.left = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	if _, err := s.c.cli.Revoke(ctx, s.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("leave group %q as %s: %w", s.group, s.id, err)
	}
	if _, err := s.c.Rebalance(ctx, s.group); err != nil {
		return fmt.Errorf("leave group %q as %s: %w", s.group, s.id, err)
	}
	return nil
}

func (s *Session) end(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

func (s *Session) publish(m Meta) {
	if _, ok := slices.BinarySearch(m.Members, s.id); !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.Generation <= s.latest.Generation {
		return
	}
	a := m.Assignment[s.id]
	if a == nil {
		a = Assignment{}
	}
	r := m.Revoked[s.id]
	if r == nil {
		r = Assignment{}
	}
	s.latest = Generation{Generation: m.Generation, Strategy: m.Strategy, Members: len(m.Members), Assigned: a, Revoked: r}
	close(s.changed)
	s.changed = make(chan struct{})
}

// run keeps the group's assignment in step with its members: it rebalances
// after each change of the member set it sees and publishes each new
// generation, until the session ends.
func (s *Session) run(ctx context.Context, rev int64) {
	defer close(s.done)
	g := s.group
	rebalance := func() bool {
		for ctx.Err() == nil {
			m, err := s.c.Rebalance(ctx, g)
			if err == nil {
				s.publish(m)
				return true
			}
			if ctx.Err() != nil {
				return false
			}
			s.c.log.Warn("rebalance group failed; retrying", "group", g, "err", err)
			t := time.NewTimer(200 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		return false
	}
	if !rebalance() {
		return
	}
	mine := keys.GroupMember(g, s.id)
	for ctx.Err() == nil {
		wch := s.c.cli.Watch(clientv3.WithRequireLeader(ctx), keys.GroupPrefix(g), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					rev = wr.CompactRevision - 1
				}
				break
			}
			rev = wr.Header.Revision
			membersChanged := false
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				switch {
				case k == mine && ev.Type == mvccpb.DELETE:
					s.end(fmt.Errorf("member %s of group %q: session expired: %w", s.id, g, ErrUnknownMember))
					return
				case k == mine && leftMark(ev.Kv.Value):
					// LeaveGroup from any node: the session is closed,
					// not expired.
					s.mu.Lock()
					s.left = true
					s.mu.Unlock()
					return
				case strings.HasPrefix(k, keys.GroupMembersPrefix(g)):
					membersChanged = true
				case k == keys.GroupMeta(g) && ev.Type == mvccpb.PUT:
					if m, err := decodeMeta(g, ev.Kv.Value); err == nil {
						s.publish(m)
					}
				}
			}
			if membersChanged && !rebalance() {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The watch broke (leader change, compaction, etcd down): check the
		// member is still there and catch up before watching again, so that
		// no change lost with compacted history goes unseen.
		for {
			resp, err := s.c.cli.Get(ctx, mine)
			if err == nil && len(resp.Kvs) == 0 {
				s.end(fmt.Errorf("member %s of group %q: session expired: %w", s.id, g, ErrUnknownMember))
				return
			}
			if err == nil {
				rev = resp.Header.Revision
				if !rebalance() {
					return
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			t := time.NewTimer(200 * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
	}
}

// Rebalance makes the group's meta match its members: when the set of
// member ids differs from the one of the current generation, it writes
// generation+1 with a new assignment, in a transaction that compares the
// meta's ModRevision, so of several nodes racing exactly one writes each
// generation. Any node may call it; it is idempotent. It returns the
// current meta.
func (c *Groups) Rebalance(ctx context.Context, g string) (Meta, error) {
	for {
		meta, metaRev, members, err := c.readGroup(ctx, g)
		if err != nil {
			return meta, err
		}
		ids := make([]string, len(members))
		for i, m := range members {
			ids[i] = m.ID
		}
		slices.Sort(ids)
		if metaRev != 0 && slices.Equal(ids, meta.Members) || metaRev == 0 && len(ids) == 0 {
			return meta, nil
		}
		next, err := c.nextGeneration(ctx, g, meta, members, ids)
		if err != nil {
			return meta, err
		}
		written, err := c.writeMeta(ctx, g, metaRev, next)
		if err != nil {
			return meta, err
		}
		if written {
			c.log.Info("group rebalanced", "group", g, "generation", next.Generation, "members", len(ids), "strategy", next.Strategy)
			return next, nil
		}
		if ctx.Err() != nil {
			return meta, fmt.Errorf("rebalance group %q: %w", g, ctx.Err())
		}
		// Another node wrote a generation first: read again.
	}
}

// readGroup reads the group's meta (metaRev 0: none yet) and its members
// at one revision.
func (c *Groups) readGroup(ctx context.Context, g string) (meta Meta, metaRev int64, members []Member, err error) {
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(keys.GroupMeta(g)),
		clientv3.OpGet(keys.GroupMembersPrefix(g), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return Meta{}, 0, nil, fmt.Errorf("rebalance group %q: %w", g, err)
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if meta, err = decodeMeta(g, kvs[0].Value); err != nil {
			return meta, 0, nil, err
		}
		metaRev = kvs[0].ModRevision
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var m Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return meta, 0, nil, fmt.Errorf("decode member %s: %w", kv.Key, err)
		}
		if m.Left {
			continue // leaving: its lease is being revoked
		}
		members = append(members, m)
	}
	return meta, metaRev, members, nil
}

// nextGeneration is the generation after meta for members (ids sorted):
// the strategy of the oldest member, a new assignment of the topics they
// subscribe to, and what each member loses.
func (c *Groups) nextGeneration(ctx context.Context, g string, meta Meta, members []Member, ids []string) (Meta, error) {
	next := Meta{Generation: meta.Generation + 1, Strategy: meta.Strategy, Members: ids, UpdatedMs: time.Now().UnixMilli()}
	if len(members) > 0 {
		oldest := slices.MinFunc(members, func(a, b Member) int {
			if a.JoinedMs != b.JoinedMs {
				return int(a.JoinedMs - b.JoinedMs)
			}
			return strings.Compare(a.ID, b.ID)
		})
		next.Strategy = oldest.Strategy
	}
	subs := make([]Subscription, len(members))
	partitions := map[string]int32{}
	for i, m := range members {
		subs[i] = Subscription{ID: m.ID, Topics: m.Topics}
		for _, t := range m.Topics {
			if _, ok := partitions[t]; ok {
				continue
			}
			tp, err := c.meta.GetTopic(ctx, t)
			switch {
			case errors.Is(err, metadata.ErrTopicNotFound):
				partitions[t] = 0
			case err != nil:
				return next, fmt.Errorf("rebalance group %q: %w", g, err)
			default:
				partitions[t] = tp.Partitions
			}
		}
	}
	next.Assignment = Assign(next.Strategy, subs, partitions, meta.Assignment)
	for _, id := range ids {
		if lost := meta.Assignment[id].Minus(next.Assignment[id]); lost.Count() > 0 {
			if next.Revoked == nil {
				next.Revoked = map[string]Assignment{}
			}
			next.Revoked[id] = lost
		}
	}
	return next, nil
}

// writeMeta writes next if the meta is still at metaRev (0: absent), and
// reports whether it did.
func (c *Groups) writeMeta(ctx context.Context, g string, metaRev int64, next Meta) (bool, error) {
	v, _ := json.Marshal(next)
	cmp := clientv3.Compare(clientv3.ModRevision(keys.GroupMeta(g)), "=", metaRev)
	if metaRev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(keys.GroupMeta(g)), "=", 0)
	}
	wr, err := c.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(keys.GroupMeta(g), string(v))).Commit()
	if err != nil {
		return false, fmt.Errorf("rebalance group %q: %w", g, err)
	}
	return wr.Succeeded, nil
}

// Leave removes a member now (revoking its session lease, from any
// node) and rebalances the group. An unknown member is ErrUnknownMember.
func (c *Groups) Leave(ctx context.Context, g, member string) error {
	if err := ValidateName(g); err != nil {
		return err
	}
	resp, err := c.cli.Get(ctx, keys.GroupMember(g, member))
	if err != nil {
		return fmt.Errorf("leave group %q as %s: %w", g, member, err)
	}
	if len(resp.Kvs) == 0 || member == "" || member == KafkaMemberID {
		return fmt.Errorf("leave group %q as %s: %w", g, member, ErrUnknownMember)
	}
	// Mark the member as leaving first, so its session (on whichever node
	// holds it) ends as closed rather than expired; if the mark fails the
	// revoke still removes it.
	var m Member
	if json.Unmarshal(resp.Kvs[0].Value, &m) == nil {
		m.Left = true
		if v, err := json.Marshal(m); err == nil {
			mk := keys.GroupMember(g, member)
			_, _ = c.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(mk), "=", resp.Kvs[0].ModRevision)).
				Then(clientv3.OpPut(mk, string(v), clientv3.WithIgnoreLease())).Commit()
		}
	}
	if _, err := c.cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("leave group %q as %s: %w", g, member, err)
	}
	if _, err := c.Rebalance(ctx, g); err != nil {
		return fmt.Errorf("leave group %q as %s: %w", g, member, err)
	}
	return nil
}

// Heartbeat renews the member's session lease and returns the group's
// current generation. A member that is gone (left, or its lease expired)
// gets ErrUnknownMember and must join again.
func (c *Groups) Heartbeat(ctx context.Context, g, member string) (int64, error) {
	if err := ValidateName(g); err != nil {
		return 0, err
	}
	if member == "" {
		return 0, fmt.Errorf("heartbeat in group %q: %w: no member id", g, metadata.ErrInvalidArgument)
	}
	resp, err := c.cli.Txn(ctx).Then(
		clientv3.OpGet(keys.GroupMember(g, member)),
		clientv3.OpGet(keys.GroupMeta(g)),
	).Commit()
	if err != nil {
		return 0, fmt.Errorf("heartbeat of %s in group %q: %w", member, g, err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || leftMark(kvs[0].Value) {
		return 0, fmt.Errorf("heartbeat of %s in group %q: %w", member, g, ErrUnknownMember)
	}
	var gen int64
	if mk := resp.Responses[1].GetResponseRange().Kvs; len(mk) > 0 {
		m, err := decodeMeta(g, mk[0].Value)
		if err != nil {
			return 0, err
		}
		gen = m.Generation
	}
	if _, err := c.cli.KeepAliveOnce(ctx, clientv3.LeaseID(kvs[0].Lease)); err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return 0, fmt.Errorf("heartbeat of %s in group %q: %w", member, g, ErrUnknownMember)
		}
		return 0, fmt.Errorf("heartbeat of %s in group %q: %w", member, g, err)
	}
	return gen, nil
}

// leftMark reports a member value marked Left by Leave.
func leftMark(v []byte) bool {
	var m Member
	return json.Unmarshal(v, &m) == nil && m.Left
}
