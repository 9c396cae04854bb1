package kafka

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata"
)

func init() {
	register(3, 0, 12, handleMetadata)
	register(60, 0, 1, handleDescribeCluster)
}

// timeoutOf is a request's timeout in milliseconds as a duration, at least
// one millisecond and at most five minutes.
func timeoutOf(ms int32) time.Duration {
	return min(max(time.Duration(ms)*time.Millisecond, time.Millisecond), 5*time.Minute)
}

// topicID is the Kafka topic id (a UUID) of a Varve topic: its id's first
// 16 bytes when it is hex, else zero (clients then use names).
func topicID(t metadata.Topic) [16]byte {
	var id [16]byte
	b, err := hex.DecodeString(t.ID)
	if err == nil && len(b) >= 16 {
		copy(id[:], b)
	}
	return id
}

func (c *conn) anyTopicAllowed(op authz.Operation) bool {
	if c.s.d.Security == nil || c.id.Super {
		return true
	}
	return c.s.d.Security.AnyAllowed(c.id, authz.Topic, op)
}

// handleMetadata lists the live Kafka nodes as brokers and names the node
// the client reached as every partition's leader (and only replica): any
// node takes writes and serves reads of any partition, so a client keeps
// one connection per node it bootstrapped through. Topics a principal may
// not describe are answered TOPIC_AUTHORIZATION_FAILED when asked for by
// name and left out of "all topics".
func handleMetadata(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.MetadataRequest)
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	bs := c.s.brokerList()
	for _, b := range bs {
		mb := kmsg.NewMetadataResponseBroker()
		mb.NodeID, mb.Host, mb.Port = b.id, b.host, b.port
		resp.Brokers = append(resp.Brokers, mb)
	}
	cid := c.s.cfg.ClusterID
	resp.ClusterID = &cid
	resp.ControllerID = c.s.self

	var topics []metadata.Topic
	if req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0) {
		for _, t := range c.s.d.Topics.Topics() {
			if c.allowed(authz.Topic, t.Name, authz.Describe) {
				topics = append(topics, t)
			}
		}
	} else {
		for _, rt := range req.Topics {
			name := ""
			if rt.Topic != nil {
				name = *rt.Topic
			}
			if name == "" {
				mt := kmsg.NewMetadataResponseTopic()
				mt.TopicID = rt.TopicID
				mt.ErrorCode = kerr.UnknownTopicID.Code
				resp.Topics = append(resp.Topics, mt)
				continue
			}
			if !c.allowed(authz.Topic, name, authz.Describe) {
				mt := kmsg.NewMetadataResponseTopic()
				mt.Topic = &name
				mt.ErrorCode = kerr.TopicAuthorizationFailed.Code
				resp.Topics = append(resp.Topics, mt)
				continue
			}
			t, ok := c.s.d.Topics.Topic(name)
			if !ok {
				// The watched cache may trail a topic just created
				// through another node: ask etcd before saying unknown.
				var err error
				t, err = c.s.d.Meta.GetTopic(ctx, name)
				if err != nil {
					mt := kmsg.NewMetadataResponseTopic()
					mt.Topic = &name
					mt.ErrorCode = errorCode(err)
					if metadata.ValidateTopicName(name) != nil {
						mt.ErrorCode = kerr.InvalidTopicException.Code
					}
					resp.Topics = append(resp.Topics, mt)
					continue
				}
			}
			topics = append(topics, t)
		}
	}
	for _, t := range topics {
		name := t.Name
		mt := kmsg.NewMetadataResponseTopic()
		mt.Topic = &name
		mt.TopicID = topicID(t)
		mt.Partitions = make([]kmsg.MetadataResponseTopicPartition, t.Partitions)
		for p := range t.Partitions {
			mp := kmsg.NewMetadataResponseTopicPartition()
			mp.Partition = p
			mp.Leader = c.s.leaderOf(bs, t.Name, p)
			if mp.Leader < 0 {
				mp.ErrorCode = kerr.LeaderNotAvailable.Code
			}
			mp.LeaderEpoch = 0
			mp.Replicas = c.s.replicasOf(bs, mp.Leader, t.Name, p)
			mp.ISR = mp.Replicas
			mt.Partitions[p] = mp
		}
		if req.IncludeTopicAuthorizedOperations {
			mt.AuthorizedOperations = c.topicOperations(t.Name)
		}
		resp.Topics = append(resp.Topics, mt)
	}
	if req.IncludeClusterAuthorizedOperations {
		resp.AuthorizedOperations = c.clusterOperations()
	}
	return resp, nil
}

// Kafka's ACL operation bits (AclOperation codes) for the authorized
// operations fields.
const (
	opRead            = 3
	opWrite           = 4
	opCreate          = 5
	opDelete          = 6
	opAlter           = 7
	opDescribe        = 8
	opClusterAction   = 9
	opDescribeConfigs = 10
	opAlterConfigs    = 11
)

func (c *conn) topicOperations(topic string) int32 {
	var ops int32
	add := func(op authz.Operation, bits ...int) {
		if c.allowed(authz.Topic, topic, op) {
			for _, b := range bits {
				ops |= 1 << b
			}
		}
	}
	add(authz.Consume, opRead)
	add(authz.Produce, opWrite)
	add(authz.Describe, opDescribe, opDescribeConfigs)
	add(authz.Alter, opAlter, opAlterConfigs, opCreate)
	add(authz.Delete, opDelete)
	return ops
}

func (c *conn) clusterOperations() int32 {
	var ops int32
	if c.allowed(authz.Cluster, "", authz.Admin) {
		ops |= 1<<opCreate | 1<<opAlter | 1<<opDescribe | 1<<opClusterAction | 1<<opDescribeConfigs | 1<<opAlterConfigs
	} else if c.allowed(authz.Cluster, "", authz.Describe) {
		ops |= 1 << opDescribe
	}
	return ops
}

func handleDescribeCluster(_ context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.DescribeClusterRequest)
	resp := req.ResponseKind().(*kmsg.DescribeClusterResponse)
	resp.ClusterID = c.s.cfg.ClusterID
	resp.ControllerID = c.s.self
	for _, b := range c.s.brokerList() {
		mb := kmsg.NewDescribeClusterResponseBroker()
		mb.NodeID, mb.Host, mb.Port = b.id, b.host, b.port
		resp.Brokers = append(resp.Brokers, mb)
	}
	if req.IncludeClusterAuthorizedOperations {
		resp.ClusterAuthorizedOperations = c.clusterOperations()
	}
	if req.EndpointType != 0 && req.EndpointType != 1 {
		resp.ErrorCode = kerr.UnsupportedEndpointType.Code
		msg := fmt.Sprintf("endpoint type %d: Varve lists brokers only", req.EndpointType)
		resp.ErrorMessage = &msg
	}
	return resp, nil
}
