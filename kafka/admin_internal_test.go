package kafka

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
)

// aclSecurity decides with ACLs as the node's guard does (authz.Decide).
// The embedded interface stands for what the admin APIs do not call.
type aclSecurity struct {
	Security
	acls []authz.ACL
}

func (a aclSecurity) Allowed(id guard.Identity, r authz.Resource, op authz.Operation) bool {
	return authz.Decide(a.acls, id.Principal, r, op).Allowed
}

// adminServer is a Server with what the admin APIs use: metadata on a
// fresh etcd, its watched topics and sec.
func adminServer(t *testing.T, sec Security) (*Server, *metadata.Client) {
	t.Helper()
	ctx := context.Background()
	meta, err := metadata.Connect(ctx, metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	topics, err := meta.NewCache(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(topics.Close)
	return &Server{cfg: Config{NodeID: "n0", MaxRequestBytes: DefaultMaxRequestBytes}, d: Deps{Meta: meta, Topics: topics, Security: sec}, self: BrokerID("n0")}, meta
}

func allow(principal string, kind authz.Kind, name string, op authz.Operation) authz.ACL {
	return authz.ACL{Principal: principal, Kind: kind, Name: name, Operation: op, Effect: authz.Allow}
}

// TestAdminAuthorization: the admin APIs need what the TopicService's
// rules need (internal/guard/rules.go): alter on topic:NAME to create it,
// add partitions or alter its configs, delete on it to delete it,
// describe to describe its configs; broker configs need describe (read)
// or admin (alter) on the cluster. A refusal is TOPIC_ or
// CLUSTER_AUTHORIZATION_FAILED, comes before any other answer (a topic
// that exists or not is not told), and changes nothing.
func TestAdminAuthorization(t *testing.T) {
	sec := aclSecurity{acls: []authz.ACL{
		allow("alice", authz.Topic, "mine", authz.Alter),
		allow("alice", authz.Topic, "seen", authz.Describe),
		allow("alice", authz.Topic, "gone", authz.Delete),
		allow("bob", authz.Cluster, "", authz.Admin),
	}}
	s, meta := adminServer(t, sec)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range []string{"seen", "gone", "other"} {
		if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: n, Partitions: 2}); err != nil {
			t.Fatal(err)
		}
	}
	before := map[string]metadata.Topic{}
	for _, n := range []string{"seen", "other"} {
		before[n], _ = meta.GetTopic(ctx, n)
	}
	alice := &conn{s: s, id: guard.Identity{Principal: "alice"}}
	bob := &conn{s: s, id: guard.Identity{Principal: "bob"}}
	topicFail, clusterFail := kerr.TopicAuthorizationFailed, kerr.ClusterAuthorizationFailed
	check := func(what string, code int16, msg *string, want *kerr.Error) {
		t.Helper()
		var wantCode int16
		if want != nil {
			wantCode = want.Code
		}
		if code != wantCode {
			t.Errorf("%s: %v (%s); want %v", what, kerr.ErrorForCode(code), adminMsg(msg), want)
		}
	}

	// CreateTopics.
	creq := kmsg.NewPtrCreateTopicsRequest()
	creq.Version = 7
	for _, n := range []string{"mine", "seen", "new"} {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = n, 1, -1
		creq.Topics = append(creq.Topics, rt)
	}
	kr, err := handleCreateTopics(ctx, alice, creq)
	if err != nil {
		t.Fatal(err)
	}
	cr := kr.(*kmsg.CreateTopicsResponse)
	check("alice creates mine", cr.Topics[0].ErrorCode, cr.Topics[0].ErrorMessage, nil)
	check("alice creates seen (it exists)", cr.Topics[1].ErrorCode, cr.Topics[1].ErrorMessage, topicFail)
	check("alice creates new", cr.Topics[2].ErrorCode, cr.Topics[2].ErrorMessage, topicFail)

	// CreatePartitions.
	preq := kmsg.NewPtrCreatePartitionsRequest()
	preq.Version = 3
	for _, n := range []string{"seen", "mine"} {
		rt := kmsg.NewCreatePartitionsRequestTopic()
		rt.Topic, rt.Count = n, 3
		preq.Topics = append(preq.Topics, rt)
	}
	kr, _ = handleCreatePartitions(ctx, alice, preq)
	pr := kr.(*kmsg.CreatePartitionsResponse)
	check("alice grows seen", pr.Topics[0].ErrorCode, pr.Topics[0].ErrorMessage, topicFail)
	check("alice grows mine", pr.Topics[1].ErrorCode, pr.Topics[1].ErrorMessage, nil)

	// DescribeConfigs.
	dreq := kmsg.NewPtrDescribeConfigsRequest()
	dreq.Version = 4
	for _, r := range []struct {
		typ  kmsg.ConfigResourceType
		name string
	}{{kmsg.ConfigResourceTypeTopic, "other"}, {kmsg.ConfigResourceTypeTopic, "seen"}, {kmsg.ConfigResourceTypeTopic, "mine"}, {kmsg.ConfigResourceTypeBroker, ""}} {
		rr := kmsg.NewDescribeConfigsRequestResource()
		rr.ResourceType, rr.ResourceName = r.typ, r.name
		dreq.Resources = append(dreq.Resources, rr)
	}
	kr, _ = handleDescribeConfigs(ctx, alice, dreq)
	dr := kr.(*kmsg.DescribeConfigsResponse)
	check("alice describes other", dr.Resources[0].ErrorCode, dr.Resources[0].ErrorMessage, topicFail)
	check("alice describes seen", dr.Resources[1].ErrorCode, dr.Resources[1].ErrorMessage, nil)
	check("alice describes mine (alter implies describe)", dr.Resources[2].ErrorCode, dr.Resources[2].ErrorMessage, nil)
	check("alice describes the broker", dr.Resources[3].ErrorCode, dr.Resources[3].ErrorMessage, clusterFail)
	kr, _ = handleDescribeConfigs(ctx, bob, dreq)
	dr = kr.(*kmsg.DescribeConfigsResponse)
	check("bob (cluster admin) describes the broker", dr.Resources[3].ErrorCode, dr.Resources[3].ErrorMessage, nil)

	// IncrementalAlterConfigs and AlterConfigs.
	ireq := kmsg.NewPtrIncrementalAlterConfigsRequest()
	ireq.Version = 1
	for _, r := range []struct {
		typ  kmsg.ConfigResourceType
		name string
	}{{kmsg.ConfigResourceTypeTopic, "seen"}, {kmsg.ConfigResourceTypeTopic, "mine"}, {kmsg.ConfigResourceTypeBroker, ""}} {
		rr := kmsg.NewIncrementalAlterConfigsRequestResource()
		rr.ResourceType, rr.ResourceName = r.typ, r.name
		rc := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		rc.Name, rc.Value = "retention.ms", adminPtr("1000")
		if r.typ == kmsg.ConfigResourceTypeBroker {
			rc.Name = "log.retention.ms"
		}
		rr.Configs = append(rr.Configs, rc)
		ireq.Resources = append(ireq.Resources, rr)
	}
	kr, _ = handleIncrementalAlterConfigs(ctx, alice, ireq)
	ir := kr.(*kmsg.IncrementalAlterConfigsResponse)
	check("alice alters seen", ir.Resources[0].ErrorCode, ir.Resources[0].ErrorMessage, topicFail)
	check("alice alters mine", ir.Resources[1].ErrorCode, ir.Resources[1].ErrorMessage, nil)
	check("alice alters the broker", ir.Resources[2].ErrorCode, ir.Resources[2].ErrorMessage, clusterFail)
	ireq.Resources = ireq.Resources[2:]
	kr, _ = handleIncrementalAlterConfigs(ctx, bob, ireq)
	ir = kr.(*kmsg.IncrementalAlterConfigsResponse)
	check("bob alters the broker (read-only)", ir.Resources[0].ErrorCode, ir.Resources[0].ErrorMessage, kerr.InvalidRequest)

	areq := kmsg.NewPtrAlterConfigsRequest()
	areq.Version = 2
	rr := kmsg.NewAlterConfigsRequestResource()
	rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, "seen"
	areq.Resources = append(areq.Resources, rr)
	kr, _ = handleAlterConfigs(ctx, alice, areq)
	ar := kr.(*kmsg.AlterConfigsResponse)
	check("alice replaces seen's configs", ar.Resources[0].ErrorCode, ar.Resources[0].ErrorMessage, topicFail)

	// DeleteTopics: by name, and by the id of a topic alice may not
	// describe (its name is not told).
	other, _ := meta.GetTopic(ctx, "other")
	xreq := kmsg.NewPtrDeleteTopicsRequest()
	xreq.Version = 6
	for _, n := range []string{"seen", "never-was", "gone"} {
		rt := kmsg.NewDeleteTopicsRequestTopic()
		rt.Topic = adminPtr(n)
		xreq.Topics = append(xreq.Topics, rt)
	}
	byID := kmsg.NewDeleteTopicsRequestTopic()
	byID.TopicID = topicID(other)
	xreq.Topics = append(xreq.Topics, byID)
	kr, _ = handleDeleteTopics(ctx, alice, xreq)
	xr := kr.(*kmsg.DeleteTopicsResponse)
	check("alice deletes seen", xr.Topics[0].ErrorCode, xr.Topics[0].ErrorMessage, topicFail)
	check("alice deletes never-was (not told it does not exist)", xr.Topics[1].ErrorCode, xr.Topics[1].ErrorMessage, topicFail)
	check("alice deletes gone", xr.Topics[2].ErrorCode, xr.Topics[2].ErrorMessage, nil)
	check("alice deletes other by id", xr.Topics[3].ErrorCode, xr.Topics[3].ErrorMessage, topicFail)
	if xr.Topics[3].Topic != nil {
		t.Errorf("the refused delete by id named the topic %q", *xr.Topics[3].Topic)
	}

	// What was refused is as it was; what was allowed happened.
	for n, was := range before {
		if got, err := meta.GetTopic(ctx, n); err != nil || !reflect.DeepEqual(got, was) {
			t.Errorf("%s after refusals: %+v, %v; was %+v", n, got, err, was)
		}
	}
	if _, err := meta.GetTopic(ctx, "new"); err == nil {
		t.Error("new was created")
	}
	if _, err := meta.GetTopic(ctx, "gone"); err == nil {
		t.Error("gone was not deleted")
	}
	if mine, err := meta.GetTopic(ctx, "mine"); err != nil || mine.Partitions != 3 || mine.RetentionMs != 1000 {
		t.Errorf("mine: %+v, %v; want 3 partitions, retention.ms 1000", mine, err)
	}
}

func adminPtr[T any](v T) *T { return &v }

func adminMsg(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
