package groups

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/internal/conn"
	"github.com/varve-io/varve/metadata/internal/keys"
)

// Groups reads and changes consumer groups in the etcd of a metadata
// client. It is safe for concurrent use.
type Groups struct {
	meta *metadata.Client
	cli  *clientv3.Client
	log  *slog.Logger
}

// New returns the consumer groups kept in meta's etcd; meta outlives it.
func New(meta *metadata.Client) *Groups {
	cn := conn.Of(meta)
	return &Groups{meta: meta, cli: cn.KV, log: cn.Log}
}

// Errors of consumer groups, wrapped with the names involved.
var (
	ErrGroupNotFound = errors.New("group not found")
	// ErrUnknownMember: the member is not (or no longer) in the group — its
	// session ended or expired. A zombie's commits fail with it.
	ErrUnknownMember = errors.New("unknown member")
	// ErrStaleGeneration: the group moved to a newer generation.
	ErrStaleGeneration = errors.New("stale generation")
	// ErrNotAssigned: the member does not own the partition in this
	// generation (and did not own it in the previous one).
	ErrNotAssigned = errors.New("partition not assigned to member")
	// ErrGroupActive: the operation needs a group without members.
	ErrGroupActive = errors.New("group has active members")
	// ErrOffsetRegress: a commit would move a committed offset backwards
	// (only ResetOffsets may).
	ErrOffsetRegress = errors.New("commit behind the committed offset")
	// ErrInconsistentStrategy: a member asks for another strategy than the
	// group's members use.
	ErrInconsistentStrategy = errors.New("inconsistent group strategy")
)

// Session timeouts of group members.
const (
	DefaultSessionTimeout = 10 * time.Second
	MinSessionTimeout     = 1 * time.Second
	MaxSessionTimeout     = 300 * time.Second
)

// Meta is stored at groups/<g>/meta: the current generation and its
// assignment. It changes (generation+1) exactly when the member set does.
type Meta struct {
	Generation int64  `json:"generation"`
	Strategy   string `json:"strategy"`
	// Members are the sorted member ids the assignment was computed for.
	Members    []string              `json:"members"`
	Assignment map[string]Assignment `json:"assignment"`
	// Revoked holds, per member still in the group, the partitions it owned
	// in the previous generation and lost in this one: it may commit them
	// during this generation (its last commit before letting go).
	Revoked   map[string]Assignment `json:"revoked,omitempty"`
	UpdatedMs int64                 `json:"updated_ms"`
}

// Member is stored at groups/<g>/members/<id>, bound to the member's
// session lease: when the lease ends (the member left, its session stream
// closed, or it stopped heartbeating) the key disappears.
type Member struct {
	ID               string   `json:"id"`
	ClientID         string   `json:"client_id,omitempty"`
	Topics           []string `json:"topics"`
	Strategy         string   `json:"strategy"`
	SessionTimeoutMs int32    `json:"session_timeout_ms"`
	JoinedMs         int64    `json:"joined_ms"`
	Node             string   `json:"node,omitempty"`
	Lease            int64    `json:"lease"`
	// Left marks a member that asked to leave (LeaveGroup), written just
	// before its lease is revoked, so that its session ends as closed,
	// not expired.
	Left bool `json:"left,omitempty"`
}

// CommittedOffset is stored at groups/<g>/offsets/<topic>/<p>.
type CommittedOffset struct {
	Topic       string `json:"-"`
	Partition   int32  `json:"-"`
	Offset      int64  `json:"offset"`
	Generation  int64  `json:"generation"`
	Metadata    string `json:"metadata,omitempty"`
	CommittedMs int64  `json:"committed_ms"`
	Member      string `json:"member,omitempty"`
}

// ValidateName applies the topic name rules to group names.
func ValidateName(name string) error {
	if err := metadata.ValidateTopicName(name); err != nil {
		return fmt.Errorf("%w: group name %q: %s", metadata.ErrInvalidArgument, name,
			strings.TrimPrefix(strings.TrimPrefix(err.Error(), metadata.ErrInvalidArgument.Error()+": "), "topic name "))
	}
	return nil
}

func decodeMeta(g string, v []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(v, &m); err != nil {
		return m, fmt.Errorf("decode meta of group %q: %w", g, err)
	}
	return m, nil
}

// State is everything stored about a group at one revision.
type State struct {
	Name     string
	Exists   bool
	Meta     Meta
	Members  []Member // sorted by id
	Offsets  []CommittedOffset
	Revision int64
}

// Active reports whether the group has members.
func (s State) Active() bool { return len(s.Members) > 0 }

// State reads a group's meta, members and committed offsets in one
// revision. A group exists while any of its keys does.
func (c *Groups) State(ctx context.Context, g string) (State, error) {
	if err := ValidateName(g); err != nil {
		return State{}, err
	}
	resp, err := c.cli.Get(ctx, keys.GroupPrefix(g), clientv3.WithPrefix())
	if err != nil {
		return State{}, fmt.Errorf("read group %q: %w", g, err)
	}
	st := State{Name: g, Exists: len(resp.Kvs) > 0, Revision: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		switch {
		case k == keys.GroupMeta(g):
			if st.Meta, err = decodeMeta(g, kv.Value); err != nil {
				return st, err
			}
		case strings.HasPrefix(k, keys.GroupMembersPrefix(g)):
			var m Member
			if err := json.Unmarshal(kv.Value, &m); err != nil {
				return st, fmt.Errorf("decode member %s: %w", k, err)
			}
			st.Members = append(st.Members, m)
		case strings.HasPrefix(k, keys.GroupOffsetsPrefix(g)):
			_, t, p, ok := keys.ParseGroupOffset(k)
			if !ok {
				continue
			}
			var o CommittedOffset
			if err := json.Unmarshal(kv.Value, &o); err != nil {
				return st, fmt.Errorf("decode committed offset %s: %w", k, err)
			}
			o.Topic, o.Partition = t, p
			st.Offsets = append(st.Offsets, o)
		}
	}
	slices.SortFunc(st.Members, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(st.Offsets, func(a, b CommittedOffset) int {
		return cmpTP(topicPart{a.Topic, a.Partition}, topicPart{b.Topic, b.Partition})
	})
	return st, nil
}

// List returns the names of every group, sorted.
func (c *Groups) List(ctx context.Context) ([]string, error) {
	resp, err := c.cli.Get(ctx, keys.GroupsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		rest := string(kv.Key[len(keys.GroupsPrefix()):])
		if i := strings.IndexByte(rest, '/'); i > 0 {
			out = append(out, rest[:i])
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// noMembers is a compare that holds when the group has no member key.
func noMembers(g string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(keys.GroupMembersPrefix(g)), "=", 0).WithPrefix()
}

// Delete removes a group without members: its meta and committed
// offsets. Unknown groups are ErrGroupNotFound, groups with members
// ErrGroupActive; either way nothing changes.
func (c *Groups) Delete(ctx context.Context, g string) error {
	if err := ValidateName(g); err != nil {
		return err
	}
	resp, err := c.cli.Txn(ctx).
		If(noMembers(g), clientv3.Compare(clientv3.CreateRevision(keys.GroupPrefix(g)), ">", 0).WithPrefix()).
		Then(clientv3.OpDelete(keys.GroupPrefix(g), clientv3.WithPrefix())).
		Commit()
	if err != nil {
		return fmt.Errorf("delete group %q: %w", g, err)
	}
	if resp.Succeeded {
		return nil
	}
	st, err := c.State(ctx, g)
	switch {
	case err != nil:
		return fmt.Errorf("delete group %q: %w", g, err)
	case !st.Exists:
		return fmt.Errorf("delete group %q: %w", g, ErrGroupNotFound)
	case st.Active():
		return fmt.Errorf("delete group %q: %w (%d members); stop them first", g, ErrGroupActive, len(st.Members))
	}
	return fmt.Errorf("delete group %q: changed while deleting; try again: %w", g, ErrGroupActive)
}

// FetchCommitted returns the committed offsets of parts (topic →
// partitions), or of every committed partition when parts is empty. A
// partition without a commit is absent. An unknown group is
// ErrGroupNotFound.
func (c *Groups) FetchCommitted(ctx context.Context, g string, parts map[string][]int32) ([]CommittedOffset, error) {
	st, err := c.State(ctx, g)
	if err != nil {
		return nil, err
	}
	if !st.Exists {
		return nil, fmt.Errorf("fetch committed offsets of group %q: %w", g, ErrGroupNotFound)
	}
	if len(parts) == 0 {
		return st.Offsets, nil
	}
	var out []CommittedOffset
	for _, o := range st.Offsets {
		if slices.Contains(parts[o.Topic], o.Partition) {
			out = append(out, o)
		}
	}
	return out, nil
}

// resetChunk bounds the partitions one reset transaction writes (etcd allows
// 128 operations per transaction; two are compares).
const resetChunk = 100

// ResetOffsets sets committed offsets of topic's partitions to offsets
// (partition → offset), backwards or forwards, when the group has no
// members (ErrGroupActive otherwise). Each offset must lie within the
// partition's log [start, next]; every offset is checked before anything is
// written. A group that does not exist yet is created with these offsets,
// as Kafka's tools do. Up to 100 partitions are reset in one transaction;
// more take one transaction per 100, each fenced on the group having no
// members, so a member joining midway stops the reset and the error says
// how many partitions were reset (as Kafka's reset, which is not atomic
// across partitions either).
func (c *Groups) ResetOffsets(ctx context.Context, g, topic string, offsets map[int32]int64) ([]CommittedOffset, error) {
	if err := ValidateName(g); err != nil {
		return nil, err
	}
	if len(offsets) == 0 {
		return nil, fmt.Errorf("reset offsets of group %q on %q: %w: no partitions", g, topic, metadata.ErrInvalidArgument)
	}
	t, err := c.meta.GetTopic(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("reset offsets of group %q: %w", g, err)
	}
	states, err := c.meta.PartitionStates(ctx, topic)
	if err != nil {
		return nil, err
	}
	st, err := c.State(ctx, g)
	if err != nil {
		return nil, err
	}
	if st.Active() {
		return nil, fmt.Errorf("reset offsets of group %q: %w (%d members); stop them first", g, ErrGroupActive, len(st.Members))
	}
	ps := make([]int32, 0, len(offsets))
	for p := range offsets {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	now := time.Now().UnixMilli()
	out := make([]CommittedOffset, 0, len(ps))
	for _, p := range ps {
		off := offsets[p]
		if p < 0 || p >= t.Partitions {
			return nil, fmt.Errorf("reset offsets of group %q on %s/%d: %w: topic has %d partitions", g, topic, p, metadata.ErrPartitionOutOfRange, t.Partitions)
		}
		ls := states[p]
		if off < ls.Start || off > ls.Next {
			return nil, fmt.Errorf("reset offsets of group %q on %s/%d: %w: offset %d is outside the log [%d, %d]", g, topic, p, metadata.ErrInvalidArgument, off, ls.Start, ls.Next)
		}
		out = append(out, CommittedOffset{Topic: topic, Partition: p, Offset: off, Generation: st.Meta.Generation, CommittedMs: now, Metadata: "reset"})
	}
	cmps := []clientv3.Cmp{noMembers(g), clientv3.Compare(clientv3.CreateRevision(keys.Topic(topic)), ">", 0)}
	for start := 0; start < len(out); start += resetChunk {
		chunk := out[start:min(start+resetChunk, len(out))]
		ops := make([]clientv3.Op, 0, len(chunk))
		for _, co := range chunk {
			v, _ := json.Marshal(co)
			ops = append(ops, clientv3.OpPut(keys.GroupOffset(g, topic, co.Partition), string(v)))
		}
		resp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("reset offsets of group %q on %q (%d of %d partitions reset before): %w", g, topic, start, len(out), err)
		}
		if resp.Succeeded {
			continue
		}
		// A member joined or the topic changed in between: report which.
		done := ""
		if start > 0 {
			done = fmt.Sprintf(" after %d of %d partitions were reset", start, len(out))
		}
		st, err := c.State(ctx, g)
		if err == nil && st.Active() {
			return nil, fmt.Errorf("reset offsets of group %q: %w (%d members)%s; stop them first", g, ErrGroupActive, len(st.Members), done)
		}
		return nil, fmt.Errorf("reset offsets of group %q on %q: %w: the topic changed meanwhile%s; try again", g, topic, metadata.ErrInvalidArgument, done)
	}
	return out, nil
}

// Lag is one committed partition's lag, for metrics.
type Lag struct {
	Group, Topic string
	Partition    int32
	Committed    int64
	End          int64
}

// Lags reads every committed offset of every group and the end of
// each partition: two reads, whatever the number of groups, plus one per
// topic.
func (c *Groups) Lags(ctx context.Context) ([]Lag, error) {
	resp, err := c.cli.Get(ctx, keys.GroupsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read committed offsets: %w", err)
	}
	var out []Lag
	ends := map[string]map[int32]metadata.PartitionState{}
	for _, kv := range resp.Kvs {
		g, t, p, ok := keys.ParseGroupOffset(string(kv.Key))
		if !ok {
			continue
		}
		var o CommittedOffset
		if json.Unmarshal(kv.Value, &o) != nil {
			continue
		}
		if _, ok := ends[t]; !ok {
			ends[t], err = c.meta.PartitionStates(ctx, t)
			if err != nil {
				return nil, err
			}
		}
		out = append(out, Lag{Group: g, Topic: t, Partition: p, Committed: o.Offset, End: ends[t][p].Next})
	}
	return out, nil
}
