package kafka

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/metadata"
)

// DescribeConfigs, IncrementalAlterConfigs and the legacy AlterConfigs
// (full replace) on topics, with Varve's topic settings under their Kafka
// names (topicConfigs). Broker configs are a read-only list of what
// Varve's topics default to (brokerConfigs).
func init() {
	register(32, 0, 4, handleDescribeConfigs)
	register(44, 0, 1, handleIncrementalAlterConfigs)
	register(33, 0, 2, handleAlterConfigs)
}

// topicConfig is one Kafka topic config that a Varve topic setting
// stands for.
type topicConfig struct {
	// name is the Kafka topic config; broker the broker config whose
	// value a topic takes when it does not set name (Kafka's synonym).
	name, broker string
	typ          kmsg.ConfigType
	doc          string
	// def is the value of a topic that does not set it.
	def string
	// get is t's value.
	get func(t metadata.Topic) string
	// parse sets the setting given as v on s.
	parse func(s *metadata.TopicSettings, v string) error
	// reset sets t's setting back to its default (a stored zero is the
	// default: metadata fills it in when it validates the topic).
	reset func(t *metadata.Topic)
}

// topicConfigs are the Kafka topic configs Varve has, in the order they
// are described. Varve's names are in docs (retention.ms is
// retention_ms, max.message.bytes is max_record_bytes, and so on).
var topicConfigs = []topicConfig{
	{
		name: "retention.ms", broker: "log.retention.ms", typ: kmsg.ConfigTypeLong,
		doc: "How long a record is kept (-1: forever); not applied to compacted topics.",
		def: strconv.FormatInt(metadata.DefaultRetentionMs, 10),
		get: func(t metadata.Topic) string {
			return strconv.FormatInt(or(t.RetentionMs, metadata.DefaultRetentionMs), 10)
		},
		parse: func(s *metadata.TopicSettings, v string) (err error) {
			s.RetentionMs, err = parseLong("retention.ms", v)
			return err
		},
		reset: func(t *metadata.Topic) { t.RetentionMs = 0 },
	},
	{
		name: "retention.bytes", broker: "log.retention.bytes", typ: kmsg.ConfigTypeLong,
		doc: "How many bytes a partition keeps before its oldest records are deleted (-1: no limit); not applied to compacted topics.",
		def: "-1",
		get: func(t metadata.Topic) string { return strconv.FormatInt(or(t.RetentionBytes, -1), 10) },
		parse: func(s *metadata.TopicSettings, v string) (err error) {
			s.RetentionBytes, err = parseLong("retention.bytes", v)
			return err
		},
		reset: func(t *metadata.Topic) { t.RetentionBytes = 0 },
	},
	{
		name: "cleanup.policy", broker: "log.cleanup.policy", typ: kmsg.ConfigTypeList,
		doc: "delete (retention by time and size) or compact (the latest record of each key is kept); not both.",
		def: metadata.CleanupDelete,
		get: func(t metadata.Topic) string { return or(t.CleanupPolicy, metadata.CleanupDelete) },
		parse: func(s *metadata.TopicSettings, v string) error {
			p, err := parseCleanupPolicy(v)
			s.CleanupPolicy = &p
			return err
		},
		reset: func(t *metadata.Topic) { t.CleanupPolicy = "" },
	},
	{
		name: "max.message.bytes", broker: "message.max.bytes", typ: kmsg.ConfigTypeInt,
		doc: "The largest record a producer may write, in bytes as stored (Varve limits records, not batches); at most 64 MiB and what the node's max_request_bytes can carry.",
		def: strconv.Itoa(metadata.DefaultMaxRecord),
		get: func(t metadata.Topic) string {
			return strconv.FormatInt(int64(or(t.MaxRecordBytes, metadata.DefaultMaxRecord)), 10)
		},
		parse: func(s *metadata.TopicSettings, v string) error {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
			if err != nil {
				return invalidValue("max.message.bytes", v, "INT")
			}
			n32 := int32(n)
			s.MaxRecordBytes = &n32
			return nil
		},
		reset: func(t *metadata.Topic) { t.MaxRecordBytes = 0 },
	},
	{
		name: "delete.retention.ms", broker: "log.cleaner.delete.retention.ms", typ: kmsg.ConfigTypeLong,
		doc: "How long compaction keeps a tombstone (a record with a null value) after its timestamp.",
		def: strconv.FormatInt(metadata.DefaultDeleteRetentionMs, 10),
		get: func(t metadata.Topic) string {
			return strconv.FormatInt(or(t.DeleteRetentionMs, metadata.DefaultDeleteRetentionMs), 10)
		},
		parse: func(s *metadata.TopicSettings, v string) (err error) {
			s.DeleteRetentionMs, err = parseLong("delete.retention.ms", v)
			return err
		},
		reset: func(t *metadata.Topic) { t.DeleteRetentionMs = 0 },
	},
	{
		name: "min.compaction.lag.ms", broker: "log.cleaner.min.compaction.lag.ms", typ: kmsg.ConfigTypeLong,
		doc: "How old a record must be before compaction may remove it.",
		def: "0",
		get: func(t metadata.Topic) string { return strconv.FormatInt(t.MinCompactionLagMs, 10) },
		parse: func(s *metadata.TopicSettings, v string) (err error) {
			s.MinCompactionLagMs, err = parseLong("min.compaction.lag.ms", v)
			return err
		},
		reset: func(t *metadata.Topic) { t.MinCompactionLagMs = 0 },
	},
}

// or is v, or def when v is the zero value (a setting stored as 0 is the
// default).
func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func topicConfigNamed(name string) *topicConfig {
	for i := range topicConfigs {
		if topicConfigs[i].name == name {
			return &topicConfigs[i]
		}
	}
	return nil
}

// configNames lists topicConfigs' names, for messages.
func configNames() string {
	var ns []string
	for _, tc := range topicConfigs {
		ns = append(ns, tc.name)
	}
	return strings.Join(ns, ", ")
}

func unknownConfig(topic, name string) error {
	return refuse(kerr.InvalidConfig, "topic %q: Varve has no topic config %q; it has %s", topic, name, configNames())
}

func invalidValue(name, v, typ string) error {
	return refuse(kerr.InvalidConfig, "Invalid value %s for configuration %s: Not a number of type %s", v, name, typ)
}

func parseLong(name, v string) (*int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return nil, invalidValue(name, v, "LONG")
	}
	return &n, nil
}

// parseCleanupPolicy reads a cleanup.policy list: one of delete and
// compact. Both ("compact,delete") are refused: a compacted Varve topic
// keeps the latest record of each key whatever its age or size, and
// nothing deletes by retention on it.
func parseCleanupPolicy(v string) (string, error) {
	var ps []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" && !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	switch {
	case len(ps) == 1:
		return ps[0], nil // metadata checks it is delete or compact
	case len(ps) == 0:
		return "", refuse(kerr.InvalidConfig, "cleanup.policy %q: give %s or %s", v, metadata.CleanupDelete, metadata.CleanupCompact)
	case len(ps) == 2 && slices.Contains(ps, metadata.CleanupDelete) && slices.Contains(ps, metadata.CleanupCompact):
		return "", refuse(kerr.InvalidConfig, "cleanup.policy %q: Varve does not delete by retention on a compacted topic (it keeps the latest record of each key whatever its age or size); give %s or %s",
			v, metadata.CleanupCompact, metadata.CleanupDelete)
	}
	return "", refuse(kerr.InvalidConfig, "cleanup.policy %q: give %s or %s", v, metadata.CleanupDelete, metadata.CleanupCompact)
}

// configChange is a parsed change of a topic's configs: settings given,
// each with its Kafka name, and configs set back to their defaults.
type configChange struct {
	set   []namedSetting
	reset []*topicConfig
}

type namedSetting struct {
	name, value string
	s           metadata.TopicSettings
}

// add parses one config given as name=value.
func (ch *configChange) add(topic, name, value string) error {
	tc := topicConfigNamed(name)
	if tc == nil {
		return unknownConfig(topic, name)
	}
	ns := namedSetting{name: name, value: value}
	if err := tc.parse(&ns.s, value); err != nil {
		return err
	}
	ch.set = append(ch.set, ns)
	return nil
}

// applyTo applies ch to t (apply is TopicSettings.ApplyCreate or
// ApplyUpdate) and checks a max.message.bytes given against the node's
// request limit. Its errors say which config they are about.
func (ch *configChange) applyTo(c *conn, t *metadata.Topic, apply func(metadata.TopicSettings, *metadata.Topic) error) error {
	for _, tc := range ch.reset {
		tc.reset(t)
	}
	for _, ns := range ch.set {
		if err := apply(ns.s, t); err != nil {
			return fmt.Errorf("config %s=%s: %w", ns.name, ns.value, err)
		}
		if ns.s.MaxRecordBytes != nil && c.s.d.RecordLimit != nil {
			if err := c.s.d.RecordLimit(t.Name, *ns.s.MaxRecordBytes); err != nil {
				return fmt.Errorf("config %s=%s: %w", ns.name, ns.value, err)
			}
		}
	}
	return nil
}

// alterTopic applies ch to topic in one etcd transaction (UpdateTopic),
// or with validateOnly checks it against the stored topic and changes
// nothing.
func (c *conn) alterTopic(ctx context.Context, topic string, ch *configChange, validateOnly bool) error {
	update := func(t *metadata.Topic) error { return ch.applyTo(c, t, metadata.TopicSettings.ApplyUpdate) }
	if validateOnly {
		old, err := c.s.d.Meta.GetTopic(ctx, topic)
		if err != nil {
			return err
		}
		_, err = metadata.CheckTopicUpdate(old, update)
		return err
	}
	if _, err := c.s.d.Meta.UpdateTopic(ctx, topic, update); err != nil {
		return err
	}
	c.settle(ctx)
	return nil
}

// source is where t's value of tc comes from: Varve does not record
// whether a setting was given, so a value equal to the default is
// DEFAULT_CONFIG and any other DYNAMIC_TOPIC_CONFIG.
func (tc *topicConfig) source(t metadata.Topic) kmsg.ConfigSource {
	if tc.get(t) == tc.def {
		return kmsg.ConfigSourceDefaultConfig
	}
	return kmsg.ConfigSourceDynamicTopicConfig
}

// createdConfigs are t's configs as a CreateTopics v5+ response lists them.
func createdConfigs(t metadata.Topic) []kmsg.CreateTopicsResponseTopicConfig {
	out := make([]kmsg.CreateTopicsResponseTopicConfig, 0, len(topicConfigs))
	for i := range topicConfigs {
		tc := &topicConfigs[i]
		rc := kmsg.NewCreateTopicsResponseTopicConfig()
		v := tc.get(t)
		rc.Name, rc.Value, rc.Source = tc.name, &v, int8(tc.source(t))
		out = append(out, rc)
	}
	return out
}

// describeTopicConfigs are t's configs named in names (none: all).
func describeTopicConfigs(t metadata.Topic, names []string, synonyms, docs bool) []kmsg.DescribeConfigsResponseResourceConfig {
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for i := range topicConfigs {
		tc := &topicConfigs[i]
		if len(names) > 0 && !slices.Contains(names, tc.name) { // none named: all, as in Kafka
			continue
		}
		rc := kmsg.NewDescribeConfigsResponseResourceConfig()
		v := tc.get(t)
		rc.Name, rc.Value, rc.Source, rc.ConfigType = tc.name, &v, tc.source(t), tc.typ
		rc.IsDefault = rc.Source == kmsg.ConfigSourceDefaultConfig
		if docs {
			doc := tc.doc
			rc.Documentation = &doc
		}
		if synonyms {
			if !rc.IsDefault {
				s := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
				s.Name, s.Value, s.Source = tc.name, &v, kmsg.ConfigSourceDynamicTopicConfig
				rc.ConfigSynonyms = append(rc.ConfigSynonyms, s)
			}
			s := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
			def := tc.def
			s.Name, s.Value, s.Source = tc.broker, &def, kmsg.ConfigSourceDefaultConfig
			rc.ConfigSynonyms = append(rc.ConfigSynonyms, s)
		}
		out = append(out, rc)
	}
	return out
}

// DefaultPartitions is the partition count of a topic created through
// CreateTopics with NumPartitions -1 (Kafka's num.partitions default, and
// the varve CLI's).
const DefaultPartitions = 1

// brokerConfig is one read-only broker config.
type brokerConfig struct {
	name, value, doc string
	typ              kmsg.ConfigType
	source           kmsg.ConfigSource
}

// brokerConfigs are what a broker resource describes: the defaults a
// Varve topic takes (the topic configs' synonyms) and how topics are
// created and requests bounded. All are read-only: Varve has no dynamic
// broker configs (a node's settings are its config file).
func (s *Server) brokerConfigs() []brokerConfig {
	var out []brokerConfig
	for _, tc := range topicConfigs {
		out = append(out, brokerConfig{name: tc.broker, value: tc.def, doc: "The default of topic config " + tc.name + ": " + tc.doc,
			typ: tc.typ, source: kmsg.ConfigSourceDefaultConfig})
	}
	return append(out,
		brokerConfig{name: "num.partitions", value: strconv.Itoa(DefaultPartitions), typ: kmsg.ConfigTypeInt, source: kmsg.ConfigSourceDefaultConfig,
			doc: "The partitions of a topic created with NumPartitions -1."},
		brokerConfig{name: "default.replication.factor", value: "1", typ: kmsg.ConfigTypeInt, source: kmsg.ConfigSourceDefaultConfig,
			doc: "Varve keeps no replicas: a partition's records are durable in object storage once acknowledged. A topic's replication factor is 1, whatever was asked."},
		brokerConfig{name: "auto.create.topics.enable", value: "false", typ: kmsg.ConfigTypeBoolean, source: kmsg.ConfigSourceDefaultConfig,
			doc: "Varve creates topics only when asked (CreateTopics, the TopicService)."},
		brokerConfig{name: "socket.request.max.bytes", value: strconv.Itoa(s.cfg.MaxRequestBytes), typ: kmsg.ConfigTypeInt, source: kmsg.ConfigSourceStaticBrokerConfig,
			doc: "The largest request this node takes (its max_request_bytes)."},
		brokerConfig{name: "broker.id", value: strconv.Itoa(int(s.self)), typ: kmsg.ConfigTypeInt, source: kmsg.ConfigSourceStaticBrokerConfig,
			doc: "This node's broker id, a hash of its node id " + strconv.Quote(s.cfg.NodeID) + "."},
	)
}

// brokerResource checks a broker resource's name: "" (the cluster-wide
// default) or this node's broker id, as a Kafka broker takes it.
func (c *conn) brokerResource(name string) error {
	if name == "" || name == strconv.Itoa(int(c.s.self)) {
		return nil
	}
	return refuse(kerr.InvalidRequest, "broker resource %q: this is broker %d; ask that broker (or give \"\" for the cluster-wide values)", name, c.s.self)
}

func handleDescribeConfigs(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.DescribeConfigsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	for _, rr := range req.Resources {
		out := kmsg.NewDescribeConfigsResponseResource()
		out.ResourceType, out.ResourceName = rr.ResourceType, rr.ResourceName
		configs, err := c.describeConfigs(ctx, rr, req.IncludeSynonyms, req.IncludeDocumentation)
		if err != nil {
			out.ErrorCode, out.ErrorMessage = adminCode(err, kerr.InvalidRequest), errorMessage(err)
		} else {
			out.Configs = configs
		}
		resp.Resources = append(resp.Resources, out)
	}
	return resp, nil
}

func (c *conn) describeConfigs(ctx context.Context, rr kmsg.DescribeConfigsRequestResource, synonyms, docs bool) ([]kmsg.DescribeConfigsResponseResourceConfig, error) {
	switch rr.ResourceType {
	case kmsg.ConfigResourceTypeTopic:
		name := rr.ResourceName
		if !c.allowed(authz.Topic, name, authz.Describe) {
			return nil, c.denied(kerr.TopicAuthorizationFailed, authz.Topic, name, authz.Describe, "describe the configs of topic "+strconv.Quote(name))
		}
		if err := metadata.ValidateTopicName(name); err != nil {
			return nil, refuse(kerr.InvalidTopicException, "%v", err)
		}
		t, err := c.s.d.Meta.GetTopic(ctx, name)
		if err != nil {
			return nil, err
		}
		return describeTopicConfigs(t, rr.ConfigNames, synonyms, docs), nil
	case kmsg.ConfigResourceTypeBroker:
		if !c.allowed(authz.Cluster, "", authz.Describe) {
			return nil, c.denied(kerr.ClusterAuthorizationFailed, authz.Cluster, "", authz.Describe, "describe broker configs")
		}
		if err := c.brokerResource(rr.ResourceName); err != nil {
			return nil, err
		}
		var out []kmsg.DescribeConfigsResponseResourceConfig
		for _, bc := range c.s.brokerConfigs() {
			if len(rr.ConfigNames) > 0 && !slices.Contains(rr.ConfigNames, bc.name) {
				continue
			}
			rc := kmsg.NewDescribeConfigsResponseResourceConfig()
			v := bc.value
			rc.Name, rc.Value, rc.ReadOnly, rc.Source, rc.ConfigType = bc.name, &v, true, bc.source, bc.typ
			rc.IsDefault = bc.source == kmsg.ConfigSourceDefaultConfig
			if synonyms {
				s := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
				s.Name, s.Value, s.Source = bc.name, &v, bc.source
				rc.ConfigSynonyms = append(rc.ConfigSynonyms, s)
			}
			if docs {
				doc := bc.doc
				rc.Documentation = &doc
			}
			out = append(out, rc)
		}
		return out, nil
	}
	return nil, unsupportedResource(rr.ResourceType)
}

func unsupportedResource(t kmsg.ConfigResourceType) error {
	return refuse(kerr.InvalidRequest, "resource type %s (%d): Varve has configs of topics (2) and read-only ones of brokers (4) only", t, int8(t))
}

// brokerAlter answers an alter of a broker resource: Varve's broker configs
// are read-only, once the principal may administer the cluster.
// alterTarget checks the resource of an alter request: the topic to
// change, or the error that answers the resource (broker configs are
// read-only; other types are not served).
func (c *conn) alterTarget(t kmsg.ConfigResourceType, name string) (string, error) {
	switch t {
	case kmsg.ConfigResourceTypeTopic:
	case kmsg.ConfigResourceTypeBroker:
		return "", c.brokerAlter(name)
	default:
		return "", unsupportedResource(t)
	}
	if !c.allowed(authz.Topic, name, authz.Alter) {
		return "", c.denied(kerr.TopicAuthorizationFailed, authz.Topic, name, authz.Alter, "alter the configs of topic "+strconv.Quote(name))
	}
	if err := metadata.ValidateTopicName(name); err != nil {
		return "", refuse(kerr.InvalidTopicException, "%v", err)
	}
	return name, nil
}

func (c *conn) brokerAlter(name string) error {
	if !c.allowed(authz.Cluster, "", authz.Admin) {
		return c.denied(kerr.ClusterAuthorizationFailed, authz.Cluster, "", authz.Admin, "alter broker configs")
	}
	if err := c.brokerResource(name); err != nil {
		return err
	}
	return refuse(kerr.InvalidRequest, "broker configs are read-only on Varve: a node's settings come from its config file (docs/kafka.md)")
}

// duplicateResources are the (type, name) pairs given more than once; Kafka
// refuses each of them.
func duplicateResources[R any](rs []R, key func(R) [2]string) map[[2]string]bool {
	seen := map[[2]string]bool{}
	dup := map[[2]string]bool{}
	for _, r := range rs {
		k := key(r)
		if seen[k] {
			dup[k] = true
		}
		seen[k] = true
	}
	return dup
}

func resourceKey(t kmsg.ConfigResourceType, name string) [2]string {
	return [2]string{strconv.Itoa(int(t)), name}
}

var errDuplicateResource = refuse(kerr.InvalidRequest, "each resource must appear at most once in the request")

// handleIncrementalAlterConfigs sets (SET) or resets to the default
// (DELETE) topic configs, each resource in one etcd transaction; APPEND
// and SUBTRACT are refused (Varve has no list config to add to: its
// cleanup.policy is one value).
func handleIncrementalAlterConfigs(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.IncrementalAlterConfigsRequest)
	resp := req.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	dup := duplicateResources(req.Resources, func(r kmsg.IncrementalAlterConfigsRequestResource) [2]string {
		return resourceKey(r.ResourceType, r.ResourceName)
	})
	for _, rr := range req.Resources {
		out := kmsg.NewIncrementalAlterConfigsResponseResource()
		out.ResourceType, out.ResourceName = rr.ResourceType, rr.ResourceName
		var err error
		if dup[resourceKey(rr.ResourceType, rr.ResourceName)] {
			err = errDuplicateResource
		} else {
			err = c.incrementalAlter(ctx, rr, req.ValidateOnly)
		}
		out.ErrorCode, out.ErrorMessage = adminCode(err, kerr.InvalidConfig), errorMessage(err)
		resp.Resources = append(resp.Resources, out)
	}
	return resp, nil
}

func (c *conn) incrementalAlter(ctx context.Context, rr kmsg.IncrementalAlterConfigsRequestResource, validateOnly bool) error {
	topic, err := c.alterTarget(rr.ResourceType, rr.ResourceName)
	if err != nil {
		return err
	}
	var ch configChange
	seen := map[string]bool{}
	for _, rc := range rr.Configs {
		if seen[rc.Name] {
			return refuse(kerr.InvalidRequest, "topic %q: config %s given twice", topic, rc.Name)
		}
		seen[rc.Name] = true
		switch rc.Op {
		case kmsg.IncrementalAlterConfigOpSet:
			if rc.Value == nil {
				return refuse(kerr.InvalidRequest, "topic %q: SET of config %s without a value (DELETE sets a config back to its default)", topic, rc.Name)
			}
			if err := ch.add(topic, rc.Name, *rc.Value); err != nil {
				return err
			}
		case kmsg.IncrementalAlterConfigOpDelete:
			tc := topicConfigNamed(rc.Name)
			if tc == nil {
				return unknownConfig(topic, rc.Name)
			}
			ch.reset = append(ch.reset, tc)
		case kmsg.IncrementalAlterConfigOpAppend, kmsg.IncrementalAlterConfigOpSubtract:
			return refuse(kerr.InvalidRequest, "topic %q: %s of config %s: Varve has no list configs (its cleanup.policy is one of delete and compact); use SET", topic, rc.Op, rc.Name)
		default:
			return refuse(kerr.InvalidRequest, "topic %q: config %s: unknown operation %d", topic, rc.Name, int8(rc.Op))
		}
	}
	return c.alterTopic(ctx, topic, &ch, validateOnly)
}

// handleAlterConfigs is the legacy AlterConfigs: a topic's configs become
// exactly those given, the others going back to their defaults, in one
// etcd transaction.
func handleAlterConfigs(ctx context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.AlterConfigsRequest)
	resp := req.ResponseKind().(*kmsg.AlterConfigsResponse)
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	dup := duplicateResources(req.Resources, func(r kmsg.AlterConfigsRequestResource) [2]string {
		return resourceKey(r.ResourceType, r.ResourceName)
	})
	for _, rr := range req.Resources {
		out := kmsg.NewAlterConfigsResponseResource()
		out.ResourceType, out.ResourceName = rr.ResourceType, rr.ResourceName
		var err error
		if dup[resourceKey(rr.ResourceType, rr.ResourceName)] {
			err = errDuplicateResource
		} else {
			err = c.replaceConfigs(ctx, rr, req.ValidateOnly)
		}
		out.ErrorCode, out.ErrorMessage = adminCode(err, kerr.InvalidConfig), errorMessage(err)
		resp.Resources = append(resp.Resources, out)
	}
	return resp, nil
}

func (c *conn) replaceConfigs(ctx context.Context, rr kmsg.AlterConfigsRequestResource, validateOnly bool) error {
	topic, err := c.alterTarget(rr.ResourceType, rr.ResourceName)
	if err != nil {
		return err
	}
	var ch configChange
	given := map[string]bool{}
	for _, rc := range rr.Configs {
		if given[rc.Name] {
			return refuse(kerr.InvalidRequest, "topic %q: config %s given twice", topic, rc.Name)
		}
		given[rc.Name] = true
		if rc.Value == nil {
			return refuse(kerr.InvalidRequest, "topic %q: config %s without a value", topic, rc.Name)
		}
		if err := ch.add(topic, rc.Name, *rc.Value); err != nil {
			return err
		}
	}
	for i := range topicConfigs {
		if !given[topicConfigs[i].name] {
			ch.reset = append(ch.reset, &topicConfigs[i])
		}
	}
	return c.alterTopic(ctx, topic, &ch, validateOnly)
}
