package kafka

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata"
)

// CreateTopics, DeleteTopics and CreatePartitions on metadata's topics:
// each topic's change is one etcd transaction, and a refused one changes
// nothing. Varve keeps no replicas (a record is durable in object storage
// once acknowledged), so replication factors are accepted and ignored,
// replica assignments refused, and a topic's replication factor is 1.
func init() {
	register(19, 0, 7, handleCreateTopics)
	register(20, 0, 6, handleDeleteTopics)
	register(37, 0, 3, handleCreatePartitions)
}

// adminTimeout bounds the etcd work of one admin request. The request's
// own timeout is not used: in Kafka it is how long the broker waits for
// the controller's change to spread; here a change is done when its etcd
// transaction commits.
const adminTimeout = 30 * time.Second

// adminError is a refusal with its Kafka error code.
type adminError struct {
	code int16
	msg  string
}

func (e *adminError) Error() string { return e.msg }

func refuse(code *kerr.Error, format string, args ...any) error {
	return &adminError{code: code.Code, msg: fmt.Sprintf(format, args...)}
}

// denied is the refusal of a principal that may not do op on a resource.
func (c *conn) denied(code *kerr.Error, kind authz.Kind, name string, op authz.Operation, what string) error {
	r := authz.Resource{Kind: kind, Name: name}
	return refuse(code, "principal %q may not %s: it needs %s on %s", c.id.Principal, what, op, r)
}

// adminCode is err's Kafka error code in an admin response: a refusal's
// own, invalid for Varve refusing a value (metadata.ErrInvalidArgument),
// else errorCode's.
func adminCode(err error, invalid *kerr.Error) int16 {
	var ae *adminError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ae):
		return ae.code
	case errors.Is(err, metadata.ErrTopicNotFound):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, metadata.ErrTopicExists):
		return kerr.TopicAlreadyExists.Code
	case errors.Is(err, metadata.ErrInvalidArgument):
		return invalid.Code
	}
	return errorCode(err)
}

// settle waits, briefly, for this node's watched topics to show a change
// just committed, so that the Metadata answers that follow on this node
// show it (other nodes' follow within their watch's delay).
func (c *conn) settle(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = c.s.d.Topics.CatchUp(ctx)
}

// handleCreateTopics creates each topic with its configs (topicConfigs),
// or with ValidateOnly checks it the same way and creates nothing. Topics
// named more than once are refused, as Kafka does.
func handleCreateTopics(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.CreateTopicsRequest)
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	count := map[string]int{}
	for _, rt := range req.Topics {
		count[rt.Topic]++
	}
	answered := map[string]bool{}
	created := false
	for i := range req.Topics {
		rt := &req.Topics[i]
		if answered[rt.Topic] {
			continue
		}
		answered[rt.Topic] = true
		out := kmsg.NewCreateTopicsResponseTopic()
		out.Topic = rt.Topic
		out.NumPartitions, out.ReplicationFactor = -1, -1
		var t metadata.Topic
		var err error
		if count[rt.Topic] > 1 {
			err = refuse(kerr.InvalidRequest, "topic %q is named %d times in the request", rt.Topic, count[rt.Topic])
		} else {
			t, err = c.createTopic(ctx, rt, req.ValidateOnly)
		}
		if err != nil {
			out.ErrorCode, out.ErrorMessage = adminCode(err, kerr.InvalidConfig), errorMessage(err)
		} else {
			created = created || !req.ValidateOnly
			out.TopicID = topicID(t)
			out.NumPartitions, out.ReplicationFactor = t.Partitions, 1
			out.Configs = createdConfigs(t)
		}
		resp.Topics = append(resp.Topics, out)
	}
	if created {
		c.settle(ctx)
	}
	return resp, nil
}

// createTopic checks one topic of a CreateTopics request and creates it
// (validateOnly: returns what it would create). Errors carry their Kafka
// code (adminCode; a value Varve refuses is INVALID_CONFIG).
func (c *conn) createTopic(ctx context.Context, rt *kmsg.CreateTopicsRequestTopic, validateOnly bool) (metadata.Topic, error) {
	name := rt.Topic
	if !c.allowed(authz.Topic, name, authz.Alter) {
		return metadata.Topic{}, c.denied(kerr.TopicAuthorizationFailed, authz.Topic, name, authz.Alter, fmt.Sprintf("create topic %q", name))
	}
	if err := metadata.ValidateTopicName(name); err != nil {
		return metadata.Topic{}, refuse(kerr.InvalidTopicException, "%v", err)
	}
	if _, ok := c.s.d.Topics.Topic(name); ok {
		// Before the configs are checked, as Kafka does: a client that
		// makes sure a topic exists is told it does.
		return metadata.Topic{}, refuse(kerr.TopicAlreadyExists, "topic %q already exists", name)
	}
	if len(rt.ReplicaAssignment) > 0 {
		return metadata.Topic{}, refuse(kerr.InvalidRequest,
			"topic %q: Varve places no replicas (a record is durable in object storage once acknowledged): give NumPartitions instead of a replica assignment", name)
	}
	t := metadata.Topic{Name: name, Partitions: rt.NumPartitions}
	if t.Partitions == -1 {
		t.Partitions = DefaultPartitions
	}
	if err := metadata.ValidatePartitions(name, t.Partitions); err != nil {
		return metadata.Topic{}, refuse(kerr.InvalidPartitions, "%v", err)
	}
	// rt.ReplicationFactor: any value is accepted and ignored.
	var ch configChange
	seen := map[string]bool{}
	for _, rc := range rt.Configs {
		if seen[rc.Name] {
			return metadata.Topic{}, refuse(kerr.InvalidRequest, "topic %q: config %s given twice", name, rc.Name)
		}
		seen[rc.Name] = true
		if rc.Value == nil {
			return metadata.Topic{}, refuse(kerr.InvalidConfig, "topic %q: config %s without a value (leave it out for the default)", name, rc.Name)
		}
		if err := ch.add(name, rc.Name, *rc.Value); err != nil {
			return metadata.Topic{}, err
		}
	}
	if err := ch.applyTo(c, &t, metadata.TopicSettings.ApplyCreate); err != nil {
		return metadata.Topic{}, err
	}
	checked, err := metadata.CheckTopic(t)
	if err != nil {
		return metadata.Topic{}, err
	}
	if validateOnly {
		_, err := c.s.d.Meta.GetTopic(ctx, name)
		switch {
		case err == nil:
			return metadata.Topic{}, refuse(kerr.TopicAlreadyExists, "topic %q already exists", name)
		case !errors.Is(err, metadata.ErrTopicNotFound):
			return metadata.Topic{}, err
		}
		return checked, nil
	}
	return c.s.d.Meta.CreateTopic(ctx, t)
}

// handleDeleteTopics deletes topics by name, or from v6 by topic id
// (topicID). The topic's partition state and index go in the same etcd
// transaction; its objects are left to garbage collection.
func handleDeleteTopics(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.DeleteTopicsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	asked := req.Topics
	if req.Version < 6 {
		asked = nil
		for _, n := range req.TopicNames {
			rt := kmsg.NewDeleteTopicsRequestTopic()
			rt.Topic = &n
			asked = append(asked, rt)
		}
	}
	var ids map[[16]byte]metadata.Topic // read once, for the topics given by id
	seen := map[string]bool{}
	deleted := false
	for _, rt := range asked {
		out := kmsg.NewDeleteTopicsResponseTopic()
		out.Topic, out.TopicID = rt.Topic, rt.TopicID
		name := ""
		if rt.Topic != nil {
			name = *rt.Topic
		}
		byID := rt.TopicID != [16]byte{} || rt.Topic == nil // v6: a null name is a topic given by id
		var err error
		switch {
		case name != "" && rt.TopicID != [16]byte{}:
			err = refuse(kerr.InvalidRequest, "topic %q: give a topic's name or its id, not both", name)
		case byID && rt.TopicID == [16]byte{}:
			err = refuse(kerr.UnknownTopicID, "neither a topic name nor a topic id")
		case byID:
			if ids == nil {
				ids, err = c.topicsByID(ctx)
			}
			if err != nil {
				break
			}
			t, ok := ids[rt.TopicID]
			if !ok {
				err = refuse(kerr.UnknownTopicID, "no topic has id %x", rt.TopicID)
				break
			}
			name = t.Name
			if !c.allowed(authz.Topic, name, authz.Describe) {
				// Its name stays unsaid.
				err = refuse(kerr.TopicAuthorizationFailed, "principal %q may not describe the topic of id %x", c.id.Principal, rt.TopicID)
				break
			}
			out.Topic = &name
		default:
			if t, ok := c.s.d.Topics.Topic(name); ok {
				out.TopicID = topicID(t)
			}
		}
		if err == nil {
			if seen[name] {
				continue // named twice: answered once
			}
			seen[name] = true
			err = c.deleteTopic(ctx, name)
			deleted = deleted || err == nil
		}
		out.ErrorCode, out.ErrorMessage = adminCode(err, kerr.UnknownTopicOrPartition), errorMessage(err)
		resp.Topics = append(resp.Topics, out)
	}
	if deleted {
		c.settle(ctx)
	}
	return resp, nil
}

func (c *conn) deleteTopic(ctx context.Context, name string) error {
	if !c.allowed(authz.Topic, name, authz.Delete) {
		return c.denied(kerr.TopicAuthorizationFailed, authz.Topic, name, authz.Delete, fmt.Sprintf("delete topic %q", name))
	}
	if err := metadata.ValidateTopicName(name); err != nil {
		return refuse(kerr.UnknownTopicOrPartition, "%v", err)
	}
	return c.s.d.Meta.DeleteTopic(ctx, name)
}

// topicsByID reads every topic from etcd, by Kafka topic id.
func (c *conn) topicsByID(ctx context.Context) (map[[16]byte]metadata.Topic, error) {
	ts, err := c.s.d.Meta.ListTopics(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[[16]byte]metadata.Topic, len(ts))
	for _, t := range ts {
		out[topicID(t)] = t
	}
	return out, nil
}

// handleCreatePartitions grows topics to the partition counts asked, each
// in one etcd transaction; partitions are never removed, and Varve places
// them itself (an assignment is refused). The new partitions are empty
// and writable at once: records of an existing key may now go to another
// partition, as in Kafka.
func handleCreatePartitions(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.CreatePartitionsRequest)
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	count := map[string]int{}
	for _, rt := range req.Topics {
		count[rt.Topic]++
	}
	answered := map[string]bool{}
	grown := false
	for _, rt := range req.Topics {
		if answered[rt.Topic] {
			continue
		}
		answered[rt.Topic] = true
		out := kmsg.NewCreatePartitionsResponseTopic()
		out.Topic = rt.Topic
		var err error
		if count[rt.Topic] > 1 {
			err = refuse(kerr.InvalidRequest, "Duplicate topic in request.")
		} else {
			err = c.createPartitions(ctx, rt, req.ValidateOnly)
			grown = grown || (err == nil && !req.ValidateOnly)
		}
		out.ErrorCode, out.ErrorMessage = adminCode(err, kerr.InvalidPartitions), errorMessage(err)
		resp.Topics = append(resp.Topics, out)
	}
	if grown {
		c.settle(ctx)
	}
	return resp, nil
}

func (c *conn) createPartitions(ctx context.Context, rt kmsg.CreatePartitionsRequestTopic, validateOnly bool) error {
	name := rt.Topic
	if !c.allowed(authz.Topic, name, authz.Alter) {
		return c.denied(kerr.TopicAuthorizationFailed, authz.Topic, name, authz.Alter, fmt.Sprintf("add partitions to topic %q", name))
	}
	if err := metadata.ValidateTopicName(name); err != nil {
		return refuse(kerr.UnknownTopicOrPartition, "%v", err)
	}
	if rt.Assignment != nil {
		return refuse(kerr.InvalidRequest, "topic %q: Varve places partitions itself and keeps no replicas: give the new count without an assignment", name)
	}
	// Kafka's messages; more than metadata.MaxPartitions is refused when
	// the grown topic is checked (INVALID_PARTITIONS too).
	grow := func(t *metadata.Topic) error {
		switch {
		case rt.Count == t.Partitions:
			return refuse(kerr.InvalidPartitions, "Topic already has %d partition(s).", t.Partitions)
		case rt.Count < t.Partitions:
			return refuse(kerr.InvalidPartitions, "The topic %s currently has %d partition(s); %d would not be an increase.", name, t.Partitions, rt.Count)
		}
		t.Partitions = rt.Count
		return nil
	}
	if validateOnly {
		old, err := c.s.d.Meta.GetTopic(ctx, name)
		if err != nil {
			return err
		}
		_, err = metadata.CheckTopicUpdate(old, grow)
		return err
	}
	_, err := c.s.d.Meta.UpdateTopic(ctx, name, grow)
	return err
}
