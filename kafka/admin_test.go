package kafka_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/varve-io/varve/kafka"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node"
)

func ptr[T any](v T) *T { return &v }

func adminCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// topicNames are the names of every topic in etcd.
func topicNames(t *testing.T, d *node.Dev) []string {
	t.Helper()
	ts, err := d.Meta().ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tp := range ts {
		out = append(out, tp.Name)
	}
	return out
}

func getTopic(t *testing.T, d *node.Dev, name string) metadata.Topic {
	t.Helper()
	tp, err := d.Meta().GetTopic(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// wantCode fails unless code is want, naming what was asked.
func wantCode(t *testing.T, what string, code int16, msg *string, want *kerr.Error) {
	t.Helper()
	if code != want.Code {
		m := ""
		if msg != nil {
			m = *msg
		}
		t.Errorf("%s: error %v (%q); want %s", what, kerr.ErrorForCode(code), m, want.Message)
	}
}

// TestAdminTopicLifecycle: a topic created through kadm with every config
// Varve has is stored with those settings (metadata.GetTopic) and
// described with them, altered incrementally, a config deleted back to its
// default, the configs replaced (legacy AlterConfigs), partitions added
// and produced to, and deleted: gone from etcd and from Metadata.
func TestAdminTopicLifecycle(t *testing.T) {
	d := startDev(t, nodeConfig())
	ctx := adminCtx(t)
	cl := newClient(t, d)
	adm := kadm.NewClient(cl)

	configs := map[string]*string{
		"retention.ms": ptr("3600000"), "retention.bytes": ptr("1000000"), "cleanup.policy": ptr("compact"),
		"max.message.bytes": ptr("2097152"), "delete.retention.ms": ptr("1000"), "min.compaction.lag.ms": ptr("5000"),
	}
	cr, err := adm.CreateTopic(ctx, 3, 3, configs, "life") // replication factor 3: accepted, ignored
	if err != nil || cr.Err != nil {
		t.Fatalf("create: %v, %v (%s)", err, cr.Err, cr.ErrMessage)
	}
	if cr.NumPartitions != 3 || cr.ReplicationFactor != 1 || cr.ID == (kadm.TopicID{}) {
		t.Fatalf("create answered %d partitions, replication factor %d, id %v; want 3, 1, the topic's id", cr.NumPartitions, cr.ReplicationFactor, cr.ID)
	}
	for k, v := range configs {
		got := cr.Configs[k]
		if got.MaybeValue() != *v || got.Source != kmsg.ConfigSourceDynamicTopicConfig {
			t.Errorf("create answered %s = %q (%v); want %q, DYNAMIC_TOPIC_CONFIG", k, got.MaybeValue(), got.Source, *v)
		}
	}

	stored := getTopic(t, d, "life")
	want := metadata.Topic{Name: "life", ID: stored.ID, CreatedMs: stored.CreatedMs, Partitions: 3, RetentionMs: 3600000, RetentionBytes: 1000000,
		CleanupPolicy: metadata.CleanupCompact, MaxRecordBytes: 2097152, DeleteRetentionMs: 1000, MinCompactionLagMs: 5000}
	if !reflect.DeepEqual(stored, want) {
		t.Fatalf("stored %+v\nwant %+v", stored, want)
	}
	if kadm.TopicID(kafkaTopicID(stored)) != cr.ID {
		t.Fatalf("create answered id %v; the stored topic's is %v", cr.ID, kafkaTopicID(stored))
	}

	// Described: the same values, through kadm (DescribeConfigs) and etcd.
	describe := func() map[string]kadm.Config {
		t.Helper()
		rcs, err := adm.DescribeTopicConfigs(ctx, "life")
		if err != nil || len(rcs) != 1 || rcs[0].Err != nil {
			t.Fatalf("describe: %v %+v", err, rcs)
		}
		out := map[string]kadm.Config{}
		for _, c := range rcs[0].Configs {
			out[c.Key] = c
		}
		return out
	}
	checkDescribed := func(tp metadata.Topic) {
		t.Helper()
		got := describe()
		delRet := tp.DeleteRetentionMs
		if delRet == 0 {
			delRet = metadata.DefaultDeleteRetentionMs
		}
		for k, v := range map[string]string{
			"retention.ms": strconv.FormatInt(tp.RetentionMs, 10), "retention.bytes": strconv.FormatInt(tp.RetentionBytes, 10),
			"cleanup.policy": tp.CleanupPolicy, "max.message.bytes": strconv.Itoa(int(tp.MaxRecordBytes)),
			"delete.retention.ms": strconv.FormatInt(delRet, 10), "min.compaction.lag.ms": strconv.FormatInt(tp.MinCompactionLagMs, 10),
		} {
			if c := got[k]; c.MaybeValue() != v {
				t.Errorf("described %s = %q; etcd has %q", k, c.MaybeValue(), v)
			}
		}
		if len(got) != 6 {
			t.Errorf("described %d configs; want Varve's 6", len(got))
		}
	}
	checkDescribed(stored)

	// Metadata: three partitions, one replica.
	tds, err := adm.ListTopics(ctx, "life")
	if err != nil || tds["life"].Err != nil || len(tds["life"].Partitions) != 3 || tds["life"].Partitions.NumReplicas() != 1 {
		t.Fatalf("metadata of the new topic: %v %+v", err, tds["life"])
	}

	// Incrementally: two set, the others kept.
	ar, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: ptr("7200000")},
		{Op: kadm.SetConfig, Name: "cleanup.policy", Value: ptr("delete")},
	}, "life")
	if err != nil || ar[0].Err != nil {
		t.Fatalf("alter: %v %+v", err, ar)
	}
	want.RetentionMs, want.CleanupPolicy = 7200000, metadata.CleanupDelete
	if got := getTopic(t, d, "life"); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the alter: %+v\nwant %+v", got, want)
	}
	checkDescribed(want)

	// DELETE: back to the default, described as the default.
	ar, err = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.DeleteConfig, Name: "max.message.bytes"},
		{Op: kadm.DeleteConfig, Name: "min.compaction.lag.ms"},
	}, "life")
	if err != nil || ar[0].Err != nil {
		t.Fatalf("delete configs: %v %+v", err, ar)
	}
	want.MaxRecordBytes, want.MinCompactionLagMs = metadata.DefaultMaxRecord, 0
	if got := getTopic(t, d, "life"); !reflect.DeepEqual(got, want) {
		t.Fatalf("after deleting configs: %+v\nwant %+v", got, want)
	}
	checkDescribed(want)
	if c := describe()["max.message.bytes"]; c.Source != kmsg.ConfigSourceDefaultConfig || len(c.Synonyms) != 1 || c.Synonyms[0].Key != "message.max.bytes" {
		t.Fatalf("max.message.bytes after DELETE: %+v; want DEFAULT_CONFIG with the broker synonym message.max.bytes", c)
	}
	if c := describe()["retention.ms"]; c.Source != kmsg.ConfigSourceDynamicTopicConfig || len(c.Synonyms) != 2 || c.Synonyms[1].Key != "log.retention.ms" {
		t.Fatalf("retention.ms: %+v; want DYNAMIC_TOPIC_CONFIG with synonyms itself and log.retention.ms", c)
	}

	// Legacy AlterConfigs: the configs become exactly those given.
	ar, err = adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "retention.bytes", Value: ptr("5000")}}, "life")
	if err != nil || ar[0].Err != nil {
		t.Fatalf("legacy alter: %v %+v", err, ar)
	}
	want.RetentionMs, want.RetentionBytes, want.DeleteRetentionMs = metadata.DefaultRetentionMs, 5000, 0
	if got := getTopic(t, d, "life"); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the legacy alter: %+v\nwant %+v", got, want)
	}

	// Partitions: 3 to 5, and the new last one takes records at once.
	pr, err := adm.UpdatePartitions(ctx, 5, "life")
	if err != nil || pr["life"].Err != nil {
		t.Fatalf("create partitions: %v %+v", err, pr)
	}
	want.Partitions = 5
	if got := getTopic(t, d, "life"); !reflect.DeepEqual(got, want) {
		t.Fatalf("after create partitions: %+v\nwant %+v", got, want)
	}
	p := newClient(t, d, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	res := p.ProduceSync(ctx, &kgo.Record{Topic: "life", Partition: 4, Value: []byte("new partition")})
	if r, err := res.First(); err != nil || r.Partition != 4 || r.Offset != 0 {
		t.Fatalf("produce to partition 4: %v %+v", err, r)
	}
	ends, err := adm.ListEndOffsets(ctx, "life")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("life", 4); o.Offset != 1 {
		t.Fatalf("partition 4 ends at %d; want 1", o.Offset)
	}

	// Deleted: gone from etcd and from Metadata.
	dr, err := adm.DeleteTopics(ctx, "life")
	if err != nil || dr["life"].Err != nil {
		t.Fatalf("delete: %v %+v", err, dr)
	}
	if _, err := d.Meta().GetTopic(ctx, "life"); !errors.Is(err, metadata.ErrTopicNotFound) {
		t.Fatalf("after delete, etcd: %v", err)
	}
	tds, err = adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tds["life"]; ok {
		t.Fatalf("Metadata lists the deleted topic: %+v", tds["life"])
	}
	mreq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = ptr("life")
	mreq.Topics = append(mreq.Topics, mt)
	mresp, err := mreq.RequestWith(ctx, cl)
	if err != nil || len(mresp.Topics) != 1 || mresp.Topics[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("Metadata of the deleted topic: %v %+v", err, mresp)
	}
}

// kafkaTopicID is the topic id Metadata and CreateTopics give a Varve
// topic: its id's first 16 bytes.
func kafkaTopicID(t metadata.Topic) [16]byte {
	var id [16]byte
	for i := range id {
		b, _ := strconv.ParseUint(t.ID[2*i:2*i+2], 16, 8)
		id[i] = byte(b)
	}
	return id
}

// smallDev is a varve dev taking requests of at most 4 MiB: a topic's
// max.message.bytes must leave 1 MiB of it for the request's envelope.
func smallDev(t *testing.T) *node.Dev {
	cfg := nodeConfig()
	cfg.MaxRequestBytes = 4 << 20
	return startDev(t, cfg)
}

// TestAdminCreateTopicsRefused: each topic Varve cannot create is answered
// its Kafka error code with a message, in one request with one that it
// can, and none of them is created; ValidateOnly creates nothing.
func TestAdminCreateTopicsRefused(t *testing.T) {
	d := smallDev(t)
	ctx := adminCtx(t)
	cl := newClient(t, d)
	if r, err := kadm.NewClient(cl).CreateTopic(ctx, 2, -1, nil, "taken"); err != nil || r.Err != nil {
		t.Fatalf("create taken: %v %+v", err, r)
	}
	taken := getTopic(t, d, "taken")

	type tc struct {
		name      string
		parts     int32
		configs   map[string]*string
		assign    bool
		want      *kerr.Error
		msgHas    string
		wantParts int32 // when it is created (want nil)
	}
	cases := []tc{
		{name: "taken", parts: 1, want: kerr.TopicAlreadyExists},
		{name: "taken", parts: 1, configs: map[string]*string{"segment.bytes": ptr("1")}, want: kerr.TopicAlreadyExists}, // before its configs, as Kafka
		{name: "bad/name", parts: 1, want: kerr.InvalidTopicException, msgHas: "character"},
		{name: "..", parts: 1, want: kerr.InvalidTopicException},
		{name: strings.Repeat("x", 250), parts: 1, want: kerr.InvalidTopicException, msgHas: "249"},
		{name: "zero-parts", parts: 0, want: kerr.InvalidPartitions},
		{name: "minus-two-parts", parts: -2, want: kerr.InvalidPartitions},
		{name: "too-many-parts", parts: metadata.MaxPartitions + 1, want: kerr.InvalidPartitions, msgHas: "10000"},
		{name: "assigned", parts: -1, assign: true, want: kerr.InvalidRequest, msgHas: "replica assignment"},
		{name: "unknown-config", parts: 1, configs: map[string]*string{"segment.bytes": ptr("1048576")}, want: kerr.InvalidConfig, msgHas: "segment.bytes"},
		{name: "both-policies", parts: 1, configs: map[string]*string{"cleanup.policy": ptr("compact,delete")}, want: kerr.InvalidConfig, msgHas: "compact"},
		{name: "shred", parts: 1, configs: map[string]*string{"cleanup.policy": ptr("shred")}, want: kerr.InvalidConfig, msgHas: "shred"},
		{name: "not-a-number", parts: 1, configs: map[string]*string{"retention.ms": ptr("week")}, want: kerr.InvalidConfig, msgHas: "retention.ms"},
		{name: "retention-zero", parts: 1, configs: map[string]*string{"retention.ms": ptr("0")}, want: kerr.InvalidConfig, msgHas: "retention.ms"},
		{name: "retention-minus-two", parts: 1, configs: map[string]*string{"retention.ms": ptr("-2")}, want: kerr.InvalidConfig, msgHas: "retention_ms"},
		{name: "bytes-zero", parts: 1, configs: map[string]*string{"retention.bytes": ptr("0")}, want: kerr.InvalidConfig},
		{name: "record-too-big", parts: 1, configs: map[string]*string{"max.message.bytes": ptr("67108865")}, want: kerr.InvalidConfig, msgHas: "max_record_bytes"},
		{name: "record-over-request", parts: 1, configs: map[string]*string{"max.message.bytes": ptr("4194304")}, want: kerr.InvalidConfig, msgHas: "max_request_bytes"},
		{name: "record-int-overflow", parts: 1, configs: map[string]*string{"max.message.bytes": ptr("3000000000")}, want: kerr.InvalidConfig, msgHas: "INT"},
		{name: "tombstones-zero", parts: 1, configs: map[string]*string{"delete.retention.ms": ptr("0")}, want: kerr.InvalidConfig},
		{name: "lag-negative", parts: 1, configs: map[string]*string{"min.compaction.lag.ms": ptr("-1")}, want: kerr.InvalidConfig},
		{name: "null-config", parts: 1, configs: map[string]*string{"retention.ms": nil}, want: kerr.InvalidConfig},
		// Created alongside: -1 partitions is one; the largest record that fits.
		{name: "fine", parts: -1, configs: map[string]*string{"max.message.bytes": ptr("3145728"), "cleanup.policy": ptr(" compact ")}, wantParts: 1},
	}
	before := topicNames(t, d)
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = 10000
	for _, c := range cases {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = c.name, c.parts, 3
		for k, v := range c.configs {
			rc := kmsg.NewCreateTopicsRequestTopicConfig()
			rc.Name, rc.Value = k, v
			rt.Configs = append(rt.Configs, rc)
		}
		if c.assign {
			rt.NumPartitions, rt.ReplicationFactor = -1, -1
			a := kmsg.NewCreateTopicsRequestTopicReplicaAssignment()
			a.Partition, a.Replicas = 0, []int32{kafka.BrokerID("dev")}
			rt.ReplicaAssignment = append(rt.ReplicaAssignment, a)
		}
		req.Topics = append(req.Topics, rt)
	}
	// Two entries of "taken" are themselves a duplicate: send them apart.
	dupReq := *req
	dupReq.Topics = slices.Clone(req.Topics[:1])
	req.Topics = req.Topics[1:]
	cases = cases[1:]
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != len(cases) {
		t.Fatalf("%d answers to %d topics", len(resp.Topics), len(cases))
	}
	for i, c := range cases {
		rt := resp.Topics[i]
		if rt.Topic != c.name {
			t.Fatalf("answer %d is for %q; want %q", i, rt.Topic, c.name)
		}
		if c.want == nil {
			if rt.ErrorCode != 0 || rt.NumPartitions != c.wantParts || rt.ReplicationFactor != 1 {
				t.Errorf("%s: %v, %d partitions, replication factor %d; want created with %d, 1", c.name, kerr.ErrorForCode(rt.ErrorCode), rt.NumPartitions, rt.ReplicationFactor, c.wantParts)
			}
			continue
		}
		wantCode(t, c.name, rt.ErrorCode, rt.ErrorMessage, c.want)
		if rt.ErrorMessage == nil || !strings.Contains(*rt.ErrorMessage, c.msgHas) {
			t.Errorf("%s: message %v; want one containing %q", c.name, ptrStr(rt.ErrorMessage), c.msgHas)
		}
		if rt.NumPartitions != -1 || rt.Configs != nil {
			t.Errorf("%s: refused, yet answered %d partitions and configs %v", c.name, rt.NumPartitions, rt.Configs)
		}
	}
	if fine := getTopic(t, d, "fine"); fine.Partitions != 1 || fine.MaxRecordBytes != 3145728 || fine.CleanupPolicy != metadata.CleanupCompact {
		t.Fatalf("fine stored as %+v", fine)
	}
	dupResp, err := dupReq.RequestWith(ctx, cl)
	if err != nil || len(dupResp.Topics) != 1 {
		t.Fatalf("create taken again: %v %+v", err, dupResp)
	}
	wantCode(t, "taken again", dupResp.Topics[0].ErrorCode, dupResp.Topics[0].ErrorMessage, kerr.TopicAlreadyExists)

	// One topic named twice: one answer, refused, nothing created.
	dreq := kmsg.NewPtrCreateTopicsRequest()
	for range 2 {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "twice", 1, 1
		dreq.Topics = append(dreq.Topics, rt)
	}
	dresp, err := dreq.RequestWith(ctx, cl)
	if err != nil || len(dresp.Topics) != 1 {
		t.Fatalf("a topic named twice: %v %+v", err, dresp)
	}
	wantCode(t, "named twice", dresp.Topics[0].ErrorCode, dresp.Topics[0].ErrorMessage, kerr.InvalidRequest)

	// ValidateOnly: answered as a create would be, nothing stored.
	vreq := kmsg.NewPtrCreateTopicsRequest()
	vreq.ValidateOnly = true
	for _, n := range []string{"dry", "taken"} {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = n, 4, -1
		rc := kmsg.NewCreateTopicsRequestTopicConfig()
		rc.Name, rc.Value = "retention.ms", ptr("60000")
		rt.Configs = append(rt.Configs, rc)
		vreq.Topics = append(vreq.Topics, rt)
	}
	vresp, err := vreq.RequestWith(ctx, cl)
	if err != nil || len(vresp.Topics) != 2 {
		t.Fatalf("validate only: %v %+v", err, vresp)
	}
	if v := vresp.Topics[0]; v.ErrorCode != 0 || v.NumPartitions != 4 || len(v.Configs) != 6 {
		t.Fatalf("validate only of dry: %v %+v", kerr.ErrorForCode(v.ErrorCode), v)
	}
	wantCode(t, "validate only of taken", vresp.Topics[1].ErrorCode, vresp.Topics[1].ErrorMessage, kerr.TopicAlreadyExists)

	want := append(before, "fine")
	slices.Sort(want)
	if got := topicNames(t, d); !reflect.DeepEqual(got, want) {
		t.Fatalf("topics after the refused creates: %v; want %v", got, want)
	}
	if got := getTopic(t, d, "taken"); !reflect.DeepEqual(got, taken) {
		t.Fatalf("taken changed: %+v, was %+v", got, taken)
	}
}

func ptrStr(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return strconv.Quote(*s)
}

// TestAdminCreatePartitionsRefused: fewer or as many partitions as a topic
// has, more than Varve's limit, an assignment, an unknown topic and a
// topic named twice are refused with Kafka's codes (and its messages for
// the first two), and ValidateOnly grows nothing: the topic is as it was.
func TestAdminCreatePartitionsRefused(t *testing.T) {
	d := startDev(t, nodeConfig())
	ctx := adminCtx(t)
	cl := newClient(t, d)
	createTopic(t, d, "grow", 3)
	was := getTopic(t, d, "grow")

	type tc struct {
		topic  string
		count  int32
		assign bool
		want   *kerr.Error
		msg    string
	}
	for _, c := range []tc{
		{topic: "grow", count: 2, want: kerr.InvalidPartitions, msg: "The topic grow currently has 3 partition(s); 2 would not be an increase."},
		{topic: "grow", count: 0, want: kerr.InvalidPartitions, msg: "The topic grow currently has 3 partition(s); 0 would not be an increase."},
		{topic: "grow", count: 3, want: kerr.InvalidPartitions, msg: "Topic already has 3 partition(s)."},
		{topic: "grow", count: metadata.MaxPartitions + 1, want: kerr.InvalidPartitions, msg: "10000"},
		{topic: "grow", count: 4, assign: true, want: kerr.InvalidRequest, msg: "assignment"},
		{topic: "nope", count: 4, want: kerr.UnknownTopicOrPartition},
		{topic: "bad/name", count: 4, want: kerr.UnknownTopicOrPartition},
	} {
		req := kmsg.NewPtrCreatePartitionsRequest()
		req.TimeoutMillis = 10000
		rt := kmsg.NewCreatePartitionsRequestTopic()
		rt.Topic, rt.Count = c.topic, c.count
		if c.assign {
			a := kmsg.NewCreatePartitionsRequestTopicAssignment()
			a.Replicas = []int32{1}
			rt.Assignment = append(rt.Assignment, a)
		}
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || len(resp.Topics) != 1 {
			t.Fatalf("%s to %d: %v %+v", c.topic, c.count, err, resp)
		}
		what := c.topic + " to " + strconv.Itoa(int(c.count))
		wantCode(t, what, resp.Topics[0].ErrorCode, resp.Topics[0].ErrorMessage, c.want)
		if c.msg != "" && !strings.Contains(ptrStr(resp.Topics[0].ErrorMessage), c.msg) {
			t.Errorf("%s: message %s; want %q", what, ptrStr(resp.Topics[0].ErrorMessage), c.msg)
		}
	}

	// Named twice: refused once.
	req := kmsg.NewPtrCreatePartitionsRequest()
	for range 2 {
		rt := kmsg.NewCreatePartitionsRequestTopic()
		rt.Topic, rt.Count = "grow", 5
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Topics) != 1 {
		t.Fatalf("named twice: %v %+v", err, resp)
	}
	wantCode(t, "named twice", resp.Topics[0].ErrorCode, resp.Topics[0].ErrorMessage, kerr.InvalidRequest)

	// ValidateOnly: answered, nothing grown.
	vr, err := kadm.NewClient(cl).ValidateUpdatePartitions(ctx, 6, "grow")
	if err != nil || vr["grow"].Err != nil {
		t.Fatalf("validate only: %v %+v", err, vr)
	}
	if got := getTopic(t, d, "grow"); !reflect.DeepEqual(got, was) {
		t.Fatalf("after the refused and validate-only requests: %+v; was %+v", got, was)
	}
}

// incremental sends one IncrementalAlterConfigs resource and returns its
// answer.
func incremental(t *testing.T, cl *kgo.Client, validateOnly bool, typ kmsg.ConfigResourceType, name string, cfgs ...kmsg.IncrementalAlterConfigsRequestResourceConfig) kmsg.IncrementalAlterConfigsResponseResource {
	t.Helper()
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	req.ValidateOnly = validateOnly
	rr := kmsg.NewIncrementalAlterConfigsRequestResource()
	rr.ResourceType, rr.ResourceName, rr.Configs = typ, name, cfgs
	req.Resources = append(req.Resources, rr)
	kr, err := self(t, cl).Request(context.Background(), req)
	if err != nil {
		t.Fatalf("IncrementalAlterConfigs: %v", err)
	}
	resp := kr.(*kmsg.IncrementalAlterConfigsResponse)
	if len(resp.Resources) != 1 {
		t.Fatalf("IncrementalAlterConfigs: %+v", resp)
	}
	return resp.Resources[0]
}

// self is the varve dev's broker, asked directly: kgo sends a broker
// resource to the broker its name is the id of.
func self(t *testing.T, cl *kgo.Client) *kgo.Broker {
	t.Helper()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	return cl.Broker(int(kafka.BrokerID("dev")))
}

func op(o kmsg.IncrementalAlterConfigOp, name string, value *string) kmsg.IncrementalAlterConfigsRequestResourceConfig {
	c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	c.Op, c.Name, c.Value = o, name, value
	return c
}

// TestAdminAlterConfigsRefused: every alter Varve refuses answers its
// Kafka code and changes nothing, even when the same resource holds a
// valid change too (one etcd transaction per resource); ValidateOnly
// changes nothing either.
func TestAdminAlterConfigsRefused(t *testing.T) {
	d := smallDev(t)
	ctx := adminCtx(t)
	cl := newClient(t, d)
	if _, err := d.Meta().CreateTopic(ctx, metadata.Topic{Name: "cfg", Partitions: 2, RetentionMs: 123456, CleanupPolicy: metadata.CleanupCompact}); err != nil {
		t.Fatal(err)
	}
	was := getTopic(t, d, "cfg")
	set, del := kmsg.IncrementalAlterConfigOpSet, kmsg.IncrementalAlterConfigOpDelete
	good := op(set, "retention.bytes", ptr("999"))
	topic := kmsg.ConfigResourceTypeTopic
	for _, c := range []struct {
		what string
		typ  kmsg.ConfigResourceType
		name string
		cfgs []kmsg.IncrementalAlterConfigsRequestResourceConfig
		want *kerr.Error
		msg  string
	}{
		{"unknown key", topic, "cfg", mk(good, op(set, "segment.bytes", ptr("1"))), kerr.InvalidConfig, "segment.bytes"},
		{"unknown key deleted", topic, "cfg", mk(good, op(del, "min.insync.replicas", nil)), kerr.InvalidConfig, "min.insync.replicas"},
		{"append", topic, "cfg", mk(good, op(kmsg.IncrementalAlterConfigOpAppend, "cleanup.policy", ptr("delete"))), kerr.InvalidRequest, "APPEND"},
		{"subtract", topic, "cfg", mk(good, op(kmsg.IncrementalAlterConfigOpSubtract, "cleanup.policy", ptr("compact"))), kerr.InvalidRequest, "SUBTRACT"},
		{"unknown op", topic, "cfg", mk(good, op(9, "retention.ms", ptr("1"))), kerr.InvalidRequest, "operation"},
		{"not a number", topic, "cfg", mk(good, op(set, "retention.ms", ptr("soon"))), kerr.InvalidConfig, "retention.ms"},
		{"retention 0", topic, "cfg", mk(good, op(set, "retention.ms", ptr("0"))), kerr.InvalidConfig, "retention_ms 0"},
		{"retention -2", topic, "cfg", mk(good, op(set, "retention.ms", ptr("-2"))), kerr.InvalidConfig, "retention_ms"},
		{"tombstones 0", topic, "cfg", mk(good, op(set, "delete.retention.ms", ptr("0"))), kerr.InvalidConfig, "delete_retention_ms"},
		{"both policies", topic, "cfg", mk(good, op(set, "cleanup.policy", ptr("delete,compact"))), kerr.InvalidConfig, "compact"},
		{"record over request", topic, "cfg", mk(good, op(set, "max.message.bytes", ptr("4194304"))), kerr.InvalidConfig, "max_request_bytes"},
		{"set without value", topic, "cfg", mk(good, op(set, "retention.ms", nil)), kerr.InvalidRequest, "value"},
		{"key twice", topic, "cfg", mk(good, op(set, "retention.bytes", ptr("5"))), kerr.InvalidRequest, "twice"},
		{"unknown topic", topic, "nope", mk(good), kerr.UnknownTopicOrPartition, ""},
		{"bad topic name", topic, "bad/name", mk(good), kerr.InvalidTopicException, ""},
		{"broker", kmsg.ConfigResourceTypeBroker, "", mk(op(set, "log.retention.ms", ptr("1"))), kerr.InvalidRequest, "read-only"},
		{"broker logger", kmsg.ConfigResourceTypeBrokerLogger, "1", mk(op(set, "kafka", ptr("DEBUG"))), kerr.InvalidRequest, "resource type"},
	} {
		r := incremental(t, cl, false, c.typ, c.name, c.cfgs...)
		wantCode(t, c.what, r.ErrorCode, r.ErrorMessage, c.want)
		if !strings.Contains(ptrStr(r.ErrorMessage), c.msg) {
			t.Errorf("%s: message %s; want one containing %q", c.what, ptrStr(r.ErrorMessage), c.msg)
		}
	}

	// The same resource twice: both refused.
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	for range 2 {
		rr := kmsg.NewIncrementalAlterConfigsRequestResource()
		rr.ResourceType, rr.ResourceName, rr.Configs = topic, "cfg", mk(good)
		req.Resources = append(req.Resources, rr)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Resources) != 2 {
		t.Fatalf("a resource twice: %v %+v", err, resp)
	}
	for _, r := range resp.Resources {
		wantCode(t, "a resource twice", r.ErrorCode, r.ErrorMessage, kerr.InvalidRequest)
	}

	// ValidateOnly of a valid change: no error, no change.
	if r := incremental(t, cl, true, topic, "cfg", good, op(del, "retention.ms", nil)); r.ErrorCode != 0 {
		t.Fatalf("validate only: %v %s", kerr.ErrorForCode(r.ErrorCode), ptrStr(r.ErrorMessage))
	}
	if r := incremental(t, cl, true, topic, "cfg", op(set, "retention.ms", ptr("0"))); r.ErrorCode != kerr.InvalidConfig.Code {
		t.Fatalf("validate only of retention.ms 0: %v; want INVALID_CONFIG", kerr.ErrorForCode(r.ErrorCode))
	}

	// The legacy AlterConfigs refuses the same way.
	adm := kadm.NewClient(cl)
	for _, c := range []struct {
		what string
		cfgs []kadm.AlterConfig
		want *kerr.Error
	}{
		{"legacy unknown key", []kadm.AlterConfig{{Name: "retention.ms", Value: ptr("1000")}, {Name: "segment.ms", Value: ptr("1")}}, kerr.InvalidConfig},
		{"legacy bad value", []kadm.AlterConfig{{Name: "retention.ms", Value: ptr("0")}}, kerr.InvalidConfig},
		{"legacy null value", []kadm.AlterConfig{{Name: "retention.ms"}}, kerr.InvalidRequest},
	} {
		rs, err := adm.AlterTopicConfigsState(ctx, c.cfgs, "cfg")
		if err != nil || len(rs) != 1 {
			t.Fatalf("%s: %v %+v", c.what, err, rs)
		}
		if !errors.Is(rs[0].Err, c.want) {
			t.Errorf("%s: %v (%s); want %s", c.what, rs[0].Err, rs[0].ErrMessage, c.want.Message)
		}
	}
	if rs, err := adm.ValidateAlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: ptr("1000")}}, "cfg"); err != nil || rs[0].Err != nil {
		t.Fatalf("legacy validate only: %v %+v", err, rs)
	}

	if got := getTopic(t, d, "cfg"); !reflect.DeepEqual(got, was) {
		t.Fatalf("after refused alters: %+v; was %+v", got, was)
	}
	if got, want := topicNames(t, d), []string{"cfg"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("topics: %v; want %v", got, want)
	}
}

func mk(cs ...kmsg.IncrementalAlterConfigsRequestResourceConfig) []kmsg.IncrementalAlterConfigsRequestResourceConfig {
	return cs
}

// describeConfigs sends one DescribeConfigs resource.
func describeConfigs(t *testing.T, cl *kgo.Client, typ kmsg.ConfigResourceType, name string, names []string) kmsg.DescribeConfigsResponseResource {
	t.Helper()
	req := kmsg.NewPtrDescribeConfigsRequest()
	req.IncludeSynonyms, req.IncludeDocumentation = true, true
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType, rr.ResourceName, rr.ConfigNames = typ, name, names
	req.Resources = append(req.Resources, rr)
	kr, err := self(t, cl).Request(context.Background(), req)
	if err != nil {
		t.Fatalf("DescribeConfigs: %v", err)
	}
	resp := kr.(*kmsg.DescribeConfigsResponse)
	if len(resp.Resources) != 1 {
		t.Fatalf("DescribeConfigs: %+v", resp)
	}
	return resp.Resources[0]
}

// TestAdminDescribeConfigs: a topic with Varve's defaults describes each
// config as DEFAULT_CONFIG with its broker synonym, type and
// documentation; ConfigNames filters; unknown and invalid topics answer
// their codes; a broker describes a read-only set, and only its own id
// (or "") is its.
func TestAdminDescribeConfigs(t *testing.T) {
	d := startDev(t, nodeConfig())
	ctx := adminCtx(t)
	cl := newClient(t, d)
	createTopic(t, d, "plain", 1)

	r := describeConfigs(t, cl, kmsg.ConfigResourceTypeTopic, "plain", nil)
	if r.ErrorCode != 0 || len(r.Configs) != 6 {
		t.Fatalf("describe plain: %v %+v", kerr.ErrorForCode(r.ErrorCode), r)
	}
	wantDefaults := map[string]string{
		"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "delete",
		"max.message.bytes": "1048576", "delete.retention.ms": "86400000", "min.compaction.lag.ms": "0",
	}
	for _, c := range r.Configs {
		if ptrStr(c.Value) != strconv.Quote(wantDefaults[c.Name]) || c.Source != kmsg.ConfigSourceDefaultConfig || c.ReadOnly ||
			c.ConfigType == kmsg.ConfigTypeUnknown || c.Documentation == nil || len(c.ConfigSynonyms) != 1 || c.IsSensitive {
			t.Errorf("config %+v; want %s = %s, a default, writable, typed, documented, with its broker synonym", c, c.Name, wantDefaults[c.Name])
		}
	}

	r = describeConfigs(t, cl, kmsg.ConfigResourceTypeTopic, "plain", []string{"cleanup.policy", "segment.bytes"})
	if r.ErrorCode != 0 || len(r.Configs) != 1 || r.Configs[0].Name != "cleanup.policy" || r.Configs[0].ConfigType != kmsg.ConfigTypeList {
		t.Fatalf("describe with ConfigNames: %+v", r)
	}
	if r = describeConfigs(t, cl, kmsg.ConfigResourceTypeTopic, "plain", []string{}); r.ErrorCode != 0 || len(r.Configs) != 6 {
		t.Fatalf("describe with no ConfigNames (an empty list): %d configs; want all 6", len(r.Configs))
	}
	r = describeConfigs(t, cl, kmsg.ConfigResourceTypeTopic, "nope", nil)
	wantCode(t, "unknown topic", r.ErrorCode, r.ErrorMessage, kerr.UnknownTopicOrPartition)
	r = describeConfigs(t, cl, kmsg.ConfigResourceTypeTopic, "bad/name", nil)
	wantCode(t, "invalid topic name", r.ErrorCode, r.ErrorMessage, kerr.InvalidTopicException)

	// Brokers: "" (cluster-wide) and this node's id; another id is not
	// this broker's.
	selfID := kafka.BrokerID("dev")
	bcs, err := kadm.NewClient(cl).DescribeBrokerConfigs(ctx)
	if err != nil || len(bcs) != 1 || bcs[0].Err != nil {
		t.Fatalf("describe broker configs: %v %+v", err, bcs)
	}
	got := map[string]string{}
	for _, c := range bcs[0].Configs {
		got[c.Key] = c.MaybeValue()
	}
	for k, v := range map[string]string{"log.retention.ms": "604800000", "message.max.bytes": "1048576", "num.partitions": "1",
		"default.replication.factor": "1", "auto.create.topics.enable": "false", "log.cleanup.policy": "delete"} {
		if got[k] != v {
			t.Errorf("broker config %s = %q; want %q", k, got[k], v)
		}
	}
	br := describeConfigs(t, cl, kmsg.ConfigResourceTypeBroker, "", []string{"broker.id"})
	if br.ErrorCode != 0 || len(br.Configs) != 1 || ptrStr(br.Configs[0].Value) != strconv.Quote(strconv.Itoa(int(selfID))) || !br.Configs[0].ReadOnly {
		t.Fatalf("broker.id: %+v; want %d, read-only", br, selfID)
	}
	br = describeConfigs(t, cl, kmsg.ConfigResourceTypeBroker, strconv.Itoa(int(selfID)), nil)
	if br.ErrorCode != 0 || len(br.Configs) != len(bcs[0].Configs) {
		t.Fatalf("broker %d: %v, %d configs", selfID, kerr.ErrorForCode(br.ErrorCode), len(br.Configs))
	}
	br = describeConfigs(t, cl, kmsg.ConfigResourceTypeBroker, "12345", nil)
	wantCode(t, "another broker", br.ErrorCode, br.ErrorMessage, kerr.InvalidRequest)
	br = describeConfigs(t, cl, kmsg.ConfigResourceTypeGroupConfig, "g", nil)
	wantCode(t, "group configs", br.ErrorCode, br.ErrorMessage, kerr.InvalidRequest)
}

// TestAdminDeleteTopicsByID: DeleteTopics v6 by topic id deletes the topic
// of that id and names it; an id no topic has is UNKNOWN_TOPIC_ID, a name
// and an id together INVALID_REQUEST, an unknown name
// UNKNOWN_TOPIC_OR_PARTITION; the refused ones delete nothing.
func TestAdminDeleteTopicsByID(t *testing.T) {
	d := startDev(t, nodeConfig())
	ctx := adminCtx(t)
	cl := newClient(t, d)
	createTopic(t, d, "byid", 2)
	createTopic(t, d, "kept", 1)
	id := kafkaTopicID(getTopic(t, d, "byid"))
	keptID := kafkaTopicID(getTopic(t, d, "kept"))

	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TimeoutMillis = 10000
	add := func(name *string, id [16]byte) {
		rt := kmsg.NewDeleteTopicsRequestTopic()
		rt.Topic, rt.TopicID = name, id
		req.Topics = append(req.Topics, rt)
	}
	add(nil, [16]byte{1, 2, 3})       // no such id
	add(nil, [16]byte{})              // no name, no id
	add(ptr("kept"), keptID)          // both
	add(ptr("never-was"), [16]byte{}) // unknown name
	add(ptr(""), [16]byte{})          // an empty name
	add(nil, id)                      // the topic
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Topics) != 6 {
		t.Fatalf("delete: %v %+v", err, resp)
	}
	wantCode(t, "unknown id", resp.Topics[0].ErrorCode, resp.Topics[0].ErrorMessage, kerr.UnknownTopicID)
	wantCode(t, "zero id", resp.Topics[1].ErrorCode, resp.Topics[1].ErrorMessage, kerr.UnknownTopicID)
	wantCode(t, "name and id", resp.Topics[2].ErrorCode, resp.Topics[2].ErrorMessage, kerr.InvalidRequest)
	wantCode(t, "unknown name", resp.Topics[3].ErrorCode, resp.Topics[3].ErrorMessage, kerr.UnknownTopicOrPartition)
	wantCode(t, "empty name", resp.Topics[4].ErrorCode, resp.Topics[4].ErrorMessage, kerr.UnknownTopicOrPartition)
	if r := resp.Topics[5]; r.ErrorCode != 0 || ptrStr(r.Topic) != `"byid"` || r.TopicID != id {
		t.Fatalf("delete by id: %v %+v", kerr.ErrorForCode(r.ErrorCode), r)
	}
	if got := topicNames(t, d); !reflect.DeepEqual(got, []string{"kept"}) {
		t.Fatalf("topics after delete by id: %v; want [kept]", got)
	}
}

// TestAdminAPIVersions: the admin APIs are advertised, and a client
// pinned to each version of each gets an answer it decodes.
func TestAdminAPIVersions(t *testing.T) {
	d := startDev(t, nodeConfig())
	ctx := adminCtx(t)
	want := map[int16][2]int16{19: {0, 7}, 20: {0, 6}, 32: {0, 4}, 33: {0, 2}, 37: {0, 3}, 44: {0, 1}}
	vresp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, newClient(t, d))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range vresp.ApiKeys {
		if w, ok := want[k.ApiKey]; ok {
			if k.MinVersion != w[0] || k.MaxVersion != w[1] {
				t.Errorf("API %d: versions %d-%d; want %d-%d", k.ApiKey, k.MinVersion, k.MaxVersion, w[0], w[1])
			}
			delete(want, k.ApiKey)
		}
	}
	if len(want) != 0 {
		t.Fatalf("not advertised: %v", want)
	}

	for v := int16(0); v <= 7; v++ {
		vs := kversion.Stable()
		for _, k := range []int16{19, 20, 32, 33, 37, 44} {
			max, _ := vs.LookupMaxKeyVersion(k)
			vs.SetMaxKeyVersion(k, min(v, max, map[int16]int16{19: 7, 20: 6, 32: 4, 33: 2, 37: 3, 44: 1}[k]))
		}
		cl := newClient(t, d, kgo.MaxVersions(vs))
		adm := kadm.NewClient(cl)
		name := "v" + strconv.Itoa(int(v))
		cr, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"retention.ms": ptr("1000")}, name)
		if err != nil || cr.Err != nil {
			t.Fatalf("v%d create: %v %+v", v, err, cr)
		}
		if _, err := adm.UpdatePartitions(ctx, 2, name); err != nil {
			t.Fatalf("v%d create partitions: %v", v, err)
		}
		if rs, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: ptr("2000")}}, name); err != nil || rs[0].Err != nil {
			t.Fatalf("v%d incremental alter: %v %+v", v, err, rs)
		}
		if rs, err := adm.AlterTopicConfigsState(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: ptr("3000")}}, name); err != nil || rs[0].Err != nil {
			t.Fatalf("v%d alter: %v %+v", v, err, rs)
		}
		rcs, err := adm.DescribeTopicConfigs(ctx, name)
		if err != nil || rcs[0].Err != nil {
			t.Fatalf("v%d describe: %v %+v", v, err, rcs)
		}
		if c, _ := rcs.On(name, nil); len(c.Configs) != 6 {
			t.Fatalf("v%d describe: %+v", v, c)
		}
		if tp := getTopic(t, d, name); tp.Partitions != 2 || tp.RetentionMs != 3000 {
			t.Fatalf("v%d: stored %+v", v, tp)
		}
		if dr, err := adm.DeleteTopics(ctx, name); err != nil || dr[name].Err != nil {
			t.Fatalf("v%d delete: %v %+v", v, err, dr)
		}
	}
	if got := topicNames(t, d); len(got) != 0 {
		t.Fatalf("topics left: %v", got)
	}
}
