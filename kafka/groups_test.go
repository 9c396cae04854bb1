package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/groups"
	"github.com/varve-io/varve/node"
)

// groupOpts are the options of a test's group consumer: short timeouts,
// commits by the test.
func groupOpts(group string, topics ...string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(300 * time.Millisecond), kgo.RebalanceTimeout(10 * time.Second),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200 * time.Millisecond),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
	}
}

// waitFor waits until cond holds, at most timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !testenv.EventuallyEvery(timeout, 50*time.Millisecond, cond) {
		t.Fatalf("waited %v for %s", timeout, what)
	}
}

// produceN writes values prefix0 .. prefix(n-1), value i to partition i %
// parts.
func produceN(t testing.TB, cl *kgo.Client, topic, prefix string, from, n, parts int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % parts), Value: []byte(prefix + strconv.Itoa(i))})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func producer(t testing.TB, d *node.Dev) *kgo.Client {
	return newClient(t, d, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(time.Millisecond))
}

// tally is what the members of a group consumed.
type tally struct {
	mu      sync.Mutex
	by      map[string][]string // value → members that got it
	first   map[int32]int64     // partition → first offset consumed
	last    map[int32]int64
	errs    []error
	members map[string]int // member → records
}

func newTally() *tally {
	return &tally{by: map[string][]string{}, first: map[int32]int64{}, last: map[int32]int64{}, members: map[string]int{}}
}

func (tl *tally) count() int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return len(tl.by)
}

func (tl *tally) fail(err error) {
	tl.mu.Lock()
	tl.errs = append(tl.errs, err)
	tl.mu.Unlock()
}

// consume runs cl as a group member named name until stop: each poll's
// records are tallied, then committed, then the rebalance it blocked is
// allowed. strict: poll and commit errors fail the test.
func consume(cl *kgo.Client, name string, tl *tally, strict bool) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachError(func(t string, p int32, err error) {
				if strict && !errors.Is(err, context.Canceled) {
					tl.fail(fmt.Errorf("%s: poll %s/%d: %w", name, t, p, err))
				}
			})
			n := 0
			tl.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				v := string(r.Value)
				tl.by[v] = append(tl.by[v], name)
				if _, ok := tl.first[r.Partition]; !ok {
					tl.first[r.Partition] = r.Offset
				}
				tl.last[r.Partition] = r.Offset
				tl.members[name]++
				n++
			})
			tl.mu.Unlock()
			if n > 0 {
				cctx, ccancel := context.WithTimeout(context.Background(), 20*time.Second)
				if err := cl.CommitUncommittedOffsets(cctx); err != nil && strict {
					tl.fail(fmt.Errorf("%s: commit: %w", name, err))
				}
				ccancel()
			}
			cl.AllowRebalance()
		}
	}()
	return func() { cancel(); <-done }
}

// check fails the test unless every value prefix0 .. prefix(n-1) was
// consumed exactly once (exact) or at least once, and nothing else; it
// returns the number of duplicates.
func (tl *tally) check(t testing.TB, prefix string, n int, exact bool) int {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, err := range tl.errs {
		t.Error(err)
	}
	dups := 0
	for i := range n {
		got := tl.by[prefix+strconv.Itoa(i)]
		switch {
		case len(got) == 0:
			t.Fatalf("record %s%d never consumed", prefix, i)
		case len(got) > 1 && exact:
			t.Fatalf("record %s%d consumed %d times, by %v", prefix, i, len(got), got)
		}
		dups += len(got) - 1
	}
	if len(tl.by) != n {
		t.Fatalf("%d distinct records consumed, want %d", len(tl.by), n)
	}
	return dups
}

// describe is the group as kadm describes it.
func describe(t testing.TB, adm *kadm.Client, group string) kadm.DescribedGroup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ds, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	return ds[group]
}

// stableWith waits for the group to be Stable with n members, each
// assigned at least one partition; it returns the members' partitions.
func stableWith(t testing.TB, adm *kadm.Client, group string, n int) map[string][]int32 {
	t.Helper()
	var got map[string][]int32
	waitFor(t, 30*time.Second, fmt.Sprintf("group %s stable with %d members", group, n), func() bool {
		dg := describe(t, adm, group)
		if dg.Err != nil || dg.State != "Stable" || len(dg.Members) != n {
			return false
		}
		got = map[string][]int32{}
		for _, m := range dg.Members {
			a, ok := m.Assigned.AsConsumer()
			if !ok {
				return false
			}
			for _, at := range a.Topics {
				got[m.MemberID] = append(got[m.MemberID], at.Partitions...)
			}
			if len(got[m.MemberID]) == 0 {
				return false
			}
		}
		return true
	})
	return got
}

// TestGroupCooperativeConsume: three franz-go members with the
// cooperative-sticky balancer split 8 partitions; every record is consumed
// exactly once, commits included; when one member leaves, the other two
// take its partitions from its committed offsets.
func TestGroupCooperativeConsume(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "coop", 8)
	pr := producer(t, d)
	tl := newTally()
	var stops []func()
	var cls []*kgo.Client
	for i := range 3 {
		cl := newClient(t, d, append(groupOpts("coop-g", "coop"), kgo.Balancers(kgo.CooperativeStickyBalancer()))...)
		cls = append(cls, cl)
		stops = append(stops, consume(cl, fmt.Sprintf("m%d", i), tl, true))
	}
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	adm := kadm.NewClient(pr)
	before := stableWith(t, adm, "coop-g", 3)
	const half = 2000
	produceN(t, pr, "coop", "r", 0, half, 8)
	waitFor(t, 30*time.Second, "the first half consumed", func() bool { return tl.count() >= half })
	tl.check(t, "r", half, true)
	tl.mu.Lock()
	consumers := len(tl.members)
	tl.mu.Unlock()
	if consumers != 3 {
		t.Fatalf("records per member %v: want all three consuming (assignment %v)", tl.members, before)
	}

	// m2 leaves: m0 and m1 take its partitions.
	stops[2]()
	stops = stops[:2]
	cls[2].Close()
	after := stableWith(t, adm, "coop-g", 2)
	n := 0
	for _, ps := range after {
		n += len(ps)
	}
	if n != 8 {
		t.Fatalf("after a member left, %v: want the 8 partitions assigned", after)
	}
	tl.mu.Lock()
	gone := tl.members["m2"]
	tl.mu.Unlock()
	produceN(t, pr, "coop", "r", half, half, 8)
	waitFor(t, 30*time.Second, "the second half consumed", func() bool { return tl.count() >= 2*half })
	tl.check(t, "r", 2*half, true)
	tl.mu.Lock()
	if tl.members["m2"] != gone {
		t.Errorf("m2 consumed after it left")
	}
	tl.mu.Unlock()

	// The committed offsets are the ends of the partitions.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitFor(t, 10*time.Second, "every partition committed at its end", func() bool {
		offs, err := adm.FetchOffsets(ctx, "coop-g")
		if err != nil {
			t.Fatal(err)
		}
		for p := range int32(8) {
			if o, ok := offs.Lookup("coop", p); !ok || o.Err != nil || o.At != 2*half/8 {
				return false
			}
		}
		return true
	})
}

// TestGroupRangeAndRoundRobin: the range and round-robin balancers split
// a topic between two members too.
func TestGroupRangeAndRoundRobin(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "bal", 6)
	pr := producer(t, d)
	produceN(t, pr, "bal", "b", 0, 600, 6)
	adm := kadm.NewClient(pr)
	for _, b := range []kgo.GroupBalancer{kgo.RangeBalancer(), kgo.RoundRobinBalancer()} {
		group := "bal-" + b.ProtocolName()
		tl := newTally()
		for i := range 2 {
			cl := newClient(t, d, append(groupOpts(group, "bal"), kgo.Balancers(b))...)
			stop := consume(cl, fmt.Sprintf("m%d", i), tl, false)
			defer stop()
		}
		assigned := stableWith(t, adm, group, 2)
		waitFor(t, 30*time.Second, group+" consumed", func() bool { return tl.count() >= 600 })
		tl.check(t, "b", 600, false)
		if dg := describe(t, adm, group); dg.Protocol != b.ProtocolName() || dg.ProtocolType != "consumer" {
			t.Fatalf("%s: protocol %q type %q", group, dg.Protocol, dg.ProtocolType)
		}
		n := 0
		for _, ps := range assigned {
			n += len(ps)
		}
		if n != 6 {
			t.Fatalf("%s: assignment %v", group, assigned)
		}
	}
}

// TestGroupOffsetsSharedWithVarve: offsets a Kafka consumer commits are
// what Varve's groups API reads, and offsets Varve resets or commits are
// what Kafka's OffsetFetch answers and a Kafka consumer starts from.
func TestGroupOffsetsSharedWithVarve(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "shared", 4)
	pr := producer(t, d)
	produceN(t, pr, "shared", "s", 0, 100, 4)
	adm := kadm.NewClient(pr)
	vg := groups.New(d.Meta())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cl := newClient(t, d, groupOpts("shared-g", "shared")...)
	tl := newTally()
	stop := consume(cl, "k", tl, true)
	waitFor(t, 30*time.Second, "100 records", func() bool { return tl.count() >= 100 })
	stop()
	tl.check(t, "s", 100, true)
	ko, err := adm.FetchOffsets(ctx, "shared-g")
	if err != nil {
		t.Fatal(err)
	}
	vo, err := vg.FetchCommitted(ctx, "shared-g", nil)
	if err != nil || len(vo) != 4 {
		t.Fatalf("Varve's committed offsets: %+v, %v", vo, err)
	}
	for _, o := range vo {
		k, ok := ko.Lookup(o.Topic, o.Partition)
		if !ok || k.Err != nil || k.At != o.Offset || o.Offset != 25 || o.Member == "" || o.Generation < 1 {
			t.Fatalf("%s/%d: Varve %+v, Kafka %+v", o.Topic, o.Partition, o, k)
		}
	}
	st, err := vg.State(ctx, "shared-g")
	if err != nil || len(st.Members) != 1 || st.Members[0].ID != groups.KafkaMemberID || st.Meta.Strategy != groups.StrategyKafka {
		t.Fatalf("Varve's view of a group of Kafka members: %+v, %v", st, err)
	}
	cl.Close()
	waitFor(t, 10*time.Second, "the group released", func() bool {
		st, err := vg.State(ctx, "shared-g")
		return err == nil && !st.Active()
	})

	// Varve resets and a Kafka simple commit (backwards) on the empty group.
	if _, err := vg.ResetOffsets(ctx, "shared-g", "shared", map[int32]int64{0: 5, 1: 10}); err != nil {
		t.Fatal(err)
	}
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: "shared", Partition: 2, At: 3, LeaderEpoch: -1, Metadata: "back"})
	if r, err := adm.CommitOffsets(ctx, "shared-g", os); err != nil || r.Error() != nil {
		t.Fatalf("simple commit: %v %v", err, r.Error())
	}
	// A Varve member commits partition 1 forward.
	sess, err := vg.Join(ctx, groups.JoinSpec{Group: "shared-g", Topics: []string{"shared"}})
	if err != nil {
		t.Fatal(err)
	}
	gen, err := sess.Next(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := vg.CommitOffsets(ctx, "shared-g", sess.ID(), gen.Generation, []groups.OffsetCommit{{Topic: "shared", Partition: 1, Offset: 12}}); err != nil {
		t.Fatal(err)
	}
	if err := sess.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	ko, err = adm.FetchOffsets(ctx, "shared-g")
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{0: 5, 1: 12, 2: 3, 3: 25}
	for p, w := range want {
		if o, ok := ko.Lookup("shared", p); !ok || o.At != w {
			t.Fatalf("Kafka reads partition %d at %+v, want %d", p, o, w)
		}
	}
	if o, _ := ko.Lookup("shared", 0); o.Metadata != "reset" {
		t.Fatalf("metadata of a Varve reset: %q", o.Metadata)
	}
	// A Kafka consumer starts from them.
	cl2 := newClient(t, d, groupOpts("shared-g", "shared")...)
	tl2 := newTally()
	stop2 := consume(cl2, "k2", tl2, true)
	defer stop2()
	waitFor(t, 30*time.Second, "the rest consumed", func() bool { return tl2.count() >= 20+13+22 })
	tl2.mu.Lock()
	defer tl2.mu.Unlock()
	if tl2.first[0] != 5 || tl2.first[1] != 12 || tl2.first[2] != 3 || len(tl2.by) != 55 {
		t.Fatalf("restarted at %v with %d records; want partitions from 5, 12, 3 and 55 records", tl2.first, len(tl2.by))
	}
}

// joinRaw sends a consumer-protocol JoinGroup through cl (franz-go finds
// the coordinator), answering MEMBER_ID_REQUIRED once.
func joinRaw(ctx context.Context, t testing.TB, cl *kgo.Client, group string, instance *string, session int32, topics ...string) *kmsg.JoinGroupResponse {
	t.Helper()
	md := kmsg.NewConsumerMemberMetadata()
	md.Topics = topics
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group, req.SessionTimeoutMillis, req.RebalanceTimeoutMillis, req.ProtocolType = group, session, 6000, "consumer"
	req.InstanceID = instance
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name, p.Metadata = "range", md.AppendTo(nil)
	req.Protocols = []kmsg.JoinGroupRequestProtocol{p}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode == kerr.MemberIDRequired.Code {
		req.MemberID = resp.MemberID
		if resp, err = req.RequestWith(ctx, cl); err != nil {
			t.Fatal(err)
		}
	}
	return resp
}

// TestGroupMixedProtocolRefused: a group with Varve members refuses Kafka
// members (INCONSISTENT_GROUP_PROTOCOL) and a group with Kafka members
// refuses Varve members (ErrInconsistentStrategy).
func TestGroupMixedProtocolRefused(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "mixed", 2)
	vg := groups.New(d.Meta())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sess, err := vg.Join(ctx, groups.JoinSpec{Group: "mixed", Topics: []string{"mixed"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sess.Next(ctx, 0); err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, d)
	if resp := joinRaw(ctx, t, cl, "mixed", nil, 6000, "mixed"); resp.ErrorCode != kerr.InconsistentGroupProtocol.Code {
		t.Fatalf("Kafka join into a Varve group: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	// The Varve group is described as a consumer group.
	adm := kadm.NewClient(cl)
	dg := describe(t, adm, "mixed")
	if dg.State != "Stable" || dg.Protocol != "varve-sticky" || len(dg.Members) != 1 || dg.Members[0].MemberID != sess.ID() {
		t.Fatalf("a Varve group described: %+v", dg)
	}
	if a, ok := dg.Members[0].Assigned.AsConsumer(); !ok || len(a.Topics) != 1 || len(a.Topics[0].Partitions) != 2 {
		t.Fatalf("a Varve member's assignment described: %+v", dg.Members[0].Assigned)
	}
	if err := sess.Leave(ctx); err != nil {
		t.Fatal(err)
	}

	resp := joinRaw(ctx, t, cl, "mixed", nil, 6000, "mixed")
	if resp.ErrorCode != 0 || resp.LeaderID != resp.MemberID || resp.Generation < 1 {
		t.Fatalf("Kafka join once the Varve member left: %+v", resp)
	}
	if _, err := vg.Join(ctx, groups.JoinSpec{Group: "mixed", Topics: []string{"mixed"}}); !errors.Is(err, groups.ErrInconsistentStrategy) {
		t.Fatalf("Varve join into a Kafka group: %v", err)
	}
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = "mixed"
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID = resp.MemberID
	leave.Members = []kmsg.LeaveGroupRequestMember{lm}
	if lr, err := leave.RequestWith(ctx, cl); err != nil || lr.ErrorCode != 0 || lr.Members[0].ErrorCode != 0 {
		t.Fatalf("leave: %+v %v", lr, err)
	}
	waitFor(t, 10*time.Second, "a Varve join after the Kafka member left", func() bool {
		s, err := vg.Join(ctx, groups.JoinSpec{Group: "mixed", Topics: []string{"mixed"}})
		if err == nil {
			_ = s.Leave(ctx)
		}
		return err == nil
	})
}

// TestGroupAdminAPIs: DescribeGroups, ListGroups, DeleteGroups and
// OffsetDelete through kadm.
func TestGroupAdminAPIs(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "adm", 4)
	createTopic(t, d, "other", 2)
	pr := producer(t, d)
	produceN(t, pr, "adm", "a", 0, 40, 4)
	produceN(t, pr, "other", "o", 0, 10, 2)
	adm := kadm.NewClient(pr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: "other", Partition: 0, At: 4, LeaderEpoch: -1})
	os.Add(kadm.Offset{Topic: "other", Partition: 1, At: 5, LeaderEpoch: -1})
	if r, err := adm.CommitOffsets(ctx, "adm-g", os); err != nil || r.Error() != nil {
		t.Fatalf("simple commit: %v %v", err, r.Error())
	}
	if dg := describe(t, adm, "adm-g"); dg.State != "Empty" || dg.Err != nil {
		t.Fatalf("a group with offsets only: %+v", dg)
	}
	var cls []*kgo.Client
	for i := range 2 {
		cl := newClient(t, d, append(groupOpts("adm-g", "adm"), kgo.ClientID(fmt.Sprintf("client-%d", i)))...)
		cls = append(cls, cl)
		stop := consume(cl, fmt.Sprintf("m%d", i), newTally(), true)
		defer stop()
	}
	stableWith(t, adm, "adm-g", 2)
	dg := describe(t, adm, "adm-g")
	if dg.ProtocolType != "consumer" || dg.Protocol != "cooperative-sticky" || dg.Members[0].ClientID == "" || !strings.HasPrefix(dg.Members[0].ClientHost, "/") {
		t.Fatalf("described: %+v", dg)
	}
	if m, ok := dg.Members[0].Join.AsConsumer(); !ok || len(m.Topics) != 1 || m.Topics[0] != "adm" {
		t.Fatalf("member metadata: %+v", dg.Members[0].Join)
	}
	ls, err := adm.ListGroups(ctx)
	if err != nil || ls["adm-g"].State != "Stable" || ls["adm-g"].ProtocolType != "consumer" {
		t.Fatalf("listed: %+v, %v", ls, err)
	}
	if ls, err := adm.ListGroups(ctx, "Empty"); err != nil || len(ls) != 0 {
		t.Fatalf("listed empty groups: %+v, %v", ls, err)
	}
	if r, err := adm.DeleteGroups(ctx, "adm-g"); err != nil || !errors.Is(r["adm-g"].Err, kerr.NonEmptyGroup) {
		t.Fatalf("delete of an active group: %+v, %v", r, err)
	}
	var ts kadm.TopicsSet
	ts.Add("other", 0)
	ts.Add("adm", 0)
	ts.Add("nope", 0)
	del, err := adm.DeleteOffsets(ctx, "adm-g", ts)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := del.Lookup("other", 0); e != nil {
		t.Fatalf("delete of an unsubscribed topic's offset: %v", e)
	}
	if e, _ := del.Lookup("adm", 0); !errors.Is(e, kerr.GroupSubscribedToTopic) {
		t.Fatalf("delete of a subscribed topic's offset: %v", e)
	}
	if e, _ := del.Lookup("nope", 0); !errors.Is(e, kerr.UnknownTopicOrPartition) {
		t.Fatalf("delete of an unknown topic's offset: %v", e)
	}
	offs, err := adm.FetchOffsets(ctx, "adm-g")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("other", 0); ok {
		t.Fatalf("other/0 after its delete: %+v", o)
	}
	if o, _ := offs.Lookup("other", 1); o.At != 5 {
		t.Fatalf("other/1: %+v", o)
	}

	for _, cl := range cls {
		cl.Close()
	}
	waitFor(t, 10*time.Second, "the group empty", func() bool { return describe(t, adm, "adm-g").State == "Empty" })
	if ls, err := adm.ListGroups(ctx, "empty"); err != nil || ls["adm-g"].State != "Empty" {
		t.Fatalf("listed empty groups: %+v, %v", ls, err)
	}
	if r, err := adm.DeleteGroups(ctx, "adm-g"); err != nil || r["adm-g"].Err != nil {
		t.Fatalf("delete of an empty group: %+v, %v", r, err)
	}
	if r, err := adm.DeleteGroups(ctx, "adm-g"); err != nil || !errors.Is(r["adm-g"].Err, kerr.GroupIDNotFound) {
		t.Fatalf("delete of a deleted group: %+v, %v", r, err)
	}
	if dg := describe(t, adm, "adm-g"); dg.State != "Dead" {
		t.Fatalf("a deleted group described: %+v", dg)
	}
	ts = nil
	ts.Add("other", 1)
	if _, err := adm.DeleteOffsets(ctx, "adm-g", ts); !errors.Is(err, kerr.GroupIDNotFound) {
		t.Fatalf("offset delete in a deleted group: %v", err)
	}
	if offs, err := adm.FetchOffsets(ctx, "adm-g"); err != nil || len(offs) != 0 {
		t.Fatalf("offsets of a deleted group: %+v, %v", offs, err)
	}
}

// TestGroupBadInput: Kafka's error codes for bad group names, unknown
// topics, offsets out of range, big metadata, stale generations, unknown
// members, bad session timeouts, transaction coordinators and fenced
// static members.
func TestGroupBadInput(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "bad", 2)
	pr := producer(t, d)
	produceN(t, pr, "bad", "x", 0, 10, 2)
	adm := kadm.NewClient(pr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := adm.FetchOffsets(ctx, "bad group!"); !errors.Is(err, kerr.InvalidGroupID) {
		t.Fatalf("offsets of a bad group name: %v", err)
	}
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorType, fc.CoordinatorKeys = 1, []string{"txn"}
	if r, err := fc.RequestWith(ctx, pr); err != nil || r.Coordinators[0].ErrorCode != kerr.InvalidRequest.Code || r.Coordinators[0].ErrorMessage == nil {
		t.Fatalf("transaction coordinator: %+v %v", r, err)
	}

	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: "nope", Partition: 0, At: 0, LeaderEpoch: -1})
	os.Add(kadm.Offset{Topic: "bad", Partition: 7, At: 0, LeaderEpoch: -1})
	os.Add(kadm.Offset{Topic: "bad", Partition: 0, At: 6, LeaderEpoch: -1})
	os.Add(kadm.Offset{Topic: "bad", Partition: 1, At: 2, LeaderEpoch: -1, Metadata: strings.Repeat("m", groups.MaxCommitMetadata+1)})
	r, err := adm.CommitOffsets(ctx, "bad-g", os)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		topic string
		p     int32
		want  error
	}{{"nope", 0, kerr.UnknownTopicOrPartition}, {"bad", 7, kerr.UnknownTopicOrPartition}, {"bad", 0, kerr.OffsetOutOfRange}, {"bad", 1, kerr.OffsetMetadataTooLarge}} {
		if o, _ := r.Lookup(c.topic, c.p); !errors.Is(o.Err, c.want) {
			t.Errorf("commit of %s/%d: %v, want %v", c.topic, c.p, o.Err, c.want)
		}
	}

	if resp := joinRaw(ctx, t, pr, "bad-g", nil, 1000, "bad"); resp.ErrorCode != kerr.InvalidSessionTimeout.Code {
		t.Fatalf("join with a 1 s session: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	j := joinRaw(ctx, t, pr, "bad-g", nil, 6000, "bad")
	if j.ErrorCode != 0 {
		t.Fatalf("join: %v", kerr.ErrorForCode(j.ErrorCode))
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation = "bad-g", j.MemberID, j.Generation
	a := kmsg.NewSyncGroupRequestGroupAssignment()
	a.MemberID, a.MemberAssignment = j.MemberID, []byte{0, 0, 0, 0, 0, 0, 0, 0}
	sync.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{a}
	if sr, err := sync.RequestWith(ctx, pr); err != nil || sr.ErrorCode != 0 || len(sr.MemberAssignment) != 8 {
		t.Fatalf("sync: %+v %v", sr, err)
	}
	hb := func(member string, gen int32) error {
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = "bad-g", member, gen
		resp, err := req.RequestWith(ctx, pr)
		if err != nil {
			t.Fatal(err)
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}
	if err := hb(j.MemberID, j.Generation); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	if err := hb(j.MemberID, j.Generation+1); !errors.Is(err, kerr.IllegalGeneration) {
		t.Fatalf("heartbeat of a stale generation: %v", err)
	}
	if err := hb("who", j.Generation); !errors.Is(err, kerr.UnknownMemberID) {
		t.Fatalf("heartbeat of an unknown member: %v", err)
	}
	commit := func(member string, gen int32) error {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.MemberID, req.Generation = "bad-g", member, gen
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = "bad"
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = 0, 1
		rt.Partitions = []kmsg.OffsetCommitRequestTopicPartition{rp}
		req.Topics = []kmsg.OffsetCommitRequestTopic{rt}
		resp, err := req.RequestWith(ctx, pr)
		if err != nil {
			t.Fatal(err)
		}
		return kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode)
	}
	if err := commit(j.MemberID, j.Generation); err != nil {
		t.Fatalf("commit of the member: %v", err)
	}
	if err := commit(j.MemberID, j.Generation-1); !errors.Is(err, kerr.IllegalGeneration) {
		t.Fatalf("commit of a stale generation: %v", err)
	}
	if err := commit("who", j.Generation); !errors.Is(err, kerr.UnknownMemberID) {
		t.Fatalf("commit of an unknown member: %v", err)
	}
	if err := commit("", -1); !errors.Is(err, kerr.UnknownMemberID) {
		t.Fatalf("simple commit into an active group: %v", err)
	}
	sync.MemberID = "who"
	if sr, err := sync.RequestWith(ctx, pr); err != nil || sr.ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("sync of an unknown member: %+v %v", sr, err)
	}

	// Static membership: the same instance id rejoining fences the old
	// member id, without a rebalance.
	inst := "instance-1"
	s1 := joinRaw(ctx, t, pr, "static-g", &inst, 6000, "bad")
	if s1.ErrorCode != 0 {
		t.Fatalf("static join: %v", kerr.ErrorForCode(s1.ErrorCode))
	}
	sync = kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation, sync.InstanceID = "static-g", s1.MemberID, s1.Generation, &inst
	if sr, err := sync.RequestWith(ctx, pr); err != nil || sr.ErrorCode != 0 {
		t.Fatalf("static sync: %+v %v", sr, err)
	}
	s2 := joinRaw(ctx, t, pr, "static-g", &inst, 6000, "bad")
	if s2.ErrorCode != 0 || s2.MemberID == s1.MemberID || s2.Generation != s1.Generation || !s2.SkipAssignment {
		t.Fatalf("static rejoin: %+v (first %s gen %d)", s2, s1.MemberID, s1.Generation)
	}
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group, req.MemberID, req.Generation, req.InstanceID = "static-g", s1.MemberID, s1.Generation, &inst
	if resp, err := req.RequestWith(ctx, pr); err != nil || resp.ErrorCode != kerr.FencedInstanceID.Code {
		t.Fatalf("heartbeat of the replaced static member: %+v %v", resp, err)
	}
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group = "static-g"
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.InstanceID = &inst
	leave.Members = []kmsg.LeaveGroupRequestMember{lm, {MemberID: "who"}}
	lr, err := leave.RequestWith(ctx, pr)
	if err != nil || lr.ErrorCode != 0 || lr.Members[0].ErrorCode != 0 || lr.Members[0].MemberID != s2.MemberID || lr.Members[1].ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("leave by instance id: %+v %v", lr, err)
	}
}

// TestCoordinatorFailover: two nodes; the node coordinating a group shuts
// down while a member consumes; the member finds the other node, rejoins
// there and continues from its committed offsets: no record is lost. The
// second half is produced once the member rejoined (a fetch re-reading,
// on the survivor, records written before the other node stopped is not
// what this test is about).
func TestCoordinatorFailover(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if _, err := nodes[0].Meta().CreateTopic(ctx, metadata.Topic{Name: "fo", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	all := seeds(nodes...)
	pr, err := kgo.NewClient(kgo.SeedBrokers(all...), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	adm := kadm.NewClient(pr)
	// A group coordinated by node 0.
	n0 := brokerIDOf(t, adm, nodes[0].KafkaAddr())
	var group string
	for i := 0; group == ""; i++ {
		g := fmt.Sprintf("fo-%d", i)
		fc := adm.FindGroupCoordinators(ctx, g)
		r, ok := fc[g]
		if !ok || r.Err != nil {
			t.Fatalf("find coordinator: %+v", fc)
		}
		if r.NodeID == n0 {
			group = g
		}
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(all...), kgo.RequestTimeoutOverhead(5 * time.Second)}, groupOpts(group, "fo")...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tl := newTally()
	stop := consume(cl, "m", tl, false)
	defer stop()
	produceN(t, pr, "fo", "f", 0, 400, 4)
	waitFor(t, 30*time.Second, "the first 400 records", func() bool { return tl.count() >= 400 })
	start := time.Now()
	if err := nodes[0].Shutdown(ctx); err != nil {
		t.Logf("shutdown: %v", err)
	}
	// The member rejoined on the survivor: its coordinator holds the
	// group's marker (kgo's admin requests would still try the coordinator
	// they cached, node 0, for a while).
	vg := groups.New(nodes[1].Meta())
	waitFor(t, 60*time.Second, "the member rejoined on the survivor", func() bool {
		st, err := vg.State(ctx, group)
		return err == nil && len(st.Members) == 1 && st.Members[0].ID == groups.KafkaMemberID && st.Members[0].Node == "n1"
	})
	t.Logf("the member rejoined on the survivor %v after the coordinator stopped", time.Since(start).Round(100*time.Millisecond))
	produceN(t, pr, "fo", "f", 400, 400, 4)
	waitFor(t, 60*time.Second, "the next 400 records", func() bool { return tl.count() >= 800 })
	if dups := tl.check(t, "f", 800, false); dups > 0 {
		t.Logf("%d records consumed twice (consumed, but not committed before the coordinator stopped)", dups)
	}
	sadm := kadm.NewClient(newSurvivorClient(t, nodes[1].KafkaAddr()))
	waitFor(t, 30*time.Second, "the commits on the survivor", func() bool {
		offs, err := sadm.FetchOffsets(ctx, group)
		if err != nil {
			return false
		}
		for p := range int32(4) {
			if o, ok := offs.Lookup("fo", p); !ok || o.At != 200 {
				return false
			}
		}
		return true
	})
}

// newSurvivorClient is a client of one node only.
func newSurvivorClient(t testing.TB, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequestTimeoutOverhead(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// brokerIDOf is the broker id kadm lists for a Kafka address.
func brokerIDOf(t testing.TB, adm *kadm.Client, addr string) int32 {
	t.Helper()
	bs, err := adm.ListBrokers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if fmt.Sprintf("%s:%d", b.Host, b.Port) == addr {
			return b.NodeID
		}
	}
	ids := make([]string, 0, len(bs))
	for _, b := range bs {
		ids = append(ids, fmt.Sprintf("%d=%s:%d", b.NodeID, b.Host, b.Port))
	}
	sort.Strings(ids)
	t.Fatalf("no broker at %s among %v", addr, ids)
	return 0
}

// TestGroupSessionExpiry: a member that stops heartbeating leaves the
// group after its session timeout, and a rebalance waiting for it to
// rejoin completes then, without it.
func TestGroupSessionExpiry(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "exp", 2)
	pr := producer(t, d)
	produceN(t, pr, "exp", "e", 0, 20, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	silent := joinRaw(ctx, t, pr, "exp-g", nil, 6000, "exp")
	if silent.ErrorCode != 0 {
		t.Fatalf("join: %v", kerr.ErrorForCode(silent.ErrorCode))
	}
	start := time.Now()
	cl := newClient(t, d, groupOpts("exp-g", "exp")...)
	tl := newTally()
	stop := consume(cl, "m", tl, false)
	defer stop()
	assigned := stableWith(t, kadm.NewClient(pr), "exp-g", 1)
	waited := time.Since(start)
	waitFor(t, 20*time.Second, "20 records", func() bool { return tl.count() >= 20 })
	tl.check(t, "e", 20, true)
	if _, ok := assigned[silent.MemberID]; ok || waited < 5*time.Second {
		t.Fatalf("after %v the group is %v; want the silent member out after its 6 s session", waited, assigned)
	}
	t.Logf("the silent member was out after %v", waited.Round(100*time.Millisecond))
}
