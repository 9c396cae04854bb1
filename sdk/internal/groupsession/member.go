package groupsession

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/apierr"
	"github.com/varve-io/varve/sdk/internal/backoff"
)

// TopicPartition names one partition of a topic (sdk.TopicPartition has
// the same fields, so the two convert).
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Reader reads the assigned partitions of one topic (sdk.Consumer).
type Reader[R any] interface {
	Assign(partitions ...int32)
	Seek(partition int32, offset int64)
	Position(partition int32) int64
	Poll(ctx context.Context) ([]R, error)
	Close()
}

// Options configures a Member; package sdk fills them from GroupOptions,
// defaults applied.
type Options[R any] struct {
	Group  string
	Groups varvev1connect.GroupServiceClient
	Topics []string
	// Strategy, SessionTimeoutMs and ClientID go into JoinGroup as they are.
	Strategy         string
	SessionTimeoutMs int32
	ClientID         string
	// SessionTimeout bounds the removal of a stale member id (0: the
	// cluster's default of 10 s).
	SessionTimeout time.Duration
	// AutoCommitInterval > 0 commits positions that often; otherwise only
	// Commit and CommitOffsets commit.
	AutoCommitInterval time.Duration
	// MaxWait is how long Poll waits without assigned partitions.
	MaxWait time.Duration
	// StartOffset is where a partition the group never committed starts
	// (sdk.OffsetEarliest or sdk.OffsetLatest).
	StartOffset int64
	// NewReader returns the reader of a topic, once per topic.
	NewReader func(topic string) Reader[R]
	// OnAssigned and OnRevoked are GroupOptions' callbacks; OnError
	// receives the errors Poll does not return.
	OnAssigned func(ctx context.Context, parts []TopicPartition)
	OnRevoked  func(ctx context.Context, parts []TopicPartition)
	OnError    func(error)
	// CtxError gives the error of a done context its Connect code.
	CtxError func(error) error
	Log      *slog.Logger
}

// New returns a member of opts.Group. It does no I/O: the first Poll joins
// the group. Close it to leave.
func New[R any](opts Options[R]) *Member[R] {
	ctx, cancel := context.WithCancel(context.Background())
	return &Member[R]{
		group: opts.Group, opts: opts,
		groups: opts.Groups,
		ctx:    ctx, cancel: cancel,
		consumers: map[string]Reader[R]{},
		assigned:  map[TopicPartition]bool{},
		committed: map[TopicPartition]int64{},
		changed:   make(chan struct{}),
	}
}

// Member is one member of a consumer group: it reads the partitions the
// group assigns it and commits its progress in the group. Membership is a
// JoinGroup stream to the cluster plus heartbeats; each new generation (a
// member joined, left or died) arrives down the stream and is applied by
// the next Poll, which calls OnRevoked and OnAssigned. Reading uses one
// Reader per topic.
//
// Poll, Commit, CommitOffsets, Assignment and Close must be called from one
// goroutine (the callbacks run on it too); Generation may be called from
// any.
type Member[R any] struct {
	group  string
	opts   Options[R]
	groups varvev1connect.GroupServiceClient

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	consumers map[string]Reader[R]     // per topic; used by Poll's goroutine
	assigned  map[TopicPartition]bool  // applied assignment
	committed map[TopicPartition]int64 // last offsets committed by this member
	lastAuto  time.Time

	mu       sync.Mutex
	started  bool
	closed   bool
	member   string // of the applied generation
	gen      int64
	pending  *varvev1.JoinGroupResponse // newest generation not applied yet
	lost     bool                       // the session ended: drop everything
	changed  chan struct{}              // closed and replaced when pending/lost/fatal change
	fatal    error                      // the session cannot go on
	sessStop context.CancelFunc         // ends the current stream (rejoin)
}

// Subscribe sets the topics before the first Poll; afterwards it leaves and
// joins again with the new topics.
func (g *Member[R]) Subscribe(topics ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.opts.Topics = slices.Clone(topics)
	if g.sessStop != nil {
		g.sessStop()
	}
}

// Group returns the group's name.
func (g *Member[R]) Group() string { return g.group }

// Generation returns the member id and generation the member commits
// under ("" and 0 before the first assignment): the applied assignment's,
// or a newer one's adopted by awaitNewerGeneration before the next Poll
// applies its assignment.
func (g *Member[R]) Generation() (member string, generation int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.member, g.gen
}

// Assignment returns the partitions the member reads, sorted.
func (g *Member[R]) Assignment() []TopicPartition {
	out := slices.Collect(maps.Keys(g.assigned))
	sortTPs(out)
	return out
}

func sortTPs(tps []TopicPartition) {
	slices.SortFunc(tps, func(a, b TopicPartition) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	})
}

func (g *Member[R]) signalLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// Poll returns the next records of the member's partitions. The first call
// joins the group and waits for an assignment. Each call first applies a
// new generation if one arrived (OnRevoked, commits, OnAssigned) and
// auto-commits when due. It returns with no records after MaxWait when
// nothing arrived, or early when a rebalance comes in.
func (g *Member[R]) Poll(ctx context.Context) ([]R, error) {
	if err := g.start(); err != nil {
		return nil, err
	}
	for {
		g.mu.Lock()
		pending, lost, fatal, changed, gen := g.pending, g.lost, g.fatal, g.changed, g.gen
		g.mu.Unlock()
		if fatal != nil {
			return nil, fatal
		}
		if pending != nil || lost {
			g.apply(ctx)
			continue
		}
		if gen > 0 {
			break
		}
		select { // not joined yet
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("poll group %s: %w", g.group, g.opts.CtxError(ctx.Err()))
		}
	}
	if g.opts.AutoCommitInterval > 0 && time.Since(g.lastAuto) >= g.opts.AutoCommitInterval {
		g.lastAuto = time.Now()
		if err := g.Commit(ctx); err != nil {
			g.report(err)
		}
	}
	return g.pollRecords(ctx)
}

// pollRecords polls the topics with assigned partitions concurrently until
// one brings records, MaxWait passes, or a rebalance arrives.
func (g *Member[R]) pollRecords(ctx context.Context) ([]R, error) {
	g.mu.Lock()
	changed := g.changed
	g.mu.Unlock()
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-changed:
			cancel()
		case <-pctx.Done():
		}
	}()
	var topics []string
	for tp := range g.assigned {
		if !slices.Contains(topics, tp.Topic) {
			topics = append(topics, tp.Topic)
		}
	}
	if len(topics) == 0 {
		t := time.NewTimer(g.opts.MaxWait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-pctx.Done():
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("poll group %s: %w", g.group, g.opts.CtxError(ctx.Err()))
		}
		return nil, nil
	}
	type result struct {
		recs []R
		err  error
	}
	results := make(chan result, len(topics))
	for _, t := range topics {
		cons := g.consumers[t]
		go func() {
			recs, err := cons.Poll(pctx)
			if len(recs) > 0 || err != nil {
				cancel() // return what we have
			}
			results <- result{recs, err}
		}()
	}
	var recs []R
	var firstErr error
	for range topics {
		r := <-results
		recs = append(recs, r.recs...)
		// A poll we cut short (records elsewhere, a rebalance) is no error.
		cut := pctx.Err() != nil && errors.Is(r.err, context.Canceled)
		if r.err != nil && !cut && firstErr == nil {
			firstErr = r.err
		}
	}
	if ctx.Err() != nil && len(recs) == 0 {
		return nil, fmt.Errorf("poll group %s: %w", g.group, g.opts.CtxError(ctx.Err()))
	}
	return recs, firstErr
}

// apply moves to the newest generation: it commits and revokes what the
// member loses, then positions and announces what it gains. After a lost
// session every partition is revoked without a commit (another member may
// have read and committed it since) and the old member id is left; a
// generation of the new session that came meanwhile is then taken as a
// fresh assignment, positioned at the committed offsets.
func (g *Member[R]) apply(ctx context.Context) {
	g.mu.Lock()
	msg, lost, prev := g.pending, g.lost, g.member
	g.pending, g.lost = nil, false
	g.mu.Unlock()
	next := map[TopicPartition]bool{}
	if msg != nil {
		for _, tp := range msg.GetAssignment() {
			for _, p := range tp.GetPartitions() {
				next[TopicPartition{tp.GetTopic(), p}] = true
			}
		}
	}
	var revoked, added []TopicPartition
	for tp := range g.assigned {
		if lost || !next[tp] {
			revoked = append(revoked, tp)
		}
	}
	for tp := range next {
		if lost || !g.assigned[tp] {
			added = append(added, tp)
		}
	}
	sortTPs(revoked)
	sortTPs(added)
	if len(revoked)+len(added) > 0 {
		g.opts.Log.Info("group assignment changed", "group", g.group, "generation", msg.GetGeneration(), "added", len(added), "revoked", len(revoked), "lost", lost)
	}
	g.mu.Lock()
	switch {
	case msg != nil:
		// Revoked partitions may still be committed in the new generation.
		g.member, g.gen = msg.GetMemberId(), msg.GetGeneration()
	case lost:
		g.member, g.gen = "", 0
	}
	g.mu.Unlock()
	if len(revoked) > 0 {
		if g.opts.AutoCommitInterval > 0 && !lost {
			if err := g.commitPositions(ctx, revoked); err != nil {
				g.report(err)
			}
		}
		if g.opts.OnRevoked != nil {
			g.opts.OnRevoked(ctx, revoked)
		}
		for _, tp := range revoked {
			delete(g.assigned, tp)
			delete(g.committed, tp)
		}
	}
	if lost && prev != "" && prev != msg.GetMemberId() {
		g.leaveStale(prev)
	}
	if len(added) > 0 {
		offs, err := g.fetchCommitted(ctx, added)
		if err != nil {
			g.report(err)
		}
		for _, tp := range added {
			g.assigned[tp] = true
			cons := g.reader(tp.Topic)
			if o, ok := offs[tp]; ok {
				cons.Seek(tp.Partition, o)
				g.committed[tp] = o
			} else {
				cons.Seek(tp.Partition, g.opts.StartOffset)
			}
		}
	}
	// Hand each topic's consumer its partitions.
	byTopic := map[string][]int32{}
	for tp := range g.assigned {
		byTopic[tp.Topic] = append(byTopic[tp.Topic], tp.Partition)
	}
	for t, cons := range g.consumers {
		cons.Assign(byTopic[t]...) // none: not polled
	}
	if len(added) > 0 && g.opts.OnAssigned != nil {
		g.opts.OnAssigned(ctx, added)
	}
}

// leaveStale removes, in the background, the member id of a session that
// ended without leaving (its stream broke because its node died, so nobody
// revoked its lease): the member has just revoked its partitions and joins
// again under a new id, and the group rebalances now instead of keeping
// the old id's partitions idle until its session times out. It gives up
// after the session timeout, when the id is gone anyway.
func (g *Member[R]) leaveStale(member string) {
	timeout := g.opts.SessionTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		ctx, cancel := context.WithTimeout(g.ctx, timeout)
		defer cancel()
		retry := backoff.Default()
		for attempt := 0; ; attempt++ {
			_, err := g.groups.LeaveGroup(ctx, connect.NewRequest(&varvev1.LeaveGroupRequest{Group: g.group, MemberId: member}))
			if err == nil || apierr.ReasonOf(err) == apierr.UnknownMember || ctx.Err() != nil {
				return
			}
			if !backoff.Retriable(err) {
				g.report(fmt.Errorf("leave group %s as stale member %s: %w", g.group, member, err))
				return
			}
			if backoff.Sleep(ctx, retry.Delay(err, min(attempt, retry.Retries))) != nil {
				return
			}
		}
	}()
}

func (g *Member[R]) reader(topic string) Reader[R] {
	cons := g.consumers[topic]
	if cons == nil {
		cons = g.opts.NewReader(topic)
		g.consumers[topic] = cons
	}
	return cons
}

func (g *Member[R]) report(err error) {
	if g.opts.OnError != nil && err != nil {
		g.opts.OnError(err)
	}
}

func (g *Member[R]) fetchCommitted(ctx context.Context, tps []TopicPartition) (map[TopicPartition]int64, error) {
	byTopic := map[string][]int32{}
	for _, tp := range tps {
		byTopic[tp.Topic] = append(byTopic[tp.Topic], tp.Partition)
	}
	req := &varvev1.FetchCommittedRequest{Group: g.group}
	for t, ps := range byTopic {
		req.Partitions = append(req.Partitions, &varvev1.TopicPartitions{Topic: t, Partitions: ps})
	}
	res, err := g.groups.FetchCommitted(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, fmt.Errorf("fetch committed offsets of group %s: %w", g.group, err)
	}
	out := map[TopicPartition]int64{}
	for _, o := range res.Msg.GetOffsets() {
		out[TopicPartition{o.GetTopic(), o.GetPartition()}] = o.GetOffset()
	}
	return out, nil
}

// Commit commits the position (the offset after the last record Poll
// returned) of every assigned partition that moved since its last commit.
// It fails with connect.CodeFailedPrecondition when the member was fenced
// (its generation is stale or it is no longer in the group).
func (g *Member[R]) Commit(ctx context.Context) error {
	return g.commitPositions(ctx, g.Assignment())
}

func (g *Member[R]) commitPositions(ctx context.Context, tps []TopicPartition) error {
	offs := map[TopicPartition]int64{}
	for _, tp := range tps {
		cons := g.consumers[tp.Topic]
		if cons == nil {
			continue
		}
		if pos := cons.Position(tp.Partition); pos >= 0 {
			offs[tp] = pos
		}
	}
	return g.CommitOffsets(ctx, offs)
}

// CommitOffsets commits offs (the offsets after the last records
// processed), skipping those not past the last commit of this member.
func (g *Member[R]) CommitOffsets(ctx context.Context, offs map[TopicPartition]int64) error {
	g.mu.Lock()
	member, gen := g.member, g.gen
	g.mu.Unlock()
	req := &varvev1.CommitOffsetsRequest{Group: g.group, MemberId: member, Generation: gen}
	for tp, o := range offs {
		if c, ok := g.committed[tp]; ok && o <= c {
			continue
		}
		req.Offsets = append(req.Offsets, &varvev1.OffsetCommit{Topic: tp.Topic, Partition: tp.Partition, Offset: o})
	}
	if len(req.Offsets) == 0 {
		return nil
	}
	if member == "" {
		return fmt.Errorf("commit to group %s: %w", g.group,
			connect.NewError(connect.CodeFailedPrecondition, errors.New("not a member of the group (joining or rejoining)")))
	}
	for attempt := 0; ; attempt++ {
		_, err := g.groups.CommitOffsets(ctx, connect.NewRequest(req))
		if err == nil {
			break
		}
		// A rebalance is under way: the partitions are still ours (kept or
		// revoked) in the next generation, which is on its way down the
		// stream.
		if apierr.ReasonOf(err) != apierr.StaleGeneration || attempt >= 2 || !g.awaitNewerGeneration(ctx) {
			return fmt.Errorf("commit %d offsets to group %s in generation %d: %w", len(req.Offsets), g.group, gen, err)
		}
		g.mu.Lock()
		req.MemberId, req.Generation, gen = g.member, g.gen, g.gen
		g.mu.Unlock()
	}
	for _, o := range req.Offsets {
		g.committed[TopicPartition{o.GetTopic(), o.GetPartition()}] = o.GetOffset()
	}
	return nil
}

// Close commits (with auto-commit), revokes every partition (OnRevoked),
// leaves the group and stops fetching. The group rebalances at once.
func (g *Member[R]) Close(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	started := g.started
	g.mu.Unlock()
	var err error
	if started {
		all := g.Assignment()
		if len(all) > 0 {
			if g.opts.AutoCommitInterval > 0 {
				err = g.commitPositions(ctx, all)
			}
			if g.opts.OnRevoked != nil {
				g.opts.OnRevoked(ctx, all)
			}
		}
	}
	g.mu.Lock()
	member := g.member
	g.mu.Unlock()
	if member != "" {
		// Leave now, so that the group has rebalanced when Close returns
		// (closing the stream alone leaves too, a moment later).
		if _, lerr := g.groups.LeaveGroup(ctx, connect.NewRequest(&varvev1.LeaveGroupRequest{Group: g.group, MemberId: member})); lerr != nil && apierr.ReasonOf(lerr) != apierr.UnknownMember {
			err = errors.Join(err, fmt.Errorf("leave group %s: %w", g.group, lerr))
		}
	}
	g.cancel()
	g.wg.Wait()
	for _, cons := range g.consumers {
		cons.Close()
	}
	return err
}

// awaitNewerGeneration waits (up to a few seconds) for a generation newer
// than the applied one to arrive and adopts its member id and generation
// for commits, without applying its assignment.
func (g *Member[R]) awaitNewerGeneration(ctx context.Context) bool {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		g.mu.Lock()
		p, ch := g.pending, g.changed
		if p != nil && p.GetGeneration() > g.gen {
			g.member, g.gen = p.GetMemberId(), p.GetGeneration()
			g.mu.Unlock()
			return true
		}
		g.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (g *Member[R]) start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fmt.Errorf("poll group %s: consumer closed", g.group)
	}
	if g.started {
		return nil
	}
	if len(g.opts.Topics) == 0 {
		return fmt.Errorf("poll group %s: %w", g.group,
			connect.NewError(connect.CodeInvalidArgument, errors.New("no topics: set GroupOptions.Topics or call Subscribe")))
	}
	g.started = true
	g.wg.Add(1)
	go g.session()
	return nil
}

// session keeps the member in the group: it holds a JoinGroup stream,
// heartbeats, and joins again (as a new member) when the stream breaks.
func (g *Member[R]) session() {
	defer g.wg.Done()
	retry := backoff.Default()
	attempt := 0
	for g.ctx.Err() == nil {
		got, err := g.sessionOnce()
		if g.ctx.Err() != nil {
			return
		}
		g.mu.Lock()
		unapplied := ""
		if g.gen > 0 || g.pending != nil {
			if g.pending != nil && g.pending.GetMemberId() != g.member {
				// The stream broke before Poll took its first generation:
				// apply leaves g.member only, so this id is left here.
				unapplied = g.pending.GetMemberId()
			}
			g.lost, g.pending = true, nil
			g.signalLocked()
		}
		g.mu.Unlock()
		if unapplied != "" {
			g.leaveStale(unapplied)
		}
		if got {
			attempt = 0
		}
		if joinRefused(err) {
			g.mu.Lock()
			g.fatal = fmt.Errorf("join group %s: %w", g.group, err)
			g.signalLocked()
			g.mu.Unlock()
			return
		}
		if err != nil {
			g.report(fmt.Errorf("group %s session ended, joining again: %w", g.group, err))
		}
		if backoff.Sleep(g.ctx, retry.Delay(err, min(attempt, retry.Retries))) != nil {
			return
		}
		attempt++
	}
}

// joinRefused reports whether a session ended because the cluster refused
// the member (bad group or topics, another strategy, no permission): that
// ends the Member. Anything else is retried by joining again,
// including a stream cut when its node dies (connect reports the broken
// body as Internal "incomplete envelope" or Unknown EOF, not Unavailable)
// and a member the cluster no longer knows (UNKNOWN_MEMBER).
func joinRefused(err error) bool {
	if err == nil || backoff.Retriable(err) || apierr.ReasonOf(err) == apierr.UnknownMember {
		return false
	}
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeNotFound, connect.CodeFailedPrecondition,
		connect.CodePermissionDenied, connect.CodeUnauthenticated, connect.CodeUnimplemented,
		connect.CodeAlreadyExists, connect.CodeOutOfRange:
		return true
	}
	return false
}

// sessionOnce runs one JoinGroup stream and its heartbeats.
func (g *Member[R]) sessionOnce() (got bool, err error) {
	sctx, stop := context.WithCancel(g.ctx)
	defer stop()
	g.mu.Lock()
	g.sessStop = stop
	req := &varvev1.JoinGroupRequest{
		Group: g.group, Topics: g.opts.Topics, Strategy: g.opts.Strategy,
		SessionTimeoutMs: g.opts.SessionTimeoutMs, ClientId: g.opts.ClientID,
	}
	g.mu.Unlock()
	stream, err := g.groups.JoinGroup(sctx, connect.NewRequest(req))
	if err != nil {
		return false, err
	}
	defer stream.Close()
	var hbErr error
	var hbOnce sync.Once
	var hbWG sync.WaitGroup
	defer hbWG.Wait()
	defer stop()
	for stream.Receive() {
		m := stream.Msg()
		got = true
		hbOnce.Do(func() {
			hbWG.Add(1)
			go func() {
				defer hbWG.Done()
				hbErr = g.heartbeat(sctx, m.GetMemberId(), time.Duration(m.GetHeartbeatIntervalMs())*time.Millisecond)
				stop()
			}()
		})
		g.mu.Lock()
		g.pending = m
		g.signalLocked()
		g.mu.Unlock()
	}
	err = stream.Err()
	stop()
	hbWG.Wait()
	if hbErr != nil && !errors.Is(hbErr, context.Canceled) {
		err = hbErr
	}
	if err == nil {
		err = connect.NewError(connect.CodeUnavailable, errors.New("group session stream ended"))
	}
	return got, err
}

// heartbeat renews the member's session every interval until ctx ends or
// the cluster says the member is gone.
func (g *Member[R]) heartbeat(ctx context.Context, member string, every time.Duration) error {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		g.mu.Lock()
		gen := g.gen
		g.mu.Unlock()
		hctx, cancel := context.WithTimeout(ctx, every)
		_, err := g.groups.Heartbeat(hctx, connect.NewRequest(&varvev1.HeartbeatRequest{Group: g.group, MemberId: member, Generation: gen}))
		cancel()
		if err != nil && ctx.Err() == nil {
			if apierr.ReasonOf(err) == apierr.UnknownMember {
				return fmt.Errorf("heartbeat in group %s: %w", g.group, err)
			}
			g.report(fmt.Errorf("heartbeat in group %s: %w", g.group, err))
		}
	}
}
