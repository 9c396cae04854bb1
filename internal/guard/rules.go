package guard

import (
	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/authz"
)

// Perm is one permission a call needs: an operation on a resource.
type Perm struct {
	R  authz.Resource
	Op authz.Operation
}

func (p Perm) String() string { return string(p.Op) + " on " + p.R.String() }

// Rule says what a procedure needs.
type Rule struct {
	// Need returns the permissions the request needs (all of them).
	Need func(req any) []Perm
	// Open: any authenticated principal may call (the answer may be
	// filtered by Filter).
	Open bool
	// AnyTopic: the principal must hold this operation on some topic
	// (InitProducer: a producer may produce somewhere).
	AnyTopic authz.Operation
	// Node: only nodes (the cluster secret) may call.
	Node bool
	// Audit: an administrative call, always written to the audit log.
	Audit bool
	// Filter removes from the answer what the principal may not describe.
	Filter func(allowed func(Perm) bool, resp any)
}

func topic(name string, op authz.Operation) Perm {
	return Perm{R: authz.Resource{Kind: authz.Topic, Name: name}, Op: op}
}

func group(name string, op authz.Operation) Perm {
	return Perm{R: authz.Resource{Kind: authz.Group, Name: name}, Op: op}
}

func cluster(op authz.Operation) Perm { return Perm{R: authz.Resource{Kind: authz.Cluster}, Op: op} }

func need[T any](f func(T) []Perm) func(any) []Perm {
	return func(req any) []Perm {
		m, ok := req.(T)
		if !ok {
			return nil
		}
		return f(m)
	}
}

func clusterAdmin(any) []Perm { return []Perm{cluster(authz.Admin)} }

// Rules maps every procedure of every Varve service to what it needs. A
// procedure missing here is refused (and a test fails).
var Rules = map[string]Rule{
	// Topics. Creating a topic is altering it: alter on topic:NAME.
	varvev1connect.TopicServiceCreateTopicProcedure: {Audit: true, Need: need(func(m *varvev1.CreateTopicRequest) []Perm {
		return []Perm{topic(m.GetName(), authz.Alter)}
	})},
	varvev1connect.TopicServiceListTopicsProcedure: {Open: true, Filter: func(allowed func(Perm) bool, resp any) {
		if m, ok := resp.(*varvev1.ListTopicsResponse); ok {
			kept := m.Topics[:0]
			for _, t := range m.Topics {
				if allowed(topic(t.GetName(), authz.Describe)) {
					kept = append(kept, t)
				}
			}
			m.Topics = kept
		}
	}},
	varvev1connect.TopicServiceDescribeTopicProcedure: {Need: need(func(m *varvev1.DescribeTopicRequest) []Perm {
		return []Perm{topic(m.GetName(), authz.Describe)}
	})},
	varvev1connect.TopicServiceDeleteTopicProcedure: {Audit: true, Need: need(func(m *varvev1.DeleteTopicRequest) []Perm {
		return []Perm{topic(m.GetName(), authz.Delete)}
	})},
	varvev1connect.TopicServiceUpdateTopicProcedure: {Audit: true, Need: need(func(m *varvev1.UpdateTopicRequest) []Perm {
		return []Perm{topic(m.GetName(), authz.Alter)}
	})},

	// Data.
	varvev1connect.ProduceServiceProduceProcedure: {Need: need(func(m *varvev1.ProduceRequest) []Perm {
		return []Perm{topic(m.GetTopic(), authz.Produce)}
	})},
	varvev1connect.ProduceServiceInitProducerProcedure: {AnyTopic: authz.Produce},
	varvev1connect.FetchServiceFetchProcedure: {Need: need(func(m *varvev1.FetchRequest) []Perm {
		return []Perm{topic(m.GetTopic(), authz.Consume)}
	})},
	varvev1connect.FetchServiceFetchPartitionsProcedure: {Need: need(func(m *varvev1.FetchPartitionsRequest) []Perm {
		return []Perm{topic(m.GetTopic(), authz.Consume)}
	})},
	varvev1connect.FetchServiceSubscribeProcedure: {Need: need(func(m *varvev1.SubscribeRequest) []Perm {
		return []Perm{topic(m.GetTopic(), authz.Consume)}
	})},
	varvev1connect.FetchServiceListOffsetsProcedure: {Need: need(func(m *varvev1.ListOffsetsRequest) []Perm {
		return []Perm{topic(m.GetTopic(), authz.Describe)}
	})},
	// Scans and Parquet export (a scan with the Parquet format).
	varvev1connect.ScanServiceScanProcedure: {Need: need(func(m *varvev1.ScanRequest) []Perm {
		return []Perm{topic(m.GetTopic(), authz.Consume)}
	})},

	// Consumer groups: consuming through a group needs consume on the
	// group and on its topics, as Kafka's READ on both.
	varvev1connect.GroupServiceJoinGroupProcedure: {Need: need(func(m *varvev1.JoinGroupRequest) []Perm {
		ps := []Perm{group(m.GetGroup(), authz.Consume)}
		for _, t := range m.GetTopics() {
			ps = append(ps, topic(t, authz.Consume))
		}
		return ps
	})},
	varvev1connect.GroupServiceHeartbeatProcedure: {Need: need(func(m *varvev1.HeartbeatRequest) []Perm {
		return []Perm{group(m.GetGroup(), authz.Consume)}
	})},
	varvev1connect.GroupServiceLeaveGroupProcedure: {Need: need(func(m *varvev1.LeaveGroupRequest) []Perm {
		return []Perm{group(m.GetGroup(), authz.Consume)}
	})},
	varvev1connect.GroupServiceCommitOffsetsProcedure: {Need: need(func(m *varvev1.CommitOffsetsRequest) []Perm {
		ps := []Perm{group(m.GetGroup(), authz.Consume)}
		for _, o := range m.GetOffsets() {
			ps = append(ps, topic(o.GetTopic(), authz.Consume))
		}
		return ps
	})},
	varvev1connect.GroupServiceFetchCommittedProcedure: {Need: need(func(m *varvev1.FetchCommittedRequest) []Perm {
		ps := []Perm{group(m.GetGroup(), authz.Describe)}
		for _, tp := range m.GetPartitions() {
			ps = append(ps, topic(tp.GetTopic(), authz.Describe))
		}
		return ps
	})},
	varvev1connect.GroupServiceListGroupsProcedure: {Open: true, Filter: func(allowed func(Perm) bool, resp any) {
		if m, ok := resp.(*varvev1.ListGroupsResponse); ok {
			kept := m.Groups[:0]
			for _, g := range m.Groups {
				if allowed(group(g.GetGroup(), authz.Describe)) {
					kept = append(kept, g)
				}
			}
			m.Groups = kept
		}
	}},
	varvev1connect.GroupServiceDescribeGroupProcedure: {Need: need(func(m *varvev1.DescribeGroupRequest) []Perm {
		return []Perm{group(m.GetGroup(), authz.Describe)}
	})},
	varvev1connect.GroupServiceResetOffsetsProcedure: {Audit: true, Need: need(func(m *varvev1.ResetOffsetsRequest) []Perm {
		return []Perm{group(m.GetGroup(), authz.Alter), topic(m.GetTopic(), authz.Describe)}
	})},
	varvev1connect.GroupServiceDeleteGroupProcedure: {Audit: true, Need: need(func(m *varvev1.DeleteGroupRequest) []Perm {
		return []Perm{group(m.GetGroup(), authz.Delete)}
	})},

	// Cluster administration.
	varvev1connect.AdminServicePauseCompactionProcedure:  {Audit: true, Need: clusterAdmin},
	varvev1connect.AdminServiceResumeCompactionProcedure: {Audit: true, Need: clusterAdmin},
	varvev1connect.AdminServiceCompactionStatusProcedure: {Need: func(any) []Perm { return []Perm{cluster(authz.Describe)} }},

	// Keys and ACLs: their service writes the audit lines, with the key or
	// ACL involved.
	varvev1connect.AccessServiceCreateAPIKeyProcedure: {Need: clusterAdmin},
	varvev1connect.AccessServiceListAPIKeysProcedure:  {Need: clusterAdmin},
	varvev1connect.AccessServiceRevokeAPIKeyProcedure: {Need: clusterAdmin},
	varvev1connect.AccessServiceAddACLProcedure:       {Audit: true, Need: clusterAdmin},
	varvev1connect.AccessServiceListACLsProcedure:     {Need: clusterAdmin},
	varvev1connect.AccessServiceRemoveACLProcedure:    {Audit: true, Need: clusterAdmin},
	varvev1connect.AccessServiceWhoAmIProcedure:       {Open: true},

	// Internal: node to node only, never with a client's credentials.
	varvev1connect.BlockServiceGetBlockProcedure:    {Node: true},
	varvev1connect.BlockServiceGetObjectProcedure:   {Node: true},
	varvev1connect.BlockServiceListOffsetsProcedure: {Node: true},
	// The sequencer (not yet served by nodes: issue 14) is node-to-node too.
	varvev1connect.SequencerServiceCommitProcedure:       {Node: true},
	varvev1connect.SequencerServiceReadProducerProcedure: {Node: true},
}
