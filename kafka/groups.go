package kafka

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata/groups"
)

// The classic group membership protocol (KIP-62 and later): JoinGroup
// v4+ hands a new member its id first (KIP-394, MEMBER_ID_REQUIRED), v5+
// takes static members (KIP-345, group.instance.id), v9 tells a static
// leader that rejoined to skip the assignment (KIP-814). Assignors run in
// the clients: the coordinator relays the members' protocol metadata to
// the leader and the leader's assignment to each member.
func init() {
	register(11, 0, 9, handleJoinGroup)
	register(14, 0, 5, handleSyncGroup)
	register(12, 0, 4, handleHeartbeat)
	register(13, 0, 5, handleLeaveGroup)
}

type groupState int8

const (
	groupEmpty groupState = iota
	groupPreparing
	groupCompleting
	groupStable
	groupDead
)

// String is the state's name in DescribeGroups and ListGroups.
func (s groupState) String() string {
	switch s {
	case groupEmpty:
		return "Empty"
	case groupPreparing:
		return "PreparingRebalance"
	case groupCompleting:
		return "CompletingRebalance"
	case groupStable:
		return "Stable"
	}
	return "Dead"
}

// joinResult is the answer to a JoinGroup that waited for the rebalance.
type joinResult struct {
	code         int16
	generation   int32
	protocolType string
	protocol     string
	leader       string
	memberID     string
	members      []kmsg.JoinGroupResponseMember
	skip         bool
}

func (r joinResult) fill(resp *kmsg.JoinGroupResponse) {
	resp.ErrorCode = r.code
	if r.memberID != "" {
		resp.MemberID = r.memberID
	}
	if r.code != 0 {
		return
	}
	resp.Generation = r.generation
	resp.ProtocolType, resp.Protocol = kmsg.StringPtr(r.protocolType), kmsg.StringPtr(r.protocol)
	resp.LeaderID = r.leader
	resp.Members = r.members
	resp.SkipAssignment = r.skip
}

// syncResult is the answer to a SyncGroup that waited for the leader's.
type syncResult struct {
	code         int16
	protocolType string
	protocol     string
	assignment   []byte
}

func (r syncResult) fill(resp *kmsg.SyncGroupResponse) {
	resp.ErrorCode = r.code
	if r.code != 0 {
		return
	}
	resp.ProtocolType, resp.Protocol = kmsg.StringPtr(r.protocolType), kmsg.StringPtr(r.protocol)
	resp.MemberAssignment = r.assignment
}

type member struct {
	id        string
	instance  *string
	clientID  string
	host      string
	protocols []kmsg.JoinGroupRequestProtocol
	session   time.Duration
	rebalance time.Duration
	order     uint64 // when it joined, for choosing a leader

	timer *time.Timer
	seq   uint64 // bumped with each session timer: an older one does nothing

	join   chan joinResult // non-nil while it waits in JoinGroup
	sync   chan syncResult // non-nil while it waits in SyncGroup
	synced bool            // it sent SyncGroup in this generation

	assignment []byte
}

// group is one classic group coordinated here. Its state machine is
// Kafka's: Empty → PreparingRebalance (members join; it waits for every
// known member to rejoin, at most the rebalance timeout) →
// CompletingRebalance (the leader got the members; it waits for its
// SyncGroup, at most the rebalance timeout) → Stable; a join, a leave or
// an expired session starts the next rebalance.
type group struct {
	co   *coordinator
	name string

	// holdSem (one slot) serializes the etcd work on the group's marker:
	// taking it (ensureHeld) and the writes and release (flush). A
	// request waits for it at most its deadline.
	holdSem chan struct{}

	mu           sync.Mutex
	dead         bool // dropped: no longer coordinated here
	state        groupState
	lease        *groups.KafkaLease
	hold         int64 // the marker's create revision; 0: not held
	generation   int32
	protocolType string
	protocol     string
	leader       string
	members      map[string]*member
	pending      map[string]uint64 // KIP-394 member ids handed out → their expiry's seq
	static       map[string]string // instance id → member id
	joining      int               // members waiting in JoinGroup
	order        uint64
	seq          uint64 // of the group's rebalance and pending sync timers
	pendSeq      uint64 // of the pending ids' timers
	rebalanceT   *time.Timer
	syncT        *time.Timer
	working      bool // work runs
	metaDue      bool // a generation to write to etcd
}

func newGroup(co *coordinator, name string) *group {
	return &group{co: co, name: name, holdSem: make(chan struct{}, 1), members: map[string]*member{}, pending: map[string]uint64{}, static: map[string]string{}}
}

// lockHold takes holdSem, unless ctx ends first.
func (g *group) lockHold(ctx context.Context) bool {
	select {
	case g.holdSem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (g *group) unlockHold() { <-g.holdSem }

var errGroupGone = errors.New("group no longer in memory")

// after runs fn with the group locked after d, unless the group was
// dropped meanwhile.
func (g *group) after(d time.Duration, fn func()) *time.Timer {
	return time.AfterFunc(d, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.dead {
			fn()
		}
	})
}

// heartbeat (re)starts m's session timer; g.mu is held.
func (g *group) heartbeat(m *member) {
	if m.timer != nil {
		m.timer.Stop()
	}
	m.seq++
	seq := m.seq
	m.timer = g.after(m.session, func() {
		if m.seq != seq || g.members[m.id] != m || m.join != nil {
			return
		}
		g.co.s.log.Info("kafka group member's session expired", "group", g.name, "member", m.id, "session", m.session)
		g.remove(m, kerr.UnknownMemberID.Code)
		g.rebalance()
	})
}

func (m *member) stopTimer() {
	if m.timer != nil {
		m.timer.Stop()
	}
	m.seq++
}

// remove takes m out of the group, answering a request it waits in with
// code; g.mu is held. It does not rebalance.
func (g *group) remove(m *member, code int16) {
	delete(g.members, m.id)
	if m.instance != nil && g.static[*m.instance] == m.id {
		delete(g.static, *m.instance)
	}
	m.stopTimer()
	if m.join != nil {
		m.join <- joinResult{code: code}
		m.join = nil
		g.joining--
	}
	if m.sync != nil {
		m.sync <- syncResult{code: code}
		m.sync = nil
	}
}

// maxRebalance is the longest rebalance timeout of the members.
func (g *group) maxRebalance() time.Duration {
	var d time.Duration
	for _, m := range g.members {
		d = max(d, m.rebalance)
	}
	return max(d, time.Second)
}

// rebalance starts a rebalance, or, during one, completes it if every
// member rejoined (a member joined or left); g.mu is held. Members waiting
// in SyncGroup are told to rejoin. The join phase lasts at most the
// longest rebalance timeout from its start.
func (g *group) rebalance() {
	if g.state == groupPreparing {
		if g.joining >= len(g.members) {
			g.complete()
		}
		return
	}
	if g.state == groupCompleting {
		for _, m := range g.members {
			if m.sync != nil {
				m.sync <- syncResult{code: kerr.RebalanceInProgress.Code}
				m.sync = nil
			}
		}
	}
	g.stopTimers()
	g.state = groupPreparing
	if g.joining >= len(g.members) {
		g.complete()
		return
	}
	seq := g.seq
	g.rebalanceT = g.after(g.maxRebalance(), func() {
		if g.seq == seq && g.state == groupPreparing {
			g.complete()
		}
	})
}

func (g *group) stopTimers() {
	g.seq++
	if g.rebalanceT != nil {
		g.rebalanceT.Stop()
		g.rebalanceT = nil
	}
	if g.syncT != nil {
		g.syncT.Stop()
		g.syncT = nil
	}
}

// complete ends the join phase: members that did not rejoin are out, the
// generation moves on, the protocol is chosen and every member gets its
// JoinGroup answer (the leader with the members' metadata); g.mu is held.
func (g *group) complete() {
	g.stopTimers()
	for _, m := range g.members {
		if m.join == nil {
			g.co.s.log.Info("kafka group member did not rejoin in time", "group", g.name, "member", m.id)
			g.remove(m, 0)
		}
	}
	g.generation++
	if g.generation <= 0 {
		g.generation = 1
	}
	g.metaDue = true
	g.kick()
	if len(g.members) == 0 {
		g.state, g.protocol, g.leader = groupEmpty, "", ""
		return
	}
	g.protocol = g.chooseProtocol()
	if _, ok := g.members[g.leader]; !ok {
		g.leader = ""
		for _, m := range g.members {
			if g.leader == "" || m.order < g.members[g.leader].order {
				g.leader = m.id
			}
		}
	}
	g.state = groupCompleting
	var all []kmsg.JoinGroupResponseMember
	for _, m := range g.sorted() {
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID, jm.InstanceID, jm.ProtocolMetadata = m.id, m.instance, m.metadataOf(g.protocol)
		all = append(all, jm)
	}
	for _, m := range g.members {
		m.assignment, m.synced = nil, false
		r := g.joinResult(m.id)
		if m.id == g.leader {
			r.members = all
		}
		m.join <- r
		m.join = nil
		g.heartbeat(m)
	}
	g.joining = 0
	gen, seq := g.generation, g.seq
	g.syncT = g.after(g.maxRebalance(), func() {
		if g.seq != seq || g.state != groupCompleting || g.generation != gen {
			return
		}
		for _, m := range g.members {
			if !m.synced {
				g.co.s.log.Info("kafka group member did not sync in time", "group", g.name, "member", m.id, "leader", m.id == g.leader)
				g.remove(m, kerr.RebalanceInProgress.Code)
			}
		}
		g.rebalance()
	})
}

func (g *group) joinResult(id string) joinResult {
	return joinResult{generation: g.generation, protocolType: g.protocolType, protocol: g.protocol, leader: g.leader, memberID: id}
}

// sorted are the members by join order.
func (g *group) sorted() []*member {
	ms := make([]*member, 0, len(g.members))
	for _, m := range g.members {
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].order < ms[j].order })
	return ms
}

func (m *member) metadataOf(protocol string) []byte {
	for _, p := range m.protocols {
		if p.Name == protocol {
			return p.Metadata
		}
	}
	return nil
}

func (m *member) supports(protocol string) bool {
	return slices.ContainsFunc(m.protocols, func(p kmsg.JoinGroupRequestProtocol) bool { return p.Name == protocol })
}

// chooseProtocol is Kafka's vote: among the protocols every member
// supports, each member votes for the first of its own list; the most
// votes win (ties: the leader's preference, then the name). Joins only
// admit members that share a protocol with all others, so there is one.
func (g *group) chooseProtocol() string {
	var candidates []string
	for _, m := range g.sorted() {
		for _, p := range m.protocols {
			if !slices.Contains(candidates, p.Name) && g.supportedByAll(p.Name, nil) {
				candidates = append(candidates, p.Name)
			}
		}
	}
	votes := map[string]int{}
	for _, m := range g.members {
		for _, p := range m.protocols {
			if slices.Contains(candidates, p.Name) {
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, c := range candidates {
		if best == "" || votes[c] > votes[best] {
			best = c
		}
	}
	return best
}

// supportedByAll reports whether every member but except supports
// protocol.
func (g *group) supportedByAll(protocol string, except *member) bool {
	for _, m := range g.members {
		if m != except && !m.supports(protocol) {
			return false
		}
	}
	return true
}

// protocolsOK reports whether a join (by except, when it is a member
// already) fits the group: the same protocol type, and a protocol every
// other member supports.
func (g *group) protocolsOK(req *kmsg.JoinGroupRequest, except *member) bool {
	others := len(g.members)
	if except != nil {
		others--
	}
	if others == 0 {
		return true
	}
	if req.ProtocolType != g.protocolType {
		return false
	}
	for _, p := range req.Protocols {
		if g.supportedByAll(p.Name, except) {
			return true
		}
	}
	return false
}

func sameProtocols(a, b []kmsg.JoinGroupRequestProtocol) bool {
	return slices.EqualFunc(a, b, func(x, y kmsg.JoinGroupRequestProtocol) bool {
		return x.Name == y.Name && bytes.Equal(x.Metadata, y.Metadata)
	})
}

// newMemberID is Kafka's: the client id (or instance id) and a UUID.
func newMemberID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	if len(prefix) > 100 {
		prefix = prefix[:100]
	}
	return prefix + "-" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// kick starts work if there is etcd work to do; g.mu is held.
func (g *group) kick() {
	if g.working {
		return
	}
	g.working = true
	g.co.wg.Add(1)
	go g.work()
}

// work does the group's etcd work in the background (flush).
func (g *group) work() {
	defer g.co.wg.Done()
	if !g.flush(g.co.ctx, true) {
		g.mu.Lock()
		g.working = false // closing
		g.mu.Unlock()
	}
}

// flush does the group's etcd writes in order, one at a time: the meta
// of each generation, then the marker's release once the group is empty
// or dropped. Then a group with nothing left in memory is forgotten. The
// background worker (worker: it clears working when done) and DeleteGroups
// call it; false if ctx ended before it could start.
func (g *group) flush(ctx context.Context, worker bool) bool {
	if !g.lockHold(ctx) {
		return false
	}
	defer g.unlockHold()
	for {
		g.mu.Lock()
		hold, lease, gen := g.hold, g.lease, g.generation
		var ids []string
		var meta, release bool
		switch {
		case g.metaDue && hold != 0 && !g.dead:
			meta, g.metaDue = true, false
			for id := range g.members {
				ids = append(ids, id)
			}
		case hold != 0 && len(g.members) == 0 && (g.dead || g.state == groupEmpty):
			release, g.hold, g.lease, g.metaDue = true, 0, nil, false
		default:
			g.metaDue = false
			if worker {
				g.working = false
			}
			idle := !g.dead && !g.working && g.hold == 0 && len(g.members) == 0 && len(g.pending) == 0
			g.mu.Unlock()
			if idle {
				g.co.reap(g)
			}
			return true
		}
		g.mu.Unlock()
		switch {
		case meta:
			mctx, cancel := context.WithTimeout(ctx, etcdTimeout)
			err := g.co.s.d.Groups.KafkaRebalanced(mctx, g.name, hold, int64(gen), ids)
			cancel()
			if errors.Is(err, groups.ErrKafkaFenced) {
				g.co.s.log.Warn("kafka coordinator lost a group's marker; its members rejoin", "group", g.name, "err", err)
				g.co.forget(g)
				g.lostHold()
				g.drop(kerr.NotCoordinator.Code, false)
			} else if err != nil && ctx.Err() == nil {
				g.co.s.log.Warn("kafka coordinator: writing a group's generation failed", "group", g.name, "generation", gen, "err", err)
			}
		case release:
			if !g.release(ctx, lease, hold) && g.co.ctx.Err() == nil {
				// A request's deadline ended the release: the
				// worker takes it over.
				g.mu.Lock()
				if g.hold == 0 && len(g.members) == 0 {
					g.hold, g.lease = hold, lease
					g.kick()
				}
				g.mu.Unlock()
				return false
			}
		}
	}
}

// release deletes the marker taken at hold, retrying while etcd fails,
// until the lease is lost (the marker goes with it), the node closes (it
// revokes the lease) or ctx ends: false then, the marker is still there.
func (g *group) release(ctx context.Context, l *groups.KafkaLease, hold int64) bool {
	wait := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, etcdTimeout)
		err := l.Release(rctx, g.name, hold)
		cancel()
		if err == nil {
			return true
		}
		select {
		case <-l.Done():
			return true // the marker went with the lease
		default:
		}
		if attempt < 8 || attempt%20 == 0 {
			g.co.s.log.Warn("kafka coordinator: releasing a group's marker failed; retrying (no other node can take the group meanwhile)", "group", g.name, "attempt", attempt+1, "err", err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return false
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// reap forgets g if it is still idle: nothing of it is left in memory.
func (co *coordinator) reap(g *group) {
	co.mu.Lock()
	defer co.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if co.groups[g.name] != g || g.dead || g.working || g.hold != 0 || len(g.members) > 0 || len(g.pending) > 0 {
		return
	}
	g.dead, g.state = true, groupDead
	delete(co.groups, g.name)
}

// ensureHeld takes the group's marker in etcd if this node does not hold
// it yet.
func (g *group) ensureHeld(ctx context.Context) error {
	if !g.lockHold(ctx) {
		return fmt.Errorf("hold group %q: %w", g.name, ctx.Err())
	}
	defer g.unlockHold()
	g.mu.Lock()
	dead, held := g.dead, g.hold != 0
	g.mu.Unlock()
	if dead {
		return errGroupGone
	}
	if held {
		return nil
	}
	l, err := g.co.currentLease(ctx)
	if err != nil {
		return err
	}
	h, err := l.Hold(ctx, g.name)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-l.Done():
		return fmt.Errorf("hold group %q: %w: the coordinator's lease was lost", g.name, groups.ErrKafkaFenced)
	default:
	}
	if g.dead {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), etcdTimeout)
		_ = l.Release(rctx, g.name, h.Revision)
		cancel()
		return errGroupGone
	}
	g.hold, g.lease = h.Revision, l
	if gen := int32(min(h.Generation, 1<<31-2)); gen > g.generation {
		g.generation = gen
	}
	return nil
}

func (g *group) heldUnder(l *groups.KafkaLease) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lease == l
}

// lostHold records that the marker is gone (lease lost, fenced).
func (g *group) lostHold() {
	g.mu.Lock()
	g.hold, g.lease = 0, nil
	g.mu.Unlock()
}

// drop lets the group go: waiting requests are answered code, members
// forgotten (they find the coordinator again and rejoin) and the marker
// released (unless the node is closing: its lease is revoked instead).
func (g *group) drop(code int16, closing bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return
	}
	g.stopTimers()
	for _, m := range g.members {
		g.remove(m, code)
	}
	g.dead, g.state = true, groupDead
	g.pending = map[string]uint64{}
	if closing {
		g.hold, g.lease = 0, nil
	} else if g.hold != 0 {
		g.kick()
	}
}

// forgetIfIdle lets the group be forgotten if nothing of it is left in
// memory (a join that failed, one that only got a member id).
func (g *group) forgetIfIdle() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.dead && len(g.members) == 0 && len(g.pending) == 0 && g.hold == 0 {
		g.kick()
	}
}

// addPending records a member id handed out with MEMBER_ID_REQUIRED; it
// must rejoin with it within its session timeout.
func (g *group) addPending(id string, session time.Duration) {
	g.pendSeq++
	seq := g.pendSeq
	g.pending[id] = seq
	g.after(session, func() {
		if g.pending[id] != seq {
			return
		}
		delete(g.pending, id)
		if len(g.members) == 0 && len(g.pending) == 0 && g.hold == 0 {
			g.kick() // forgets the group
		}
	})
}

type joinStep int8

const (
	joinDone     joinStep = iota // resp is the answer
	joinWait                     // wait on the channel
	joinNeedHold                 // take the marker, then try again
	joinGone                     // the group was dropped: look it up again
)

// joinSpec is a JoinGroup's checked values.
type joinSpec struct {
	req       *kmsg.JoinGroupRequest
	clientID  string
	host      string
	session   time.Duration
	rebalance time.Duration
}

// join applies a JoinGroup to the group.
func (g *group) join(js joinSpec, resp *kmsg.JoinGroupResponse) (joinStep, *member, chan joinResult) {
	g.mu.Lock()
	defer g.mu.Unlock()
	req := js.req
	if g.dead {
		return joinGone, nil, nil
	}
	if !g.fits(req) {
		resp.ErrorCode = kerr.GroupMaxSizeReached.Code
		return joinDone, nil, nil
	}
	if req.MemberID == "" {
		if req.InstanceID != nil {
			if old, ok := g.static[*req.InstanceID]; ok && g.members[old] != nil {
				return g.replaceStatic(g.members[old], js, resp)
			}
		}
		if !g.protocolsOK(req, nil) {
			resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
			return joinDone, nil, nil
		}
		if len(g.members)+len(g.pending) >= maxGroupMembers {
			resp.ErrorCode = kerr.GroupMaxSizeReached.Code
			return joinDone, nil, nil
		}
		if req.Version >= 4 && req.InstanceID == nil {
			id := newMemberID(js.clientID)
			g.addPending(id, js.session)
			resp.MemberID = id
			resp.ErrorCode = kerr.MemberIDRequired.Code
			return joinDone, nil, nil
		}
		if g.hold == 0 {
			return joinNeedHold, nil, nil
		}
		prefix := js.clientID
		if req.InstanceID != nil {
			prefix = *req.InstanceID
		}
		return g.add(newMemberID(prefix), js)
	}
	if req.InstanceID != nil {
		if id, ok := g.static[*req.InstanceID]; !ok {
			if g.pending[req.MemberID] == 0 {
				resp.ErrorCode = kerr.UnknownMemberID.Code
				return joinDone, nil, nil
			}
		} else if id != req.MemberID {
			resp.ErrorCode = kerr.FencedInstanceID.Code
			return joinDone, nil, nil
		}
	}
	if _, ok := g.pending[req.MemberID]; ok {
		if !g.protocolsOK(req, nil) {
			resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
			return joinDone, nil, nil
		}
		if g.hold == 0 {
			return joinNeedHold, nil, nil
		}
		delete(g.pending, req.MemberID)
		return g.add(req.MemberID, js)
	}
	m := g.members[req.MemberID]
	if m == nil {
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return joinDone, nil, nil
	}
	if !g.protocolsOK(req, m) {
		resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		return joinDone, nil, nil
	}
	switch g.state {
	case groupCompleting, groupStable:
		// A member that did not see the join answer (or a follower that
		// rejoins unchanged) gets the current generation again.
		if sameProtocols(m.protocols, req.Protocols) && (g.state == groupCompleting || m.id != g.leader) {
			g.heartbeat(m)
			r := g.joinResult(m.id)
			if m.id == g.leader {
				for _, o := range g.sorted() {
					jm := kmsg.NewJoinGroupResponseMember()
					jm.MemberID, jm.InstanceID, jm.ProtocolMetadata = o.id, o.instance, o.metadataOf(g.protocol)
					r.members = append(r.members, jm)
				}
			}
			r.fill(resp)
			return joinDone, nil, nil
		}
	case groupPreparing:
	default:
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return joinDone, nil, nil
	}
	m.protocols, m.session, m.rebalance = req.Protocols, js.session, js.rebalance
	m.clientID, m.host = js.clientID, js.host
	ch := g.waitIn(m)
	g.rebalance()
	return joinWait, m, ch
}

// protocolBytes is the size of a member's protocols.
func protocolBytes(ps []kmsg.JoinGroupRequestProtocol) int {
	n := 0
	for _, p := range ps {
		n += len(p.Name) + len(p.Metadata)
	}
	return n
}

// fits reports whether the group's members' protocols stay within
// maxGroupProtocolBytes with req's (replacing those of the member it
// rejoins as); g.mu is held.
func (g *group) fits(req *kmsg.JoinGroupRequest) bool {
	n := protocolBytes(req.Protocols)
	for id, m := range g.members {
		if id != req.MemberID && (req.InstanceID == nil || m.instance == nil || *m.instance != *req.InstanceID) {
			n += protocolBytes(m.protocols)
		}
	}
	return n <= maxGroupProtocolBytes
}

// add makes id a member waiting in JoinGroup and (re)starts the
// rebalance; g.mu is held and the marker too.
func (g *group) add(id string, js joinSpec) (joinStep, *member, chan joinResult) {
	req := js.req
	g.order++
	m := &member{
		id: id, instance: req.InstanceID, clientID: js.clientID, host: js.host,
		protocols: req.Protocols, session: js.session, rebalance: js.rebalance, order: g.order,
	}
	if len(g.members) == 0 {
		g.protocolType = req.ProtocolType
	}
	g.members[id] = m
	if m.instance != nil {
		g.static[*m.instance] = id
	}
	ch := g.waitIn(m)
	g.rebalance()
	return joinWait, m, ch
}

// waitIn makes m wait in JoinGroup (a join it waited in already is told
// to rejoin); its session does not expire while it waits.
func (g *group) waitIn(m *member) chan joinResult {
	if m.join != nil {
		m.join <- joinResult{code: kerr.RebalanceInProgress.Code}
	} else {
		g.joining++
	}
	m.join = make(chan joinResult, 1)
	m.stopTimer()
	return m.join
}

// replaceStatic is a static member rejoining with an empty member id: it
// takes the place of the old member (fenced: FENCED_INSTANCE_ID) with a
// new id, and the group does not rebalance if it is stable and the
// member's protocols did not change (KIP-345).
func (g *group) replaceStatic(old *member, js joinSpec, resp *kmsg.JoinGroupResponse) (joinStep, *member, chan joinResult) {
	req := js.req
	if !g.protocolsOK(req, old) {
		resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		return joinDone, nil, nil
	}
	id := newMemberID(*req.InstanceID)
	m := &member{
		id: id, instance: req.InstanceID, clientID: js.clientID, host: js.host,
		protocols: req.Protocols, session: js.session, rebalance: js.rebalance, order: old.order,
		assignment: old.assignment, synced: old.synced,
	}
	unchanged := g.state == groupStable && sameProtocols(old.protocols, req.Protocols)
	g.remove(old, kerr.FencedInstanceID.Code)
	g.members[id] = m
	g.static[*req.InstanceID] = id
	if g.leader == old.id {
		g.leader = id
	}
	if unchanged {
		g.heartbeat(m)
		r := g.joinResult(id)
		if id == g.leader {
			// KIP-814: the leader keeps the assignment it made.
			r.skip = true
			for _, o := range g.sorted() {
				jm := kmsg.NewJoinGroupResponseMember()
				jm.MemberID, jm.InstanceID, jm.ProtocolMetadata = o.id, o.instance, o.metadataOf(g.protocol)
				r.members = append(r.members, jm)
			}
		}
		r.fill(resp)
		return joinDone, nil, nil
	}
	ch := g.waitIn(m)
	g.rebalance()
	return joinWait, m, ch
}

// abandonJoin ends m's wait in JoinGroup after its bound: the answer if it
// came meanwhile, else REBALANCE_IN_PROGRESS (the client joins again).
func (g *group) abandonJoin(m *member, ch chan joinResult) joinResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.join == ch {
		m.join = nil
		g.joining--
		if g.members[m.id] == m {
			g.heartbeat(m)
		}
		return joinResult{code: kerr.RebalanceInProgress.Code}
	}
	select {
	case r := <-ch:
		return r
	default:
		return joinResult{code: kerr.RebalanceInProgress.Code}
	}
}

func (g *group) abandonSync(m *member, ch chan syncResult) syncResult {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.sync == ch {
		m.sync = nil
		return syncResult{code: kerr.RebalanceInProgress.Code}
	}
	select {
	case r := <-ch:
		return r
	default:
		return syncResult{code: kerr.RebalanceInProgress.Code}
	}
}

// waitBound is how long a JoinGroup or SyncGroup may wait at most: the
// group's own timers answer it within the longest rebalance timeout; this
// bound only guards against a client waiting forever.
const waitBound = maxRebalanceTimeout + 5*time.Second

// groupCheck is the first check of every group request: the name, the
// principal's right to op on the group, and that this node coordinates
// it. It returns 0 or the error code and its reason.
func (c *conn) groupCheck(name string, op authz.Operation) (int16, error) {
	if err := groups.ValidateName(name); err != nil {
		return kerr.InvalidGroupID.Code, err
	}
	if !c.allowed(authz.Group, name, op) {
		return kerr.GroupAuthorizationFailed.Code, fmt.Errorf("principal %q may not %s group %q", c.id.Principal, op, name)
	}
	if !c.s.coord.coordinates(name) {
		return kerr.NotCoordinator.Code, fmt.Errorf("group %q is coordinated by node %s", name, c.s.coordinatorOf(name).node)
	}
	return 0, nil
}

// joinTopicsAllowed checks consume on the topics a consumer-protocol join
// subscribes to (as Varve's JoinGroup does); other protocols' metadata is
// opaque.
func (c *conn) joinTopicsAllowed(req *kmsg.JoinGroupRequest) bool {
	if c.s.d.Security == nil || c.id.Super || req.ProtocolType != "consumer" {
		return true
	}
	for _, p := range req.Protocols {
		var md kmsg.ConsumerMemberMetadata
		if md.ReadFrom(p.Metadata) != nil {
			continue
		}
		for _, t := range md.Topics {
			if !c.allowed(authz.Topic, t, authz.Consume) {
				return false
			}
		}
	}
	return true
}

func (c *conn) clientHost() string {
	host, _, err := net.SplitHostPort(c.remote)
	if err != nil {
		return "/" + c.remote
	}
	return "/" + host
}

func handleJoinGroup(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.JoinGroupRequest)
	resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation = -1
	resp.MemberID = req.MemberID
	if code, _ := c.groupCheck(req.Group, authz.Consume); code != 0 {
		resp.ErrorCode = code
		return resp, nil
	}
	js := joinSpec{req: req, clientID: c.clientID, host: c.clientHost(), session: time.Duration(req.SessionTimeoutMillis) * time.Millisecond}
	js.rebalance = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	if req.Version == 0 || js.rebalance <= 0 {
		js.rebalance = js.session
	}
	js.rebalance = min(js.rebalance, maxRebalanceTimeout)
	size := protocolBytes(req.Protocols)
	switch {
	case js.session < minSessionTimeout || js.session > maxSessionTimeout:
		resp.ErrorCode = kerr.InvalidSessionTimeout.Code
		return resp, nil
	case req.ProtocolType == "" || len(req.Protocols) == 0:
		resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
		return resp, nil
	case size > maxProtocolBytes || len(req.Protocols) > 64 || (req.InstanceID != nil && (*req.InstanceID == "" || len(*req.InstanceID) > 255)):
		resp.ErrorCode = kerr.InvalidRequest.Code
		return resp, nil
	case !c.joinTopicsAllowed(req):
		resp.ErrorCode = kerr.TopicAuthorizationFailed.Code
		return resp, nil
	}
	co := c.s.coord
	for range 4 {
		g, code := co.group(req.Group, true)
		if code != 0 {
			resp.ErrorCode = code
			return resp, nil
		}
		// A join that added nothing leaves no group behind.
		defer g.forgetIfIdle()
		step, m, ch := g.join(js, resp)
		switch step {
		case joinDone:
			return resp, nil
		case joinWait:
			t := time.NewTimer(waitBound)
			var r joinResult
			select {
			case r = <-ch:
			case <-t.C:
				r = g.abandonJoin(m, ch)
			case <-ctx.Done():
				r = g.abandonJoin(m, ch)
			}
			t.Stop()
			r.fill(resp)
			return resp, nil
		case joinNeedHold:
			hctx, cancel := context.WithTimeout(ctx, etcdTimeout)
			err := g.ensureHeld(hctx)
			cancel()
			switch {
			case err == nil, errors.Is(err, errGroupGone):
				continue
			case errors.Is(err, groups.ErrKafkaHeld):
				c.s.log.Info("kafka join waits for the group's previous coordinator to let it go", "group", req.Group, "err", err)
				resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
			case errors.Is(err, groups.ErrInconsistentStrategy):
				c.s.log.Info("kafka join refused", "group", req.Group, "client", c.clientID, "err", err)
				resp.ErrorCode = kerr.InconsistentGroupProtocol.Code
			default:
				c.s.log.Warn("kafka join: holding the group failed", "group", req.Group, "err", err)
				resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			}
			return resp, nil
		}
	}
	resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
	return resp, nil
}

// fenced checks a static member's instance id against its member id; g.mu
// is held.
func (g *group) fenced(instance *string, memberID string) int16 {
	if instance == nil {
		return 0
	}
	id, ok := g.static[*instance]
	switch {
	case !ok:
		return kerr.UnknownMemberID.Code
	case id != memberID:
		return kerr.FencedInstanceID.Code
	}
	return 0
}

func handleSyncGroup(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.SyncGroupRequest)
	resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
	if code, _ := c.groupCheck(req.Group, authz.Consume); code != 0 {
		resp.ErrorCode = code
		return resp, nil
	}
	g := c.s.coord.live(req.Group)
	if g == nil {
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil
	}
	m, ch, r := g.sync(req)
	if ch == nil {
		r.fill(resp)
		return resp, nil
	}
	t := time.NewTimer(waitBound)
	select {
	case r = <-ch:
	case <-t.C:
		r = g.abandonSync(m, ch)
	case <-ctx.Done():
		r = g.abandonSync(m, ch)
	}
	t.Stop()
	r.fill(resp)
	return resp, nil
}

// sync applies a SyncGroup: the answer, or a channel to wait on for it.
func (g *group) sync(req *kmsg.SyncGroupRequest) (*member, chan syncResult, syncResult) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return nil, nil, syncResult{code: kerr.NotCoordinator.Code}
	}
	if code := g.fenced(req.InstanceID, req.MemberID); code != 0 {
		return nil, nil, syncResult{code: code}
	}
	m := g.members[req.MemberID]
	switch {
	case m == nil:
		return nil, nil, syncResult{code: kerr.UnknownMemberID.Code}
	case req.Generation != g.generation:
		return nil, nil, syncResult{code: kerr.IllegalGeneration.Code}
	case req.ProtocolType != nil && *req.ProtocolType != g.protocolType, req.Protocol != nil && *req.Protocol != g.protocol:
		return nil, nil, syncResult{code: kerr.InconsistentGroupProtocol.Code}
	}
	switch g.state {
	case groupPreparing:
		return nil, nil, syncResult{code: kerr.RebalanceInProgress.Code}
	case groupStable:
		g.heartbeat(m)
		return nil, nil, g.syncResult(m)
	case groupCompleting:
	default:
		return nil, nil, syncResult{code: kerr.UnknownMemberID.Code}
	}
	g.heartbeat(m)
	m.synced = true
	if m.sync != nil {
		m.sync <- syncResult{code: kerr.RebalanceInProgress.Code}
	}
	ch := make(chan syncResult, 1)
	m.sync = ch
	if m.id == g.leader {
		for _, o := range g.members {
			o.assignment = nil
		}
		for _, a := range req.GroupAssignment {
			if o := g.members[a.MemberID]; o != nil {
				o.assignment = a.MemberAssignment
			}
		}
		g.stopTimers()
		g.state = groupStable
		for _, o := range g.members {
			if o.sync != nil {
				o.sync <- g.syncResult(o)
				o.sync = nil
			}
		}
	}
	return m, ch, syncResult{}
}

// emptyConsumerAssignment is what a consumer-protocol member the leader
// assigned nothing gets: an encoded empty assignment, since some clients
// fail to decode no bytes (as kfake does).
var emptyConsumerAssignment = new(kmsg.ConsumerMemberAssignment).AppendTo(nil)

func (g *group) syncResult(m *member) syncResult {
	a := m.assignment
	if len(a) == 0 && g.protocolType == "consumer" {
		a = emptyConsumerAssignment
	}
	return syncResult{protocolType: g.protocolType, protocol: g.protocol, assignment: a}
}

func handleHeartbeat(_ context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.HeartbeatRequest)
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	if code, _ := c.groupCheck(req.Group, authz.Consume); code != 0 {
		resp.ErrorCode = code
		return resp, nil
	}
	g := c.s.coord.live(req.Group)
	if g == nil {
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp, nil
	}
	resp.ErrorCode = g.heartbeatReq(req)
	return resp, nil
}

func (g *group) heartbeatReq(req *kmsg.HeartbeatRequest) int16 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return kerr.NotCoordinator.Code
	}
	if code := g.fenced(req.InstanceID, req.MemberID); code != 0 {
		return code
	}
	m := g.members[req.MemberID]
	switch {
	case m == nil:
		return kerr.UnknownMemberID.Code
	case g.state == groupPreparing:
		if m.join == nil {
			g.heartbeat(m)
		}
		return kerr.RebalanceInProgress.Code
	case req.Generation != g.generation:
		return kerr.IllegalGeneration.Code
	case g.state == groupCompleting, g.state == groupStable:
		g.heartbeat(m)
		return 0
	}
	return kerr.UnknownMemberID.Code
}

func handleLeaveGroup(_ context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.LeaveGroupRequest)
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	leaving := req.Members
	if req.Version < 3 {
		leaving = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}
	for _, lm := range leaving {
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID, rm.InstanceID = lm.MemberID, lm.InstanceID
		resp.Members = append(resp.Members, rm)
	}
	code, _ := c.groupCheck(req.Group, authz.Consume)
	if code == 0 {
		if g := c.s.coord.live(req.Group); g != nil {
			code = g.leave(leaving, resp.Members)
		} else {
			for i := range resp.Members {
				resp.Members[i].ErrorCode = kerr.UnknownMemberID.Code
			}
		}
	}
	resp.ErrorCode = code
	if req.Version < 3 {
		if code == 0 {
			resp.ErrorCode = resp.Members[0].ErrorCode
		}
		resp.Members = nil
	}
	return resp, nil
}

// leave removes members (by member id, or instance id for static ones)
// and rebalances; out gets each one's error code.
func (g *group) leave(leaving []kmsg.LeaveGroupRequestMember, out []kmsg.LeaveGroupResponseMember) int16 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dead {
		return kerr.NotCoordinator.Code
	}
	changed := false
	for i, lm := range leaving {
		id := lm.MemberID
		if lm.InstanceID != nil {
			known, ok := g.static[*lm.InstanceID]
			switch {
			case !ok:
				out[i].ErrorCode = kerr.UnknownMemberID.Code
				continue
			case id != "" && id != known:
				out[i].ErrorCode = kerr.FencedInstanceID.Code
				continue
			}
			id, out[i].MemberID = known, known
		}
		if m := g.members[id]; m != nil {
			g.remove(m, kerr.UnknownMemberID.Code)
			changed = true
			continue
		}
		if _, ok := g.pending[id]; ok {
			delete(g.pending, id)
			continue
		}
		out[i].ErrorCode = kerr.UnknownMemberID.Code
	}
	if changed {
		g.rebalance()
	}
	return 0
}
