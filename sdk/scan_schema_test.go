package sdk_test

import (
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow/array"
	"google.golang.org/protobuf/proto"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/sdk"
)

func jsonSchema(fields string) *varvev1.TopicSchema {
	return &varvev1.TopicSchema{Format: varvev1.SchemaFormat_SCHEMA_FORMAT_JSON, Fields: fields}
}

// TestTopicSchemaOverAPI: a schema given at creation or later is checked,
// stored in canonical form and turns scans over Connect into typed
// columns; bad schemas and updates are INVALID_ARGUMENT and change nothing.
func TestTopicSchemaOverAPI(t *testing.T) {
	c := newClient(t)
	ctx := testCtx(t)
	topic := uniq("typed")

	// Bad schemas at creation: nothing is created.
	for _, bad := range []struct {
		schema *varvev1.TopicSchema
		msg    string
	}{
		{jsonSchema(`[{"name":"a","type":"varchar"}]`), `unknown type "varchar"`},
		{jsonSchema(`[{"name":"a","type":"list<int32"}]`), `want '>'`},
		{jsonSchema(`[{"name":"offset","type":"int64"}]`), `clashes with a record column`},
		{jsonSchema(`not json`), `JSON list`},
		{&varvev1.TopicSchema{Format: varvev1.SchemaFormat_SCHEMA_FORMAT_PROTOBUF, Fields: `[{"name":"a","type":"int32"}]`}, `not supported yet`},
		{&varvev1.TopicSchema{Format: varvev1.SchemaFormat_SCHEMA_FORMAT_AVRO, Fields: `[{"name":"a","type":"int32"}]`}, `not supported yet`},
	} {
		_, err := c.CreateTopic(ctx, topic, 1, &varvev1.TopicConfig{Schema: bad.schema})
		wantCode(t, err, connect.CodeInvalidArgument)
		if !strings.Contains(err.Error(), bad.msg) {
			t.Fatalf("create with %s: %v, want %q", bad.schema.GetFields(), err, bad.msg)
		}
	}
	if _, err := c.DescribeTopic(ctx, topic); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("a refused create left a topic: %v", err)
	}

	created, err := c.CreateTopic(ctx, topic, 1, &varvev1.TopicConfig{Schema: jsonSchema(`[{"name":"user","type":"string"},{"name":"n","type":"int64","nullable":false}]`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := created.GetConfig().GetSchema().GetFields(); got != `[{"name":"user","type":"utf8"},{"name":"n","type":"int64","nullable":false}]` {
		t.Fatalf("stored schema %s", got)
	}
	if _, err := c.Produce(ctx, topic, []sdk.Record{
		{Value: []byte(`{"user":"ann","n":1}`)}, {Value: []byte(`{"user":"bob"}`)}, {Value: []byte(`{"n":"x"}`)},
	}); err != nil {
		t.Fatal(err)
	}
	scanTyped := func(cols ...string) [][]string {
		t.Helper()
		rd, err := c.Scan(ctx, topic, sdk.ScanOptions{Columns: cols})
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Release()
		var names []string
		for _, f := range rd.Schema().Fields() {
			names = append(names, f.Name)
		}
		out := [][]string{names}
		for rd.Next() {
			rec := rd.RecordBatch()
			for i := range int(rec.NumRows()) {
				var row []string
				for c := range names {
					row = append(row, rec.Column(c).ValueStr(i))
				}
				out = append(out, row)
			}
		}
		if err := rd.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := scanTyped("offset", "user", "n", "_error")
	want := [][]string{
		{"offset", "user", "n", "_error"},
		{"0", "ann", "1", "(null)"},
		{"1", "(null)", "(null)", `field "n": missing or null, and not nullable`},
		{"2", "(null)", "(null)", `field "n": want an int64, got "x"`},
	}
	if strings.Join(flatten(got), "|") != strings.Join(flatten(want), "|") {
		t.Fatalf("typed scan:\n%q\nwant\n%q", got, want)
	}
	rd, err := c.Scan(ctx, topic, sdk.ScanOptions{Columns: []string{"nope"}})
	if err == nil {
		rd.Release()
	}
	wantCode(t, err, connect.CodeInvalidArgument)

	// Updates: bad ones change nothing.
	before, err := c.DescribeTopic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		req  *varvev1.UpdateTopicRequest
		code connect.Code
		msg  string
	}{
		{&varvev1.UpdateTopicRequest{}, connect.CodeInvalidArgument, "nothing to change"},
		{&varvev1.UpdateTopicRequest{Partitions: proto.Int32(0)}, connect.CodeInvalidArgument, "partitions can only grow"},
		{&varvev1.UpdateTopicRequest{RetentionMs: proto.Int64(-5)}, connect.CodeInvalidArgument, "retention_ms"},
		{&varvev1.UpdateTopicRequest{RetentionBytes: proto.Int64(0)}, connect.CodeInvalidArgument, "retention_bytes"},
		{&varvev1.UpdateTopicRequest{MaxRecordBytes: proto.Int32(-1)}, connect.CodeInvalidArgument, "max_record_bytes"},
		{&varvev1.UpdateTopicRequest{Schema: jsonSchema(`[{"name":"x","type":"int128"}]`)}, connect.CodeInvalidArgument, `unknown type "int128"`},
		{&varvev1.UpdateTopicRequest{Schema: jsonSchema(`[{"name":"x","type":"int32"}]`), ClearSchema: true}, connect.CodeInvalidArgument, "together"},
	} {
		_, err := c.UpdateTopic(ctx, topic, bad.req)
		wantCode(t, err, bad.code)
		if !strings.Contains(err.Error(), bad.msg) {
			t.Fatalf("update %v: %v, want %q", bad.req, err, bad.msg)
		}
	}
	if _, err := c.UpdateTopic(ctx, "no-such-topic", &varvev1.UpdateTopicRequest{RetentionMs: proto.Int64(1000)}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("update of an unknown topic: %v", err)
	}
	after, err := c.DescribeTopic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(before, after) {
		t.Fatalf("refused updates changed the topic:\n%v\n%v", before, after)
	}

	// Good updates keep the id and the records.
	up, err := c.UpdateTopic(ctx, topic, &varvev1.UpdateTopicRequest{
		RetentionMs: proto.Int64(3600_000), RetentionBytes: proto.Int64(1 << 30), MaxRecordBytes: proto.Int32(2048), Partitions: proto.Int32(3),
		Schema: jsonSchema(`[{"name":"user","type":"binary"}]`),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := up.GetConfig()
	if up.GetId() != created.GetId() || up.GetPartitions() != 3 || cfg.GetRetentionMs() != 3600_000 || cfg.GetRetentionBytes() != 1<<30 || cfg.GetMaxRecordBytes() != 2048 ||
		cfg.GetSchema().GetFields() != `[{"name":"user","type":"binary"}]` {
		t.Fatalf("updated topic %v", up)
	}
	d, err := c.DescribeTopic(ctx, topic)
	if err != nil || len(d.GetPartitions()) != 3 || d.GetPartitions()[0].GetNextOffset() != 3 {
		t.Fatalf("after growing: %v, %v", d, err)
	}
	if _, err := c.Produce(ctx, topic, []sdk.Record{{Partition: 2, ExplicitPartition: true, Value: []byte(`{"user":"AQI="}`)}}); err != nil {
		t.Fatalf("produce to a new partition: %v", err)
	}
	// The scan follows the new schema (once this node's index saw it).
	if _, err := c.UpdateTopic(ctx, topic, &varvev1.UpdateTopicRequest{ClearSchema: true}); err != nil {
		t.Fatal(err)
	}
	d, err = c.DescribeTopic(ctx, topic)
	if err != nil || d.GetTopic().GetConfig().GetSchema() != nil {
		t.Fatalf("schema not cleared: %v, %v", d, err)
	}
	rd, err = c.Scan(ctx, topic, sdk.ScanOptions{Partitions: []int32{2}})
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	if rd.Schema().NumFields() != 7 || !rd.Next() || rd.RecordBatch().Column(5).(*array.Binary).ValueString(0) != `{"user":"AQI="}` {
		t.Fatalf("scan after clearing the schema: %s %v", rd.Schema(), rd.Err())
	}
}

func flatten(rows [][]string) []string {
	var out []string
	for _, r := range rows {
		out = append(out, strings.Join(r, ","))
	}
	return out
}
