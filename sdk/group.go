package sdk

import (
	"context"
	"time"

	"github.com/varve-io/varve/internal/apierr"
	"github.com/varve-io/varve/sdk/internal/groupsession"
)

// DefaultAutoCommitInterval is how often a GroupConsumer commits its
// positions unless told otherwise.
const DefaultAutoCommitInterval = 5 * time.Second

// Assignment strategies of consumer groups.
const (
	// StrategySticky (the default) keeps each member's partitions across
	// rebalances where it can, balances the counts and moves as few
	// partitions as possible.
	StrategySticky = "sticky"
	// StrategyRange gives each member a contiguous range of each topic, as
	// Kafka's range assignor.
	StrategyRange = "range"
)

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// GroupOptions configures a GroupConsumer. Zero fields take the defaults.
type GroupOptions struct {
	// Topics to subscribe to (or call Subscribe before the first Poll).
	Topics []string
	// Strategy is StrategySticky (default) or StrategyRange. Every member
	// of a group must use the same.
	Strategy string
	// AutoCommitInterval is how often Poll commits the positions of the
	// records it returned before (at least once: a record is committed only
	// after the Poll that follows the one that returned it). 0 means 5 s; a
	// negative value turns auto-commit off: call Commit or CommitRecords.
	AutoCommitInterval time.Duration
	// SessionTimeout is how long the cluster keeps a member that stopped
	// heartbeating (a frozen or cut-off process); 0 means the cluster's
	// default of 10 s. A process that exits leaves at once.
	SessionTimeout time.Duration
	// FromLatest starts partitions the group never committed at their end
	// instead of their log start.
	FromLatest bool
	// ClientID labels the member in DescribeGroup.
	ClientID string
	// MaxWait and MaxBytes are those of the underlying fetches
	// (ConsumerOptions).
	MaxWait  time.Duration
	MaxBytes int32
	// OnAssigned is called from Poll with partitions the member gained,
	// after their positions are set to the committed offsets.
	OnAssigned func(ctx context.Context, gc *GroupConsumer, parts []TopicPartition)
	// OnRevoked is called from Poll (or Close) with partitions the member is
	// losing, before it stops reading them: commit there (gc.Commit) to
	// hand over exactly. With auto-commit the positions are committed just
	// before. When the membership itself was lost (session expired) the
	// commits fail with connect.CodeFailedPrecondition.
	OnRevoked func(ctx context.Context, gc *GroupConsumer, parts []TopicPartition)
	// OnError receives errors Poll does not return: failed auto-commits
	// and session failures that are retried.
	OnError func(error)
}

// GroupConsumer reads the partitions a consumer group assigns it and
// commits its progress in the group. Membership is a JoinGroup stream to
// the cluster plus heartbeats; each new generation (a member joined, left
// or died) arrives down the stream and is applied by the next Poll, which
// calls OnRevoked and OnAssigned. Reading reuses Consumer (one per topic).
//
// Poll, Commit, CommitRecords, Assignment and Close must be called from one
// goroutine (the callbacks run on it too); Generation may be called from
// any.
type GroupConsumer struct {
	m *groupsession.Member[Record]
}

// NewGroupConsumer returns a consumer in group. It does no I/O: the first
// Poll joins the group. Close it to leave.
func (c *Client) NewGroupConsumer(group string, opts GroupOptions) *GroupConsumer {
	if opts.AutoCommitInterval == 0 {
		opts.AutoCommitInterval = DefaultAutoCommitInterval
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	// A committed offset out of range resets as a partition the group
	// never committed starts (Kafka: auto.offset.reset serves both).
	start, reset := OffsetEarliest, OffsetResetEarliest
	if opts.FromLatest {
		start, reset = OffsetLatest, OffsetResetLatest
	}
	g := &GroupConsumer{}
	so := groupsession.Options[Record]{
		Group: group, Groups: c.groups, Topics: opts.Topics,
		Strategy: opts.Strategy, SessionTimeoutMs: durationMs(opts.SessionTimeout), ClientID: opts.ClientID,
		SessionTimeout: opts.SessionTimeout, AutoCommitInterval: opts.AutoCommitInterval, MaxWait: opts.MaxWait,
		StartOffset: start,
		NewReader: func(topic string) groupsession.Reader[Record] {
			return c.NewConsumer(topic, ConsumerOptions{MaxWait: opts.MaxWait, MaxBytes: opts.MaxBytes, OffsetReset: reset})
		},
		OnError: opts.OnError, CtxError: ctxError, Log: c.log,
	}
	if opts.OnAssigned != nil {
		so.OnAssigned = func(ctx context.Context, parts []groupsession.TopicPartition) {
			opts.OnAssigned(ctx, g, fromSession(parts))
		}
	}
	if opts.OnRevoked != nil {
		so.OnRevoked = func(ctx context.Context, parts []groupsession.TopicPartition) {
			opts.OnRevoked(ctx, g, fromSession(parts))
		}
	}
	g.m = groupsession.New(so)
	return g
}

func fromSession(tps []groupsession.TopicPartition) []TopicPartition {
	out := make([]TopicPartition, len(tps))
	for i, tp := range tps {
		out[i] = TopicPartition(tp)
	}
	return out
}

// Subscribe sets the topics before the first Poll; afterwards it leaves and
// joins again with the new topics.
func (g *GroupConsumer) Subscribe(topics ...string) { g.m.Subscribe(topics...) }

// Group returns the group's name.
func (g *GroupConsumer) Group() string { return g.m.Group() }

// Generation returns the member id and generation the member commits
// under ("" and 0 before the first assignment): the applied assignment's,
// or a newer one's that the member adopted for a commit refused as stale
// before its next Poll applies that assignment.
func (g *GroupConsumer) Generation() (member string, generation int64) { return g.m.Generation() }

// Assignment returns the partitions the member reads, sorted.
func (g *GroupConsumer) Assignment() []TopicPartition { return fromSession(g.m.Assignment()) }

// Poll returns the next records of the member's partitions. The first call
// joins the group and waits for an assignment. Each call first applies a
// new generation if one arrived (OnRevoked, commits, OnAssigned) and
// auto-commits when due. It returns with no records after MaxWait when
// nothing arrived, or early when a rebalance comes in.
func (g *GroupConsumer) Poll(ctx context.Context) ([]Record, error) { return g.m.Poll(ctx) }

// Commit commits the position (the offset after the last record Poll
// returned) of every assigned partition that moved since its last commit.
// It fails with connect.CodeFailedPrecondition when the member was fenced
// (its generation is stale or it is no longer in the group).
func (g *GroupConsumer) Commit(ctx context.Context) error { return g.m.Commit(ctx) }

// CommitRecords commits, for each partition of recs, the offset after its
// last record in recs: at least once, record by record.
func (g *GroupConsumer) CommitRecords(ctx context.Context, recs ...Record) error {
	offs := map[groupsession.TopicPartition]int64{}
	for _, r := range recs {
		tp := groupsession.TopicPartition{Topic: r.Topic, Partition: r.Partition}
		offs[tp] = max(offs[tp], r.Offset+1)
	}
	return g.m.CommitOffsets(ctx, offs)
}

// Close commits (with auto-commit), revokes every partition (OnRevoked),
// leaves the group and stops fetching. The group rebalances at once.
func (g *GroupConsumer) Close(ctx context.Context) error { return g.m.Close(ctx) }

// GroupReason returns the reason of a consumer-group error from the
// cluster: UNKNOWN_MEMBER (the member's session ended: join again),
// STALE_GENERATION (a rebalance is under way), NOT_ASSIGNED, GROUP_ACTIVE,
// OFFSET_REGRESS, INCONSISTENT_STRATEGY or GROUP_NOT_FOUND; "" otherwise.
func GroupReason(err error) string { return apierr.ReasonOf(err) }
