package guard_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

const bootstrap = "bootstrap-admin-token-for-tests"

// procedures lists every RPC of every Varve service, from the generated
// descriptors: a new RPC shows up here without anyone listing it.
func procedures(t *testing.T) []string {
	t.Helper()
	var out []string
	protoregistry.GlobalFiles.RangeFilesByPackage("varve.v1", func(fd protoreflect.FileDescriptor) bool {
		if fd.Package() != "varve.v1" {
			return true
		}
		for i := range fd.Services().Len() {
			s := fd.Services().Get(i)
			for j := range s.Methods().Len() {
				out = append(out, fmt.Sprintf("/%s/%s", s.FullName(), s.Methods().Get(j).Name()))
			}
		}
		return true
	})
	// Make sure every generated file is linked in (the connect packages
	// import them all).
	_ = varvev1connect.AccessServiceName
	if len(out) < 30 {
		t.Fatalf("only %d procedures found: are the descriptors registered?", len(out))
	}
	slices.Sort(out)
	return out
}

// TestEveryProcedureHasARule fails when an RPC has no entry in the guard's
// table (the guard refuses such an RPC to everyone).
func TestEveryProcedureHasARule(t *testing.T) {
	for _, p := range procedures(t) {
		if _, ok := guard.Rules[p]; !ok {
			t.Errorf("%s has no rule in guard.Rules", p)
		}
	}
	for p := range guard.Rules {
		if !slices.Contains(procedures(t), p) {
			t.Errorf("guard.Rules has %s, which is no procedure", p)
		}
	}
}

// tokenTransport sends a bearer token (or nothing) over an h2c client.
type tokenTransport struct {
	token string
	base  http.RoundTripper
}

func (tt tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if tt.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+tt.token)
	}
	return tt.base.RoundTrip(r)
}

// svc holds a client of every service for one protocol and token.
type svc struct {
	topics  varvev1connect.TopicServiceClient
	produce varvev1connect.ProduceServiceClient
	fetch   varvev1connect.FetchServiceClient
	scan    varvev1connect.ScanServiceClient
	groups  varvev1connect.GroupServiceClient
	admin   varvev1connect.AdminServiceClient
	access  varvev1connect.AccessServiceClient
	blocks  varvev1connect.BlockServiceClient
}

var protocols = map[string][]connect.ClientOption{
	"connect": nil,
	"grpc":    {connect.WithGRPC()},
	"grpcweb": {connect.WithGRPCWeb()},
}

func newSvc(addr, token string, opts []connect.ClientOption) svc {
	hc := &http.Client{Transport: tokenTransport{token: token, base: sdk.NewHTTPClient().Transport}}
	return svc{
		topics:  varvev1connect.NewTopicServiceClient(hc, addr, opts...),
		produce: varvev1connect.NewProduceServiceClient(hc, addr, opts...),
		fetch:   varvev1connect.NewFetchServiceClient(hc, addr, opts...),
		scan:    varvev1connect.NewScanServiceClient(hc, addr, opts...),
		groups:  varvev1connect.NewGroupServiceClient(hc, addr, opts...),
		admin:   varvev1connect.NewAdminServiceClient(hc, addr, opts...),
		access:  varvev1connect.NewAccessServiceClient(hc, addr, opts...),
		blocks:  varvev1connect.NewBlockServiceClient(hc, addr, opts...),
	}
}

func req[T any](m *T) *connect.Request[T] { return connect.NewRequest(m) }

// firstOf receives a stream's first message.
func firstOf[T any](s *connect.ServerStreamForClient[T], err error) error {
	if err != nil {
		return err
	}
	defer s.Close()
	if s.Receive() {
		return nil
	}
	if s.Err() != nil {
		return s.Err()
	}
	return errors.New("stream ended without a message")
}

// rpcCase is one procedure: the call (with names suffixed for the
// protocol) and the ACLs a principal needs for it.
type rpcCase struct {
	acls []string // "RESOURCE OPERATION"
	call func(ctx context.Context, c svc, sfx string) error
	// ok is the answer of a permitted call other than success, for calls
	// the guard lets through to a handler that refuses them for their own
	// reason (a heartbeat of no member).
	ok connect.Code
	// open: any authenticated principal may call (answers are filtered).
	open bool
	// mutates: the permitted call changes state (done after the checks).
	mutates bool
	// anyTopic: allowed to whoever may produce to some topic (principal
	// "other" may), refused to the others.
	anyTopic bool
}

func rpcCases() map[string]rpcCase {
	v := varvev1connect.TopicServiceCreateTopicProcedure
	_ = v
	return map[string]rpcCase{
		varvev1connect.TopicServiceCreateTopicProcedure: {acls: []string{"topic:new-* alter"}, mutates: true, call: func(ctx context.Context, c svc, sfx string) error {
			_, err := c.topics.CreateTopic(ctx, req(&varvev1.CreateTopicRequest{Name: "new-" + sfx, Partitions: 1}))
			return err
		}},
		varvev1connect.TopicServiceListTopicsProcedure: {open: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.topics.ListTopics(ctx, req(&varvev1.ListTopicsRequest{}))
			return err
		}},
		varvev1connect.TopicServiceDescribeTopicProcedure: {acls: []string{"topic:t describe"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.topics.DescribeTopic(ctx, req(&varvev1.DescribeTopicRequest{Name: "t"}))
			return err
		}},
		varvev1connect.TopicServiceDeleteTopicProcedure: {acls: []string{"topic:doomed-* delete"}, mutates: true, call: func(ctx context.Context, c svc, sfx string) error {
			_, err := c.topics.DeleteTopic(ctx, req(&varvev1.DeleteTopicRequest{Name: "doomed-" + sfx}))
			return err
		}},
		varvev1connect.TopicServiceUpdateTopicProcedure: {acls: []string{"topic:t alter"}, mutates: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.topics.UpdateTopic(ctx, req(&varvev1.UpdateTopicRequest{Name: "t", RetentionMs: proto.Int64(int64(48 * time.Hour / time.Millisecond))}))
			return err
		}},
		varvev1connect.ProduceServiceProduceProcedure: {acls: []string{"topic:t produce"}, mutates: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.produce.Produce(ctx, req(&varvev1.ProduceRequest{Topic: "t", Records: []*varvev1.ProduceRecord{{Record: &varvev1.Record{Value: []byte("x")}}}}))
			return err
		}},
		varvev1connect.ProduceServiceInitProducerProcedure: {acls: []string{"topic:t produce"}, anyTopic: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.produce.InitProducer(ctx, req(&varvev1.InitProducerRequest{}))
			return err
		}},
		varvev1connect.FetchServiceFetchProcedure: {acls: []string{"topic:t consume"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.fetch.Fetch(ctx, req(&varvev1.FetchRequest{Topic: "t", MaxBytes: 1 << 20}))
			return err
		}},
		varvev1connect.FetchServiceFetchPartitionsProcedure: {acls: []string{"topic:t consume"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.fetch.FetchPartitions(ctx, req(&varvev1.FetchPartitionsRequest{Topic: "t", Partitions: []*varvev1.FetchPartition{{Partition: 0}}, MaxBytes: 1 << 20}))
			return err
		}},
		varvev1connect.FetchServiceSubscribeProcedure: {acls: []string{"topic:t consume"}, call: func(ctx context.Context, c svc, _ string) error {
			return firstOf(c.fetch.Subscribe(ctx, req(&varvev1.SubscribeRequest{Topic: "t", MaxBytes: 1 << 20})))
		}},
		varvev1connect.FetchServiceListOffsetsProcedure: {acls: []string{"topic:t describe"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.fetch.ListOffsets(ctx, req(&varvev1.ListOffsetsRequest{Topic: "t", Spec: varvev1.OffsetSpec_OFFSET_SPEC_LATEST}))
			return err
		}},
		varvev1connect.ScanServiceScanProcedure: {acls: []string{"topic:t consume"}, call: func(ctx context.Context, c svc, _ string) error {
			return firstOf(c.scan.Scan(ctx, req(&varvev1.ScanRequest{Topic: "t"})))
		}},
		varvev1connect.GroupServiceJoinGroupProcedure: {acls: []string{"group:join-* consume", "topic:t consume"}, mutates: true, call: func(ctx context.Context, c svc, sfx string) error {
			return firstOf(c.groups.JoinGroup(ctx, req(&varvev1.JoinGroupRequest{Group: "join-" + sfx, Topics: []string{"t"}, SessionTimeoutMs: 1000})))
		}},
		varvev1connect.GroupServiceHeartbeatProcedure: {acls: []string{"group:g consume"}, ok: connect.CodeFailedPrecondition, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.groups.Heartbeat(ctx, req(&varvev1.HeartbeatRequest{Group: "g", MemberId: "nobody", Generation: 1}))
			return err
		}},
		varvev1connect.GroupServiceLeaveGroupProcedure: {acls: []string{"group:g consume"}, ok: connect.CodeFailedPrecondition, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.groups.LeaveGroup(ctx, req(&varvev1.LeaveGroupRequest{Group: "g", MemberId: "nobody"}))
			return err
		}},
		varvev1connect.GroupServiceCommitOffsetsProcedure: {acls: []string{"group:g consume", "topic:t consume"}, ok: connect.CodeFailedPrecondition, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.groups.CommitOffsets(ctx, req(&varvev1.CommitOffsetsRequest{Group: "g", MemberId: "nobody", Generation: 1,
				Offsets: []*varvev1.OffsetCommit{{Topic: "t", Partition: 0, Offset: 1}}}))
			return err
		}},
		varvev1connect.GroupServiceFetchCommittedProcedure: {acls: []string{"group:g describe"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.groups.FetchCommitted(ctx, req(&varvev1.FetchCommittedRequest{Group: "g"}))
			return err
		}},
		varvev1connect.GroupServiceListGroupsProcedure: {open: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.groups.ListGroups(ctx, req(&varvev1.ListGroupsRequest{}))
			return err
		}},
		varvev1connect.GroupServiceDescribeGroupProcedure: {acls: []string{"group:g describe"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.groups.DescribeGroup(ctx, req(&varvev1.DescribeGroupRequest{Group: "g"}))
			return err
		}},
		varvev1connect.GroupServiceResetOffsetsProcedure: {acls: []string{"group:g alter", "topic:t describe"}, mutates: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.groups.ResetOffsets(ctx, req(&varvev1.ResetOffsetsRequest{Group: "g", Topic: "t", Spec: varvev1.ResetSpec_RESET_SPEC_LATEST}))
			return err
		}},
		varvev1connect.GroupServiceDeleteGroupProcedure: {acls: []string{"group:dg-* delete"}, mutates: true, call: func(ctx context.Context, c svc, sfx string) error {
			_, err := c.groups.DeleteGroup(ctx, req(&varvev1.DeleteGroupRequest{Group: "dg-" + sfx}))
			return err
		}},
		varvev1connect.AdminServicePauseCompactionProcedure: {acls: []string{"cluster admin"}, mutates: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.admin.PauseCompaction(ctx, req(&varvev1.PauseCompactionRequest{}))
			return err
		}},
		varvev1connect.AdminServiceResumeCompactionProcedure: {acls: []string{"cluster admin"}, mutates: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.admin.ResumeCompaction(ctx, req(&varvev1.ResumeCompactionRequest{}))
			return err
		}},
		varvev1connect.AdminServiceCompactionStatusProcedure: {acls: []string{"cluster describe"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.admin.CompactionStatus(ctx, req(&varvev1.CompactionStatusRequest{}))
			return err
		}},
		varvev1connect.AccessServiceCreateAPIKeyProcedure: {acls: []string{"cluster admin"}, mutates: true, call: func(ctx context.Context, c svc, sfx string) error {
			_, err := c.access.CreateAPIKey(ctx, req(&varvev1.CreateAPIKeyRequest{Principal: "made-" + sfx}))
			return err
		}},
		varvev1connect.AccessServiceListAPIKeysProcedure: {acls: []string{"cluster admin"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.access.ListAPIKeys(ctx, req(&varvev1.ListAPIKeysRequest{}))
			return err
		}},
		varvev1connect.AccessServiceRevokeAPIKeyProcedure: {acls: []string{"cluster admin"}, ok: connect.CodeNotFound, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.access.RevokeAPIKey(ctx, req(&varvev1.RevokeAPIKeyRequest{Id: "0000000000000000"}))
			return err
		}},
		varvev1connect.AccessServiceAddACLProcedure: {acls: []string{"cluster admin"}, mutates: true, call: func(ctx context.Context, c svc, sfx string) error {
			_, err := c.access.AddACL(ctx, req(&varvev1.AddACLRequest{Acl: &varvev1.ACL{Principal: "added-" + sfx, Resource: "topic:t", Operation: "describe", Effect: "allow"}}))
			return err
		}},
		varvev1connect.AccessServiceListACLsProcedure: {acls: []string{"cluster admin"}, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.access.ListACLs(ctx, req(&varvev1.ListACLsRequest{}))
			return err
		}},
		varvev1connect.AccessServiceRemoveACLProcedure: {acls: []string{"cluster admin"}, ok: connect.CodeNotFound, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.access.RemoveACL(ctx, req(&varvev1.RemoveACLRequest{Id: "0000000000000000"}))
			return err
		}},
		varvev1connect.AccessServiceWhoAmIProcedure: {open: true, call: func(ctx context.Context, c svc, _ string) error {
			_, err := c.access.WhoAmI(ctx, req(&varvev1.WhoAmIRequest{}))
			return err
		}},
	}
}

// state is what a refused call must not change.
type state struct {
	Topics  []string
	Offsets map[string][]int64 // topic -> next offset per partition
	Config  map[string]string  // topic -> config
	Groups  []string
	Commits map[string]string // group -> committed offsets
	ACLs    []admin.ACL
	Keys    []string
	Paused  bool
}

func snapshot(t *testing.T, a *admin.Client) state {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := state{Offsets: map[string][]int64{}, Config: map[string]string{}, Commits: map[string]string{}}
	ts, err := a.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range ts {
		s.Topics = append(s.Topics, tp.Name)
		d, err := a.DescribeTopic(ctx, tp.Name)
		if err != nil {
			t.Fatal(err)
		}
		s.Config[tp.Name] = fmt.Sprintf("%+v", d.Topic)
		for _, p := range d.Partitions {
			s.Offsets[tp.Name] = append(s.Offsets[tp.Name], p.NextOffset)
		}
	}
	gs, err := a.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		s.Groups = append(s.Groups, fmt.Sprintf("%s/%s/%d/%d", g.Group, g.State, g.Members, g.Generation))
		c, err := a.CommittedOffsets(ctx, g.Group)
		if err != nil {
			t.Fatal(err)
		}
		s.Commits[g.Group] = fmt.Sprint(c)
	}
	if s.ACLs, err = a.ListACLs(ctx, ""); err != nil {
		t.Fatal(err)
	}
	ks, err := a.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		s.Keys = append(s.Keys, k.ID+"/"+k.Principal)
	}
	st, err := a.CompactionStatus(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Paused = st.Paused
	return s
}

func (s state) String() string {
	return fmt.Sprintf("%+v", struct{ S any }{map[string]any{"topics": s.Topics, "offsets": s.Offsets, "groups": s.Groups, "commits": s.Commits, "acls": len(s.ACLs), "keys": s.Keys, "paused": s.Paused, "config": s.Config}})
}

// principal creates a key for name with the ACLs given ("RES OP") and
// waits until the node knows it (the key is written after the ACLs, so
// the node's watch has the ACLs once it accepts the key).
func principal(t *testing.T, a *admin.Client, addr, name string, acls ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, x := range acls {
		res, op, _ := strings.Cut(x, " ")
		if _, err := a.AddACL(ctx, admin.ACL{Principal: name, Resource: res, Operation: op}); err != nil {
			t.Fatal(err)
		}
	}
	_, tok, err := a.CreateAPIKey(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	waitKnown(t, addr, tok, name)
	return tok
}

// waitKnown waits until the node at addr accepts tok.
func waitKnown(t *testing.T, addr, tok, name string) {
	t.Helper()
	c := admin.New(addr, sdk.WithToken(tok))
	defer c.Close()
	var who string
	var err error
	if !testenv.Eventually(10*time.Second, func() bool {
		who, err = c.WhoAmI(context.Background())
		return err == nil
	}) || who != name {
		t.Fatalf("the node does not accept %s's key: %q, %v", name, who, err)
	}
}

// securedNode runs a node with auth token, a bootstrap admin key and the
// cluster secret; it returns the node and an admin client.
func securedNode(t *testing.T, endpoints []string, logs *logBuffer, mutate func(*node.Config)) (*node.Node, *admin.Client) {
	t.Helper()
	n := startNode(t, endpoints, nil, logs, func(c *node.Config) {
		c.Security.Auth = "token"
		c.Security.BootstrapToken = bootstrap
		c.Security.ClusterSecretFile = secretFile(t, "a-cluster-secret-of-some-length")
		c.Roles = append(c.Roles, node.RoleCompact)
		if mutate != nil {
			mutate(c)
		}
	})
	a := admin.New(n.Addr(), sdk.WithToken(bootstrap))
	t.Cleanup(a.Close)
	return n, a
}

// nodeOnly reports whether p is an internal, node-to-node procedure, which
// the BlockService tests cover (the sequencer's are not served yet).
func nodeOnly(p string) bool {
	switch p {
	case varvev1connect.BlockServiceGetBlockProcedure, varvev1connect.BlockServiceGetObjectProcedure, varvev1connect.BlockServiceListOffsetsProcedure,
		varvev1connect.SequencerServiceCommitProcedure,
		varvev1connect.SequencerServiceReadProducerProcedure:
		return true
	}
	return false
}

func TestEveryRPCIsAuthorized(t *testing.T) {
	logs := &logBuffer{}
	n, a := securedNode(t, nil, logs, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cases := rpcCases()
	for _, p := range procedures(t) {
		if _, ok := cases[p]; !ok && !nodeOnly(p) {
			t.Errorf("%s has no case in this test: add one", p)
		}
	}

	// Fixtures: topic t with records, group g with committed offsets, and
	// per protocol a topic and a group to delete.
	if _, err := a.CreateTopic(ctx, "t", 1, nil); err != nil {
		t.Fatal(err)
	}
	cl := a.Client()
	if _, err := cl.Produce(ctx, "t", []sdk.Record{{Topic: "t", Value: []byte("a")}, {Topic: "t", Value: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ResetGroupOffsets(ctx, "g", "t", admin.ResetToEarliest()); err != nil {
		t.Fatal(err)
	}
	for proto := range protocols {
		if _, err := a.CreateTopic(ctx, "doomed-"+proto, 1, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ResetGroupOffsets(ctx, "dg-"+proto, "t", admin.ResetToEarliest()); err != nil {
			t.Fatal(err)
		}
	}
	// One principal with no permission at all, and one with every
	// permission on other resources (so prefixes and kinds are checked).
	nobody := principal(t, a, n.Addr(), "nobody")
	other := principal(t, a, n.Addr(), "other", "topic:other produce", "topic:other consume", "topic:other alter", "topic:other delete",
		"group:other consume", "group:other alter", "group:other delete", "topic:t-* consume")

	tokens := map[string]string{}
	for p, c := range cases {
		if !c.open {
			name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(p, "/varve.v1."), "/", "-"))
			tokens[p] = principal(t, a, n.Addr(), name, c.acls...)
		}
	}

	before := snapshot(t, a)
	for proto, popts := range protocols {
		anon := newSvc(n.Addr(), "", popts)
		bad := newSvc(n.Addr(), "vk_0000000000000000_00", popts)
		denied := []svc{newSvc(n.Addr(), nobody, popts), newSvc(n.Addr(), other, popts)}
		for _, p := range procedures(t) {
			c, ok := cases[p]
			if !ok {
				continue
			}
			t.Run(proto+p, func(t *testing.T) {
				for what, s := range map[string]svc{"no credentials": anon, "unknown key": bad} {
					if err := c.call(ctx, s, proto); connect.CodeOf(err) != connect.CodeUnauthenticated {
						t.Errorf("%s: got %v, want unauthenticated", what, err)
					}
				}
				if c.open {
					return
				}
				for i, s := range denied {
					if c.anyTopic && i == 1 {
						continue // other produces to topic:other
					}
					err := c.call(ctx, s, proto)
					if connect.CodeOf(err) != connect.CodePermissionDenied {
						t.Errorf("principal %d without the permission: got %v, want permission_denied", i, err)
					} else if !strings.Contains(err.Error(), "lacks") {
						t.Errorf("denial does not name the missing permission: %v", err)
					}
				}
			})
		}
	}
	after := snapshot(t, a)
	if before.String() != after.String() {
		t.Fatalf("refused calls changed the cluster:\nbefore %s\nafter  %s", before, after)
	}
	if !strings.Contains(logs.String(), `"principal":"nobody"`) || !strings.Contains(logs.String(), "audit: call refused") {
		t.Errorf("refused calls are not in the audit log")
	}

	// The permitted principal of each procedure succeeds (or gets the
	// handler's own answer), over every protocol.
	for proto, popts := range protocols {
		for _, p := range procedures(t) {
			c, ok := cases[p]
			if !ok {
				continue
			}
			t.Run("permitted/"+proto+p, func(t *testing.T) {
				tok := tokens[p]
				if c.open {
					tok = nobody
				}
				err := c.call(ctx, newSvc(n.Addr(), tok, popts), proto)
				if err != nil && (c.ok == 0 || connect.CodeOf(err) != c.ok) {
					t.Fatalf("permitted call: %v", err)
				}
			})
		}
	}
	// Administration is in the audit log with its principal.
	for _, want := range [][]string{
		{`"msg":"audit: administration"`, `"principal":"topicservice-deletetopic"`, `"resources":"topic:doomed-grpc"`},
		{`"msg":"audit: api key created"`, `"principal":"accessservice-createapikey"`, `"for":"made-connect"`},
		{`"msg":"audit: acl added"`, `"principal":"accessservice-addacl"`, `"rule":"allow added-grpcweb describe on topic:t"`},
		{`"msg":"audit: administration"`, `"principal":"groupservice-deletegroup"`, `"resources":"group:dg-connect"`},
	} {
		if !hasLine(logs.String(), want...) {
			t.Errorf("audit log lacks %s in:\n%s", want, auditLines(logs.String()))
		}
	}
}

// TestListingsAreFiltered: ListTopics and ListGroups (and Flight's
// ListFlights) show only what the principal may describe.
func TestListingsAreFiltered(t *testing.T) {
	n, a := securedNode(t, nil, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{"pub-a", "pub-b", "secret"} {
		if _, err := a.CreateTopic(ctx, name, 1, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := a.ResetGroupOffsets(ctx, "g-"+name, name, admin.ResetToEarliest()); err != nil {
			t.Fatal(err)
		}
	}
	tok := principal(t, a, n.Addr(), "reader", "topic:pub-* consume", "group:g-pub-a describe")
	r := admin.New(n.Addr(), sdk.WithToken(tok))
	defer r.Close()
	ts, err := r.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range ts {
		names = append(names, x.Name)
	}
	if !slices.Equal(names, []string{"pub-a", "pub-b"}) {
		t.Fatalf("ListTopics = %v, want [pub-a pub-b]", names)
	}
	gs, err := r.ListGroups(ctx)
	if err != nil || len(gs) != 1 || gs[0].Group != "g-pub-a" {
		t.Fatalf("ListGroups = %+v, %v; want g-pub-a only", gs, err)
	}
	// Flight lists the same topics.
	fc, err := flight.NewClientWithMiddleware(n.FlightAddr(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	st, err := fc.ListFlights(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), &flight.Criteria{})
	if err != nil {
		t.Fatal(err)
	}
	var flights []string
	for {
		info, err := st.Recv()
		if err != nil {
			break
		}
		flights = append(flights, info.GetFlightDescriptor().GetPath()[0])
	}
	if !slices.Equal(flights, []string{"pub-a", "pub-b"}) {
		t.Fatalf("ListFlights = %v, want [pub-a pub-b]", flights)
	}
}

// TestFlightIsAuthorized: Flight's scans need consume on the topic.
func TestFlightIsAuthorized(t *testing.T) {
	n, a := securedNode(t, nil, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.CreateTopic(ctx, "t", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().Produce(ctx, "t", []sdk.Record{{Topic: "t", Value: []byte(`{"a":1}`)}}); err != nil {
		t.Fatal(err)
	}
	reader := principal(t, a, n.Addr(), "reader", "topic:t consume")
	nobody := principal(t, a, n.Addr(), "nobody")
	fc, err := flight.NewClientWithMiddleware(n.FlightAddr(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	with := func(tok string) context.Context {
		if tok == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	desc := &flight.FlightDescriptor{Type: flight.DescriptorPATH, Path: []string{"t"}}
	for _, tc := range []struct {
		name string
		tok  string
		want codes.Code
	}{{"no credentials", "", codes.Unauthenticated}, {"no permission", nobody, codes.PermissionDenied}, {"reader", reader, codes.OK}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := fc.GetFlightInfo(with(tc.tok), desc)
			if status.Code(err) != tc.want {
				t.Fatalf("GetFlightInfo: %v, want %v", err, tc.want)
			}
			_, err = fc.GetSchema(with(tc.tok), desc)
			if status.Code(err) != tc.want {
				t.Fatalf("GetSchema: %v, want %v", err, tc.want)
			}
		})
	}
	// A ticket planned for the reader cannot be redeemed by another.
	info, err := fc.GetFlightInfo(with(reader), desc)
	if err != nil {
		t.Fatal(err)
	}
	tk := info.GetEndpoint()[0].GetTicket()
	for tok, want := range map[string]codes.Code{"": codes.Unauthenticated, nobody: codes.PermissionDenied, reader: codes.OK} {
		st, err := fc.DoGet(with(tok), tk)
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != want {
			t.Errorf("DoGet with %q: %v, want %v", tok, err, want)
		}
	}
	// The methods Varve does not implement need admin first.
	la, err := fc.ListActions(with(nobody), &flight.Empty{})
	if err == nil {
		_, err = la.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ListActions of a principal without admin: %v, want permission denied", err)
	}
}

func auditLines(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "audit") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func hasLine(s string, parts ...string) bool {
	for _, l := range strings.Split(s, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			return true
		}
	}
	return false
}
