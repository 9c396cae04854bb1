package node_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
)

// h2c is an HTTP/2 cleartext client: server streams need one.
var h2c = sdk.NewHTTPClient()

func groupClient(addr string) varvev1connect.GroupServiceClient {
	return varvev1connect.NewGroupServiceClient(h2c, addr)
}

// member is one JoinGroup stream, read in the background.
type member struct {
	cancel context.CancelFunc
	gens   chan *varvev1.JoinGroupResponse
	done   chan error
}

func joinStream(t *testing.T, g varvev1connect.GroupServiceClient, req *varvev1.JoinGroupRequest) *member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{cancel: cancel, gens: make(chan *varvev1.JoinGroupResponse, 64), done: make(chan error, 1)}
	stream, err := g.JoinGroup(ctx, connect.NewRequest(req))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer stream.Close()
		for stream.Receive() {
			m.gens <- stream.Msg()
		}
		m.done <- stream.Err()
	}()
	t.Cleanup(cancel)
	return m
}

// waitMembers returns the first generation the member sees with n members.
func (m *member) waitMembers(t *testing.T, n int32) *varvev1.JoinGroupResponse {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case g := <-m.gens:
			if g.GetMembers() == n {
				return g
			}
		case err := <-m.done:
			t.Fatalf("session ended waiting for %d members: %v", n, err)
		case <-timeout:
			t.Fatalf("no generation with %d members", n)
		}
	}
}

func count(tps []*varvev1.TopicPartitions) int {
	n := 0
	for _, tp := range tps {
		n += len(tp.GetPartitions())
	}
	return n
}

func reasonOf(err error) string { return sdk.GroupReason(err) }

// Two nodes on one etcd: members on either learn each generation from
// their stream, a member whose stream closes leaves at once, and commits
// are fenced by generation and membership.
func TestGroupSessionsAcrossNodes(t *testing.T) {
	a := startNode(t, nil)
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = a.Meta().Endpoints()
	cfg.Store = "fs:" + filepath.Join(a.dir, "objects")
	b, err := node.New(context.Background(), cfg, node.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	createTopic(t, a.c, "events", 6)
	ctx := context.Background()
	if _, err := a.c.produce.Produce(ctx, connect.NewRequest(&varvev1.ProduceRequest{Topic: "events", Records: []*varvev1.ProduceRecord{
		{Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte("x")}}, {Partition: proto.Int32(0), Record: &varvev1.Record{Value: []byte("y")}},
	}})); err != nil {
		t.Fatal(err)
	}
	ga, gb := groupClient(a.Addr()), groupClient(b.Addr())
	req := &varvev1.JoinGroupRequest{Group: "g", Topics: []string{"events"}, ClientId: "test"}
	m1 := joinStream(t, ga, req)
	first := m1.waitMembers(t, 1)
	if count(first.GetAssignment()) != 6 {
		t.Fatalf("first member: %v", first)
	}
	start := time.Now()
	m2 := joinStream(t, gb, req)
	g2 := m2.waitMembers(t, 2)
	g1 := m1.waitMembers(t, 2)
	t.Logf("join rebalance seen by both members after %v", time.Since(start))
	if g1.GetGeneration() != g2.GetGeneration() || count(g1.GetAssignment()) != 3 || count(g2.GetAssignment()) != 3 || count(g1.GetRevoked()) != 3 {
		t.Fatalf("after join: %v / %v", g1, g2)
	}

	// Whoever owns partition 0 commits offset 2 through the other node.
	owner, ownerGen := g1, g1
	for _, tp := range g2.GetAssignment() {
		for _, p := range tp.GetPartitions() {
			if p == 0 {
				owner, ownerGen = g2, g2
			}
		}
	}
	commit := func(gc varvev1connect.GroupServiceClient, member string, gen int64, off int64) error {
		_, err := gc.CommitOffsets(ctx, connect.NewRequest(&varvev1.CommitOffsetsRequest{
			Group: "g", MemberId: member, Generation: gen,
			Offsets: []*varvev1.OffsetCommit{{Topic: "events", Partition: 0, Offset: off}},
		}))
		return err
	}
	if err := commit(gb, owner.GetMemberId(), ownerGen.GetGeneration(), 2); err != nil {
		t.Fatal(err)
	}
	desc, err := ga.DescribeGroup(ctx, connect.NewRequest(&varvev1.DescribeGroupRequest{Group: "g"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(desc.Msg.GetMembers()) != 2 || desc.Msg.GetSummary().GetState() != "stable" {
		t.Fatalf("describe: %v", desc.Msg)
	}
	for _, p := range desc.Msg.GetPartitions() {
		want := int64(0)
		if p.GetPartition() == 0 {
			if p.GetCommittedOffset() != 2 || p.GetEndOffset() != 2 {
				t.Fatalf("partition 0: %v", p)
			}
		} else if p.GetCommittedOffset() != -1 || p.GetLag() != want || p.GetMemberId() == "" {
			t.Fatalf("partition %d: %v", p.GetPartition(), p)
		}
	}

	// Lag is exported; partition 0 is caught up.
	resp, err := http.Get(a.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `varve_group_lag{group="g",`) {
		t.Fatalf("no varve_group_lag in /metrics")
	}

	before := desc.Msg
	bad := []struct {
		name   string
		call   func() error
		code   connect.Code
		reason string
	}{
		{"describe unknown group", func() error {
			_, err := ga.DescribeGroup(ctx, connect.NewRequest(&varvev1.DescribeGroupRequest{Group: "nope"}))
			return err
		}, connect.CodeNotFound, "GROUP_NOT_FOUND"},
		{"delete unknown group", func() error {
			_, err := ga.DeleteGroup(ctx, connect.NewRequest(&varvev1.DeleteGroupRequest{Group: "nope"}))
			return err
		}, connect.CodeNotFound, "GROUP_NOT_FOUND"},
		{"fetch committed of unknown group", func() error {
			_, err := ga.FetchCommitted(ctx, connect.NewRequest(&varvev1.FetchCommittedRequest{Group: "nope"}))
			return err
		}, connect.CodeNotFound, "GROUP_NOT_FOUND"},
		{"commit with a stale generation", func() error {
			return commit(ga, owner.GetMemberId(), first.GetGeneration(), 2)
		}, connect.CodeFailedPrecondition, "STALE_GENERATION"},
		{"commit as an unknown member", func() error {
			return commit(ga, "m-zombie", ownerGen.GetGeneration(), 2)
		}, connect.CodeFailedPrecondition, "UNKNOWN_MEMBER"},
		{"commit backwards", func() error {
			return commit(ga, owner.GetMemberId(), ownerGen.GetGeneration(), 1)
		}, connect.CodeFailedPrecondition, "OFFSET_REGRESS"},
		{"commit past the end", func() error {
			return commit(ga, owner.GetMemberId(), ownerGen.GetGeneration(), 3)
		}, connect.CodeInvalidArgument, ""},
		{"reset an active group", func() error {
			_, err := ga.ResetOffsets(ctx, connect.NewRequest(&varvev1.ResetOffsetsRequest{Group: "g", Topic: "events", Spec: varvev1.ResetSpec_RESET_SPEC_EARLIEST}))
			return err
		}, connect.CodeFailedPrecondition, "GROUP_ACTIVE"},
		{"reset without a spec", func() error {
			_, err := ga.ResetOffsets(ctx, connect.NewRequest(&varvev1.ResetOffsetsRequest{Group: "g", Topic: "events"}))
			return err
		}, connect.CodeInvalidArgument, ""},
		{"reset an unknown topic", func() error {
			_, err := ga.ResetOffsets(ctx, connect.NewRequest(&varvev1.ResetOffsetsRequest{Group: "g", Topic: "nope", Spec: varvev1.ResetSpec_RESET_SPEC_LATEST}))
			return err
		}, connect.CodeNotFound, ""},
		{"delete an active group", func() error {
			_, err := ga.DeleteGroup(ctx, connect.NewRequest(&varvev1.DeleteGroupRequest{Group: "g"}))
			return err
		}, connect.CodeFailedPrecondition, "GROUP_ACTIVE"},
		{"heartbeat as an unknown member", func() error {
			_, err := ga.Heartbeat(ctx, connect.NewRequest(&varvev1.HeartbeatRequest{Group: "g", MemberId: "m-zombie"}))
			return err
		}, connect.CodeFailedPrecondition, "UNKNOWN_MEMBER"},
		{"join with another strategy", func() error {
			s, err := ga.JoinGroup(ctx, connect.NewRequest(&varvev1.JoinGroupRequest{Group: "g", Topics: []string{"events"}, Strategy: "range"}))
			if err != nil {
				return err
			}
			defer s.Close()
			s.Receive()
			return s.Err()
		}, connect.CodeFailedPrecondition, "INCONSISTENT_STRATEGY"},
		{"join an unknown topic", func() error {
			s, err := ga.JoinGroup(ctx, connect.NewRequest(&varvev1.JoinGroupRequest{Group: "g", Topics: []string{"nope"}}))
			if err != nil {
				return err
			}
			defer s.Close()
			s.Receive()
			return s.Err()
		}, connect.CodeNotFound, ""},
		{"join a bad group name", func() error {
			s, err := ga.JoinGroup(ctx, connect.NewRequest(&varvev1.JoinGroupRequest{Group: "a b", Topics: []string{"events"}}))
			if err != nil {
				return err
			}
			defer s.Close()
			s.Receive()
			return s.Err()
		}, connect.CodeInvalidArgument, ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if connect.CodeOf(err) != tc.code || reasonOf(err) != tc.reason {
				t.Fatalf("got %v (reason %q), want %v %q", err, reasonOf(err), tc.code, tc.reason)
			}
			after, err := ga.DescribeGroup(ctx, connect.NewRequest(&varvev1.DescribeGroupRequest{Group: "g"}))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(before, after.Msg) {
				t.Fatalf("group changed:\n%v\n%v", before, after.Msg)
			}
		})
	}

	// The member on node a closes its stream: m2 gets everything at once,
	// and m1's old id is a zombie.
	start = time.Now()
	m1.cancel()
	solo := m2.waitMembers(t, 1)
	t.Logf("leave rebalance seen after %v", time.Since(start))
	if count(solo.GetAssignment()) != 6 {
		t.Fatalf("after leave: %v", solo)
	}
	if err := commit(ga, g1.GetMemberId(), solo.GetGeneration(), 2); reasonOf(err) != "UNKNOWN_MEMBER" {
		t.Fatalf("zombie commit: %v", err)
	}
	m2.cancel()
	if !testenv.EventuallyEvery(10*time.Second, 20*time.Millisecond, func() bool {
		d, err := ga.DescribeGroup(ctx, connect.NewRequest(&varvev1.DescribeGroupRequest{Group: "g"}))
		return err == nil && d.Msg.GetSummary().GetState() == "empty"
	}) {
		t.Fatal("group not empty after both left")
	}
	reset, err := ga.ResetOffsets(ctx, connect.NewRequest(&varvev1.ResetOffsetsRequest{Group: "g", Topic: "events", Partitions: []int32{0}, Spec: varvev1.ResetSpec_RESET_SPEC_EARLIEST}))
	if err != nil || len(reset.Msg.GetOffsets()) != 1 || reset.Msg.GetOffsets()[0].GetOffset() != 0 {
		t.Fatalf("reset: %v %v", reset, err)
	}
	list, err := gb.ListGroups(ctx, connect.NewRequest(&varvev1.ListGroupsRequest{}))
	if err != nil || len(list.Msg.GetGroups()) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := gb.DeleteGroup(ctx, connect.NewRequest(&varvev1.DeleteGroupRequest{Group: "g"})); err != nil {
		t.Fatal(err)
	}
	if _, err := gb.DescribeGroup(ctx, connect.NewRequest(&varvev1.DescribeGroupRequest{Group: "g"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("describe after delete: %v", err)
	}
}

// TestLeaveGroupEndsTheStreamCleanly: a member that leaves (LeaveGroup,
// through its own node or another) sees its JoinGroup stream end without
// an error, so a graceful leave is not counted as a failed request; a
// member whose session expires still gets UNKNOWN_MEMBER.
func TestLeaveGroupEndsTheStreamCleanly(t *testing.T) {
	a := startNode(t, nil)
	cfg := node.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = a.Meta().Endpoints()
	cfg.Store = "fs:" + filepath.Join(a.dir, "objects")
	b, err := node.New(context.Background(), cfg, node.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown(context.Background()) })
	createTopic(t, a.c, "leave", 2)
	ga, gb := groupClient(a.Addr()), groupClient(b.Addr())
	for _, via := range []struct {
		name string
		g    varvev1connect.GroupServiceClient
	}{{"same node", ga}, {"other node", gb}} {
		m := joinStream(t, ga, &varvev1.JoinGroupRequest{Group: "gl", Topics: []string{"leave"}, ClientId: "test"})
		first := m.waitMembers(t, 1)
		if _, err := via.g.LeaveGroup(context.Background(), connect.NewRequest(&varvev1.LeaveGroupRequest{Group: "gl", MemberId: first.GetMemberId()})); err != nil {
			t.Fatalf("%s: leave: %v", via.name, err)
		}
		select {
		case err := <-m.done:
			if err != nil {
				t.Fatalf("%s: the JoinGroup stream of a member that left ended with %v, want no error", via.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the JoinGroup stream did not end after LeaveGroup", via.name)
		}
	}
}
