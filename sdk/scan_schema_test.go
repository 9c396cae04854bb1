package sdk_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

func jsonSchema(fields string) *admin.Schema {
	return &admin.Schema{Format: admin.SchemaJSON, Fields: fields}
}

func ptr[T any](v T) *T { return &v }

// TestTopicSchemaOverAPI: a schema given at creation or later is checked,
// stored in canonical form and turns scans over Connect into typed
// columns; bad schemas and updates are INVALID_ARGUMENT and change nothing.
func TestTopicSchemaOverAPI(t *testing.T) {
	c := newClient(t)
	ctx := testCtx(t)
	topic := uniq("typed")

	// Bad schemas at creation: nothing is created.
	for _, bad := range []struct {
		schema *admin.Schema
		msg    string
	}{
		{jsonSchema(`[{"name":"a","type":"varchar"}]`), `unknown type "varchar"`},
		{jsonSchema(`[{"name":"a","type":"list<int32"}]`), `want '>'`},
		{jsonSchema(`[{"name":"offset","type":"int64"}]`), `clashes with a record column`},
		{jsonSchema(`not json`), `JSON list`},
		{&admin.Schema{Format: admin.SchemaProtobuf, Fields: `[{"name":"a","type":"int32"}]`}, `not supported yet`},
		{&admin.Schema{Format: admin.SchemaAvro, Fields: `[{"name":"a","type":"int32"}]`}, `not supported yet`},
		{&admin.Schema{Format: "yaml", Fields: `[{"name":"a","type":"int32"}]`}, `schema format "yaml"`},
	} {
		_, err := admin.NewFromClient(c).CreateTopic(ctx, topic, 1, &admin.TopicConfig{Schema: bad.schema})
		wantCode(t, err, connect.CodeInvalidArgument)
		if !strings.Contains(err.Error(), bad.msg) {
			t.Fatalf("create with %s: %v, want %q", bad.schema.Fields, err, bad.msg)
		}
	}
	if _, err := admin.NewFromClient(c).DescribeTopic(ctx, topic); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("a refused create left a topic: %v", err)
	}

	created, err := admin.NewFromClient(c).CreateTopic(ctx, topic, 1, &admin.TopicConfig{Schema: jsonSchema(`[{"name":"user","type":"string"},{"name":"n","type":"int64","nullable":false}]`)})
	if err != nil {
		t.Fatal(err)
	}
	if got := created.Config.Schema.Fields; got != `[{"name":"user","type":"utf8"},{"name":"n","type":"int64","nullable":false}]` {
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
	before, err := admin.NewFromClient(c).DescribeTopic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		req  admin.TopicUpdate
		code connect.Code
		msg  string
	}{
		{admin.TopicUpdate{}, connect.CodeInvalidArgument, "nothing to change"},
		{admin.TopicUpdate{Partitions: ptr[int32](0)}, connect.CodeInvalidArgument, "partitions can only grow"},
		{admin.TopicUpdate{Retention: ptr(-5 * time.Millisecond)}, connect.CodeInvalidArgument, "retention_ms"},
		{admin.TopicUpdate{RetentionBytes: ptr[int64](0)}, connect.CodeInvalidArgument, "retention_bytes"},
		{admin.TopicUpdate{MaxRecordBytes: ptr[int32](-1)}, connect.CodeInvalidArgument, "max_record_bytes"},
		{admin.TopicUpdate{Schema: jsonSchema(`[{"name":"x","type":"int128"}]`)}, connect.CodeInvalidArgument, `unknown type "int128"`},
		{admin.TopicUpdate{Schema: jsonSchema(`[{"name":"x","type":"int32"}]`), ClearSchema: true}, connect.CodeInvalidArgument, "together"},
	} {
		_, err := admin.NewFromClient(c).UpdateTopic(ctx, topic, bad.req)
		wantCode(t, err, bad.code)
		if !strings.Contains(err.Error(), bad.msg) {
			t.Fatalf("update %v: %v, want %q", bad.req, err, bad.msg)
		}
	}
	if _, err := admin.NewFromClient(c).UpdateTopic(ctx, "no-such-topic", admin.TopicUpdate{Retention: ptr(time.Second)}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("update of an unknown topic: %v", err)
	}
	after, err := admin.NewFromClient(c).DescribeTopic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("refused updates changed the topic:\n%v\n%v", before, after)
	}

	// Good updates keep the id and the records.
	up, err := admin.NewFromClient(c).UpdateTopic(ctx, topic, admin.TopicUpdate{
		Retention: ptr(time.Hour), RetentionBytes: ptr[int64](1 << 30), MaxRecordBytes: ptr[int32](2048), Partitions: ptr[int32](3),
		Schema: jsonSchema(`[{"name":"user","type":"binary"}]`),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := up.Config
	if up.ID != created.ID || up.Partitions != 3 || cfg.Retention != time.Hour || cfg.RetentionBytes != 1<<30 || cfg.MaxRecordBytes != 2048 ||
		cfg.Schema == nil || cfg.Schema.Fields != `[{"name":"user","type":"binary"}]` {
		t.Fatalf("updated topic %v", up)
	}
	d, err := admin.NewFromClient(c).DescribeTopic(ctx, topic)
	if err != nil || len(d.Partitions) != 3 || d.Partitions[0].NextOffset != 3 {
		t.Fatalf("after growing: %v, %v", d, err)
	}
	if _, err := c.Produce(ctx, topic, []sdk.Record{{Partition: 2, ExplicitPartition: true, Value: []byte(`{"user":"AQI="}`)}}); err != nil {
		t.Fatalf("produce to a new partition: %v", err)
	}
	// The scan follows the new schema (once this node's index saw it).
	if _, err := admin.NewFromClient(c).UpdateTopic(ctx, topic, admin.TopicUpdate{ClearSchema: true}); err != nil {
		t.Fatal(err)
	}
	d, err = admin.NewFromClient(c).DescribeTopic(ctx, topic)
	if err != nil || d.Topic.Config.Schema != nil {
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
