package groups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// Kafka consumer groups (the classic protocol, package kafka) keep their
// members in the memory of one node, the group's coordinator. What must
// outlive that node is here: the committed offsets (the keys Varve's own
// groups use, so a group is one group whichever protocol commits) and a
// marker member, groups/<g>/members/kafka, that the coordinator holds
// under a lease of its own while the group has Kafka members. The marker
// keeps Varve members out (Join refuses with ErrInconsistentStrategy),
// keeps Delete and ResetOffsets off an active group (ErrGroupActive), and
// fences a coordinator that lost the group: its commits compare the
// marker's create revision, so once the marker expired or another node
// holds it, they fail with ErrKafkaFenced.

// KafkaMemberID is the member id of the marker a Kafka coordinator holds;
// Varve member ids start with "m-", so it never collides.
const KafkaMemberID = "kafka"

// StrategyKafka is the Strategy of the marker member and of the meta a
// Kafka coordinator writes.
const StrategyKafka = "kafka"

// Errors of Kafka groups.
var (
	// ErrKafkaHeld: another Kafka coordinator (another lease) holds the
	// group's marker; it lets go when it learns the group moved, or its
	// lease expires.
	ErrKafkaHeld = errors.New("group held by another Kafka coordinator")
	// ErrKafkaFenced: the coordinator's marker is gone or was replaced:
	// it no longer holds the group.
	ErrKafkaFenced = errors.New("the Kafka coordinator no longer holds the group")
	// ErrMetadataTooLarge: commit metadata longer than MaxCommitMetadata.
	ErrMetadataTooLarge = errors.New("commit metadata too large")
	// ErrCommitOutOfRange: a commit of a negative offset or past the
	// partition's end.
	ErrCommitOutOfRange = errors.New("committed offset out of range")
)

// kafkaChunk bounds the partitions of one commit transaction: a read of
// one partition key per offset and one topic key per topic, then a write
// of one put per offset and one compare per topic, all under etcd's 128
// operations.
const kafkaChunk = 60

// KafkaLease is the etcd lease under which a Kafka coordinator holds the
// markers of its groups; it is kept alive until Close. When it is lost
// (etcd unreachable for longer than its TTL), Done is closed: every marker
// under it is gone and the coordinator must let its groups go.
type KafkaLease struct {
	c      *Groups
	node   string
	id     clientv3.LeaseID
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// NewKafkaLease grants a lease of ttl (at least a second) for the markers
// of node's Kafka coordinator and keeps it alive.
func (c *Groups) NewKafkaLease(ctx context.Context, node string, ttl time.Duration) (*KafkaLease, error) {
	secs := max(int64((ttl+time.Second-1)/time.Second), 1)
	lease, err := c.cli.Grant(ctx, secs)
	if err != nil {
		return nil, fmt.Errorf("grant the Kafka coordinator's lease: %w", err)
	}
	kctx, cancel := context.WithCancel(metadata.WithCaller(context.Background(), metadata.CallerGroups))
	ka, err := c.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		cancel()
		_, _ = c.cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return nil, fmt.Errorf("keep the Kafka coordinator's lease alive: %w", err)
	}
	l := &KafkaLease{c: c, node: node, id: lease.ID, cancel: cancel, done: make(chan struct{})}
	go func() {
		for range ka {
		}
		l.once.Do(func() { close(l.done) })
	}()
	return l, nil
}

// Done is closed when the lease is lost or closed.
func (l *KafkaLease) Done() <-chan struct{} { return l.done }

// Close revokes the lease: every marker held under it disappears at once,
// so other nodes can take its groups without waiting for it to expire.
func (l *KafkaLease) Close(ctx context.Context) error {
	l.cancel()
	_, err := l.c.cli.Revoke(ctx, l.id)
	l.once.Do(func() { close(l.done) })
	if err != nil {
		return fmt.Errorf("revoke the Kafka coordinator's lease: %w", err)
	}
	return nil
}

// KafkaHold is a marker held: the fence of the coordinator's writes.
type KafkaHold struct {
	// Revision is the marker's create revision.
	Revision int64
	// Generation is the group's generation in its meta when the marker
	// was taken (0 without meta): a coordinator numbers its generations
	// after it, so they never go back when the group moves between nodes.
	Generation int64
}

// Hold takes group g's marker for the lease, in a transaction that
// requires the group to have no member key at all. A marker already held
// under this lease is held again (its revision is returned). A marker under
// another lease is ErrKafkaHeld; Varve members are ErrInconsistentStrategy.
func (l *KafkaLease) Hold(ctx context.Context, g string) (KafkaHold, error) {
	if err := ValidateName(g); err != nil {
		return KafkaHold{}, err
	}
	mk := keys.GroupMember(g, KafkaMemberID)
	v, _ := json.Marshal(Member{
		ID: KafkaMemberID, ClientID: "kafka coordinator", Strategy: StrategyKafka,
		JoinedMs: time.Now().UnixMilli(), Node: l.node, Lease: int64(l.id),
	})
	resp, err := l.c.cli.Txn(ctx).
		If(noMembers(g)).
		Then(clientv3.OpPut(mk, string(v), clientv3.WithLease(l.id)), clientv3.OpGet(keys.GroupMeta(g))).
		Else(clientv3.OpGet(mk), clientv3.OpGet(keys.GroupMembersPrefix(g), clientv3.WithPrefix(), clientv3.WithLimit(1)), clientv3.OpGet(keys.GroupMeta(g))).
		Commit()
	if err != nil {
		return KafkaHold{}, fmt.Errorf("hold Kafka group %q: %w", g, err)
	}
	gen := func(r int) int64 {
		kvs := resp.Responses[r].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return 0
		}
		m, err := decodeMeta(g, kvs[0].Value)
		if err != nil {
			return 0
		}
		return m.Generation
	}
	if resp.Succeeded {
		return KafkaHold{Revision: resp.Header.Revision, Generation: gen(1)}, nil
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		if clientv3.LeaseID(kvs[0].Lease) == l.id {
			return KafkaHold{Revision: kvs[0].CreateRevision, Generation: gen(2)}, nil
		}
		var m Member
		_ = json.Unmarshal(kvs[0].Value, &m)
		return KafkaHold{}, fmt.Errorf("hold Kafka group %q: %w (node %q)", g, ErrKafkaHeld, m.Node)
	}
	strategy := "?"
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		var m Member
		if json.Unmarshal(kvs[0].Value, &m) == nil {
			strategy = m.Strategy
		}
	}
	return KafkaHold{}, fmt.Errorf("join group %q as a Kafka consumer: %w: it has members of Varve's group protocol (strategy %q); stop them or use another group",
		g, ErrInconsistentStrategy, strategy)
}

// Release deletes group g's marker if it is still the one taken at
// revision rev (a marker taken since is left alone).
func (l *KafkaLease) Release(ctx context.Context, g string, rev int64) error {
	mk := keys.GroupMember(g, KafkaMemberID)
	if _, err := l.c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(mk), "=", rev)).Then(clientv3.OpDelete(mk)).Commit(); err != nil {
		return fmt.Errorf("release Kafka group %q: %w", g, err)
	}
	return nil
}

// kafkaFence is the compare of a Kafka coordinator's write: its marker (taken
// at revision hold) is still there, or with hold 0, the group has no
// member at all.
func kafkaFence(g string, hold int64) clientv3.Cmp {
	if hold == 0 {
		return noMembers(g)
	}
	return clientv3.Compare(clientv3.CreateRevision(keys.GroupMember(g, KafkaMemberID)), "=", hold)
}

func kafkaFenceErr(g string, hold int64) error {
	if hold == 0 {
		return fmt.Errorf("group %q: %w: a commit without a generation needs a group without members", g, ErrGroupActive)
	}
	return fmt.Errorf("group %q: %w", g, ErrKafkaFenced)
}

// KafkaRebalanced writes the group's meta after a Kafka rebalance — the
// generation, StrategyKafka and the member ids, without an assignment
// (Kafka assignments are the client leader's, opaque to Varve) — if the
// coordinator still holds the marker taken at revision hold
// (ErrKafkaFenced otherwise). Varve members joining later continue the
// generations from it.
func (c *Groups) KafkaRebalanced(ctx context.Context, g string, hold int64, generation int64, members []string) error {
	m := Meta{Generation: generation, Strategy: StrategyKafka, Members: slices.Sorted(slices.Values(members)), UpdatedMs: time.Now().UnixMilli()}
	v, _ := json.Marshal(m)
	resp, err := c.cli.Txn(ctx).If(kafkaFence(g, hold)).Then(clientv3.OpPut(keys.GroupMeta(g), string(v))).Commit()
	if err != nil {
		return fmt.Errorf("write the meta of Kafka group %q: %w", g, err)
	}
	if !resp.Succeeded {
		return kafkaFenceErr(g, hold)
	}
	return nil
}

// KafkaCommit commits offsets of a Kafka consumer group: member of
// generation gen (as Kafka's OffsetCommit names them; "" and -1 for a
// commit outside a group), fenced on the coordinator's marker taken at
// revision hold, or with hold 0 on the group having no members
// (ErrGroupActive) — the coordinator checked the member and generation in
// its memory. Unlike CommitOffsets, an offset may move backwards (a Kafka
// consumer commits what it wants, e.g. after a seek).
//
// The result has one error per offset, nil where it was committed:
// metadata.ErrTopicNotFound or ErrPartitionOutOfRange for unknown
// partitions, ErrMetadataTooLarge, ErrCommitOutOfRange for an offset
// below 0 or past the partition's end. The other offsets are committed.
// The error is for the whole commit: the fence failed (ErrKafkaFenced;
// with hold 0, ErrGroupActive for Varve members or ErrKafkaHeld for a
// Kafka coordinator's marker) or etcd did; then chunks of 60 partitions before the
// failing one may be committed, as each is one transaction.
func (c *Groups) KafkaCommit(ctx context.Context, g string, hold int64, gen int32, member string, offsets []OffsetCommit) ([]error, error) {
	if err := ValidateName(g); err != nil {
		return nil, err
	}
	if len(offsets) > MaxCommitOffsets {
		return nil, fmt.Errorf("commit to group %q: %w: %d offsets, at most %d", g, metadata.ErrInvalidArgument, len(offsets), MaxCommitOffsets)
	}
	errs := make([]error, len(offsets))
	var todo []int
	seen := make(map[topicPart]bool, len(offsets))
	for i, o := range offsets {
		tp := topicPart{o.Topic, o.Partition}
		switch {
		case metadata.ValidateTopicName(o.Topic) != nil:
			errs[i] = fmt.Errorf("commit to group %q: topic %q: %w", g, o.Topic, metadata.ErrTopicNotFound)
		case o.Partition < 0:
			errs[i] = fmt.Errorf("commit to group %q on %s/%d: %w", g, o.Topic, o.Partition, metadata.ErrPartitionOutOfRange)
		case len(o.Metadata) > MaxCommitMetadata:
			errs[i] = fmt.Errorf("commit to group %q on %s/%d: %w: %d bytes, at most %d", g, o.Topic, o.Partition, ErrMetadataTooLarge, len(o.Metadata), MaxCommitMetadata)
		case o.Offset < 0:
			errs[i] = fmt.Errorf("commit to group %q on %s/%d: %w: negative offset %d", g, o.Topic, o.Partition, ErrCommitOutOfRange, o.Offset)
		case seen[tp]:
			// The same partition twice: Kafka keeps the last; so do we.
			for j := range todo {
				if offsets[todo[j]].Topic == o.Topic && offsets[todo[j]].Partition == o.Partition {
					todo = slices.Delete(todo, j, j+1)
					break
				}
			}
			todo = append(todo, i)
		default:
			seen[tp] = true
			todo = append(todo, i)
		}
	}
	for start := 0; start < len(todo); start += kafkaChunk {
		if err := c.kafkaCommitChunk(ctx, g, hold, gen, member, offsets, todo[start:min(start+kafkaChunk, len(todo))], errs); err != nil {
			return errs, err
		}
	}
	return errs, nil
}

func (c *Groups) kafkaCommitChunk(ctx context.Context, g string, hold int64, gen int32, member string, offsets []OffsetCommit, idx []int, errs []error) error {
	for attempt := 0; ; attempt++ {
		var topics []string
		ops := []clientv3.Op{}
		if hold == 0 {
			// The marker sorts before Varve's "m-" ids.
			ops = append(ops, clientv3.OpGet(keys.GroupMembersPrefix(g), clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1)))
		} else {
			ops = append(ops, clientv3.OpGet(keys.GroupMember(g, KafkaMemberID)))
		}
		for _, i := range idx {
			ops = append(ops, clientv3.OpGet(keys.Partition(offsets[i].Topic, offsets[i].Partition)))
		}
		for _, i := range idx {
			if !slices.Contains(topics, offsets[i].Topic) {
				topics = append(topics, offsets[i].Topic)
				ops = append(ops, clientv3.OpGet(keys.Topic(offsets[i].Topic)))
			}
		}
		resp, err := c.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("commit to group %q: %w", g, err)
		}
		rr := func(i int) *clientv3.GetResponse {
			return (*clientv3.GetResponse)(resp.Responses[i].GetResponseRange())
		}
		if f := rr(0); hold == 0 && len(f.Kvs) > 0 || hold != 0 && (len(f.Kvs) == 0 || f.Kvs[0].CreateRevision != hold) {
			if hold == 0 && string(f.Kvs[0].Key) == keys.GroupMember(g, KafkaMemberID) {
				return fmt.Errorf("commit to group %q: %w", g, ErrKafkaHeld)
			}
			return kafkaFenceErr(g, hold)
		}
		cmps := []clientv3.Cmp{kafkaFence(g, hold)}
		parts := map[string]int32{}
		for j, t := range topics {
			kvs := rr(1 + len(idx) + j).Kvs
			if len(kvs) == 0 {
				parts[t] = -1
				continue
			}
			var tp metadata.Topic
			if err := json.Unmarshal(kvs[0].Value, &tp); err != nil {
				return fmt.Errorf("decode topic %q: %w", t, err)
			}
			parts[t] = tp.Partitions
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.Topic(t)), "=", kvs[0].ModRevision))
		}
		var puts []clientv3.Op
		var put []int
		now := time.Now().UnixMilli()
		states := map[string]map[int32]metadata.PartitionState{}
		for j, i := range idx {
			o := offsets[i]
			errs[i] = nil
			if n := parts[o.Topic]; n < 0 {
				errs[i] = fmt.Errorf("commit to group %q: topic %q: %w", g, o.Topic, metadata.ErrTopicNotFound)
				continue
			} else if o.Partition >= n {
				errs[i] = fmt.Errorf("commit to group %q on %s/%d: %w: the topic has %d partitions", g, o.Topic, o.Partition, metadata.ErrPartitionOutOfRange, n)
				continue
			}
			var end int64
			if kvs := rr(1 + j).Kvs; len(kvs) > 0 {
				var ps metadata.PartitionState
				if err := json.Unmarshal(kvs[0].Value, &ps); err != nil {
					return fmt.Errorf("decode partition %s/%d: %w", o.Topic, o.Partition, err)
				}
				end = ps.Next
			}
			if o.Offset > end {
				// Past the partition key's high watermark, the offset may
				// be within blocks committed through sequencer records.
				if states[o.Topic] == nil {
					st, err := c.meta.PartitionStates(ctx, o.Topic)
					if err != nil {
						return fmt.Errorf("commit to group %q on %s/%d: %w", g, o.Topic, o.Partition, err)
					}
					states[o.Topic] = st
				}
				end = max(end, states[o.Topic][o.Partition].Next)
			}
			if o.Offset > end {
				errs[i] = fmt.Errorf("commit to group %q on %s/%d: %w: offset %d is past the end of the partition (%d)", g, o.Topic, o.Partition, ErrCommitOutOfRange, o.Offset, end)
				continue
			}
			v, _ := json.Marshal(CommittedOffset{Offset: o.Offset, Generation: int64(gen), Metadata: o.Metadata, CommittedMs: now, Member: member})
			puts = append(puts, clientv3.OpPut(keys.GroupOffset(g, o.Topic, o.Partition), string(v)))
			put = append(put, i)
		}
		if len(puts) == 0 {
			return nil
		}
		wr, err := c.cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
		if err != nil {
			return fmt.Errorf("commit to group %q: %w", g, err)
		}
		if wr.Succeeded {
			return nil
		}
		if attempt >= 3 || ctx.Err() != nil {
			return fmt.Errorf("commit to group %q: %w: the group or its topics kept changing", g, ErrKafkaFenced)
		}
		// The fence or a topic changed since the read: read again (a
		// fence that fails is answered from the read).
	}
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// DeleteOffsets deletes group g's committed offsets of parts, if no
// member key of the group was created or changed after revision since
// (the revision of the State the caller checked the members in): else
// ErrGroupActive, and nothing is deleted. Partitions without a committed
// offset are ignored. At most MaxCommitOffsets partitions, 100 per
// transaction.
func (c *Groups) DeleteOffsets(ctx context.Context, g string, parts []TopicPartition, since int64) error {
	if err := ValidateName(g); err != nil {
		return err
	}
	if len(parts) > MaxCommitOffsets {
		return fmt.Errorf("delete offsets of group %q: %w: %d partitions, at most %d", g, metadata.ErrInvalidArgument, len(parts), MaxCommitOffsets)
	}
	cmp := clientv3.Compare(clientv3.ModRevision(keys.GroupMembersPrefix(g)), "<", since+1).WithPrefix()
	for start := 0; start < len(parts); start += resetChunk {
		var ops []clientv3.Op
		for _, tp := range parts[start:min(start+resetChunk, len(parts))] {
			if metadata.ValidateTopicName(tp.Topic) != nil || tp.Partition < 0 {
				continue
			}
			ops = append(ops, clientv3.OpDelete(keys.GroupOffset(g, tp.Topic, tp.Partition)))
		}
		resp, err := c.cli.Txn(ctx).If(cmp).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("delete offsets of group %q: %w", g, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("delete offsets of group %q: %w: its members changed meanwhile", g, ErrGroupActive)
		}
	}
	return nil
}

// Summary is what List knows of a group without reading its values.
type Summary struct {
	Name string
	// Members counts Varve members (the Kafka marker left out).
	Members int
	// Kafka: a Kafka coordinator holds the group's marker.
	Kafka bool
	// HasMeta: the group has had a generation (Varve's or Kafka's).
	HasMeta bool
}

// Summaries lists every group with its member keys, in one keys-only
// read, sorted by name.
func (c *Groups) Summaries(ctx context.Context) ([]Summary, error) {
	resp, err := c.cli.Get(ctx, keys.GroupsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	var out []Summary
	for _, kv := range resp.Kvs {
		rest := string(kv.Key[len(keys.GroupsPrefix()):])
		name, sub, ok := strings.Cut(rest, "/")
		if !ok || name == "" {
			continue
		}
		if len(out) == 0 || out[len(out)-1].Name != name {
			out = append(out, Summary{Name: name})
		}
		s := &out[len(out)-1]
		switch {
		case sub == "meta":
			s.HasMeta = true
		case sub == "members/"+KafkaMemberID:
			s.Kafka = true
		case strings.HasPrefix(sub, "members/"):
			s.Members++
		}
	}
	return out, nil
}
