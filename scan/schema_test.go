package scan_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/varve-io/varve/ingest"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/node/arrowflight"
	"github.com/varve-io/varve/parquet"
	"github.com/varve-io/varve/scan"
	"github.com/varve-io/varve/tier/segment"
)

func jsonSchema(fields string) metadata.TopicSchema {
	return metadata.TopicSchema{Format: metadata.SchemaJSON, Fields: fields}
}

func TestParseTopicSchema(t *testing.T) {
	s, err := scan.ParseTopicSchema(jsonSchema(`[
		{"name": "user", "type": "string"},
		{"name": "amount", "type": "double", "nullable": false},
		{"name": "at", "type": "timestamp[us]", "json": "timestamp"},
		{"name": "day", "type": "date32", "nullable": true},
		{"name": "tags", "type": "list< utf8 >"},
		{"name": "geo", "type": "struct<lat: float64,lon:float64, where: struct<city: utf8>>"},
		{"name": "raw", "type": "binary"}, {"name": "ok", "type": "boolean"},
		{"name": "small", "type": "int8"}, {"name": "n", "type": "uint64"}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"name":"user","type":"utf8"},{"name":"amount","type":"float64","nullable":false},` +
		`{"name":"at","type":"timestamp[us]","json":"timestamp"},{"name":"day","type":"date32"},{"name":"tags","type":"list<utf8>"},` +
		`{"name":"geo","type":"struct<lat: float64, lon: float64, where: struct<city: utf8>>"},{"name":"raw","type":"binary"},` +
		`{"name":"ok","type":"bool"},{"name":"small","type":"int8"},{"name":"n","type":"uint64"}]`
	if got := s.Canonical(); got.Fields != want || got.Format != "json" {
		t.Fatalf("canonical form:\n%s\nwant\n%s", got.Fields, want)
	}
	// The canonical form parses to itself.
	s2, err := scan.ParseTopicSchema(s.Canonical())
	if err != nil || s2.Canonical() != s.Canonical() {
		t.Fatalf("canonical form does not round-trip: %v", err)
	}

	bad := []struct{ name, format, fields, msg string }{
		{"unknown type", "json", `[{"name":"a","type":"decimal"}]`, `field "a": unknown type "decimal"`},
		{"too large for etcd", "json", `[{"name":"` + strings.Repeat("n", 300<<10) + `","type":"int32"}]`, `fields are 307228 bytes of JSON, the limit is 262144`},
		{"unknown nested type", "json", `[{"name":"a","type":"list<varchar>"}]`, `unknown type "varchar"`},
		{"timestamp unit", "json", `[{"name":"a","type":"timestamp[h]"}]`, `timestamp unit "h"`},
		{"unclosed list", "json", `[{"name":"a","type":"list<int32"}]`, `want '>'`},
		{"trailing", "json", `[{"name":"a","type":"int32 int64"}]`, `unexpected "int64"`},
		{"struct field twice", "json", `[{"name":"a","type":"struct<x: int32, x: utf8>"}]`, `struct field "x" twice`},
		{"empty struct", "json", `[{"name":"a","type":"struct<>"}]`, `want a struct field name`},
		{"no type", "json", `[{"name":"a"}]`, `field "a" has no type`},
		{"no name", "json", `[{"type":"int32"}]`, `field 0 has no name`},
		{"twice", "json", `[{"name":"a","type":"int32"},{"name":"a","type":"utf8"}]`, `field "a" is defined twice`},
		{"same member", "json", `[{"name":"a","type":"int32"},{"name":"b","type":"utf8","json":"a"}]`, `both read JSON member "a"`},
		{"reserved", "json", `[{"name":"timestamp","type":"int64"}]`, `clashes with a record column`},
		{"reserved error", "json", `[{"name":"_error","type":"utf8"}]`, `clashes with a record column`},
		{"unknown key", "json", `[{"name":"a","type":"int32","nullabel":false}]`, `unknown field "nullabel"`},
		{"not a list", "json", `{"name":"a","type":"int32"}`, `JSON list`},
		{"empty list", "json", `[]`, `no fields`},
		{"trailing data", "json", `[{"name":"a","type":"int32"}] x`, `trailing data`},
		{"protobuf", "protobuf", `[{"name":"a","type":"int32"}]`, `format protobuf is not supported yet`},
		{"avro", "avro", `[{"name":"a","type":"int32"}]`, `format avro is not supported yet`},
		{"unknown format", "xml", `[{"name":"a","type":"int32"}]`, `unknown format "xml"`},
		{"deep", "json", `[{"name":"a","type":"` + strings.Repeat("list<", 20) + "int32" + strings.Repeat(">", 20) + `"}]`, `nested more than`},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := scan.ParseTopicSchema(metadata.TopicSchema{Format: c.format, Fields: c.fields})
			if !errors.Is(err, metadata.ErrInvalidArgument) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want invalid argument mentioning %q", err, c.msg)
			}
		})
	}
}

// produceValues writes values to partition 0 of topic in one flush.
func (e *scanEnv) produceValues(t testing.TB, topic string, values [][]byte) {
	t.Helper()
	ctx := context.Background()
	var recs []ingest.Record
	for i, v := range values {
		recs = append(recs, ingest.Record{Partition: 0, Record: segment.Record{Key: []byte{byte('a' + i%3)}, Value: v, Timestamp: 1_767_225_600_000 + int64(i)}})
	}
	done := make(chan error, 1)
	go func() { _, err := e.in.Produce(ctx, topic, recs); done <- err }()
	if !testenv.Eventually(10*time.Second, func() bool { _, n := e.in.Pending(); return n == int64(len(recs)) }) {
		t.Fatal("records never buffered")
	}
	if err := e.in.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

const typedFields = `[{"name":"user","type":"utf8"},{"name":"amount","type":"float64","nullable":false},
{"name":"n","type":"int32"},{"name":"at","type":"timestamp[ms]","json":"timestamp"},{"name":"day","type":"date32"},
{"name":"tags","type":"list<utf8>"},{"name":"geo","type":"struct<lat: float64, lon: float64>"},{"name":"ok","type":"bool"}]`

// typedValues are values for typedFields, each with the error it should
// get ("" when it matches).
var typedValues = []struct{ value, err string }{
	{`{"user":"ann","amount":12.5,"n":3,"timestamp":"2026-01-02T03:04:05.006Z","day":"2026-01-02","tags":["a","b"],"geo":{"lat":1.5,"lon":-2},"ok":true,"extra":{"x":[1,2]}}`, ""},
	{`{"amount":0}`, ""}, // nullable fields missing
	{` { "user" : "b\u00e9\"q" , "amount" : -1e3 , "n" : null, "timestamp": 1767225600123, "day": 20000, "tags": [null, "x"], "geo": {"lat": null}, "ok": false } `, ""},
	{`{"user":"c","amount":"12"}`, `field "amount": want a float64, got "12"`},
	{`{"user":"d"}`, `field "amount": missing or null, and not nullable`},
	{`{"amount":null}`, `field "amount": missing or null, and not nullable`},
	{`{"amount":1,"n":2147483648}`, `field "n": want an int32, got 2147483648`},
	{`{"amount":1,"n":1.5}`, `field "n": want an int32, got 1.5`},
	{`{"amount":1,"tags":"a"}`, `field "tags": want a list, got "a"`},
	{`{"amount":1,"tags":[1]}`, `field "tags": item 0: want a string, got 1`},
	{`{"amount":1,"geo":{"lat":"x"}}`, `field "geo": lat: want a float64, got "x"`},
	{`{"amount":1,"day":"02/01/2026"}`, `field "day": want a YYYY-MM-DD date, got "02/01/2026"`},
	{`{"amount":1,"timestamp":"yesterday"}`, `field "timestamp": want an RFC 3339 time`},
	{`{"amount":1,"ok":1}`, `field "ok": want a boolean, got 1`},
	{`{"amount":1`, `value is not a JSON object`},
	{`[1,2]`, `value is not a JSON object`},
	{`{"amount":1} {}`, `trailing data`},
	{`not json`, `value is not a JSON object`},
	{"\x00", `value is not a JSON object`},
	{"null-value", `value is null`}, // produced as a null value
}

func TestScanTypedColumns(t *testing.T) {
	e := newScanEnv(t)
	ctx := context.Background()
	if _, err := e.meta.CreateTopic(ctx, metadata.Topic{Name: "typed", Partitions: 1, Schema: &metadata.TopicSchema{Format: "json", Fields: typedFields}}); err != nil {
		t.Fatal(err)
	}
	var values [][]byte
	for _, v := range typedValues {
		if v.value == "null-value" {
			values = append(values, nil)
		} else {
			values = append(values, []byte(v.value))
		}
	}
	e.produceValues(t, "typed", values)
	if !testenv.Eventually(10*time.Second, func() bool { return e.index.Partition("typed", 0).State.Next == int64(len(values)) }) {
		t.Fatal("index never caught up")
	}

	alloc := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer alloc.AssertSize(t, 0)
	sc, err := e.r.Scan(ctx, scan.Request{Topic: "typed", Alloc: alloc, MaxBatchRecords: 7})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range sc.Schema().Fields() {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "topic,partition,offset,timestamp,key,user,amount,n,at,day,tags,geo,ok,_error" {
		t.Fatalf("default columns: %s", got)
	}
	var rows []map[string]any
	for sc.Next() {
		rec := sc.RecordBatch()
		if !rec.Schema().Equal(sc.Schema()) {
			t.Fatalf("batch schema %s", rec.Schema())
		}
		for i := range int(rec.NumRows()) {
			m := map[string]any{}
			for c, f := range rec.Schema().Fields() {
				switch col := rec.Column(c).(type) {
				case *array.Timestamp:
					if col.IsValid(i) {
						m[f.Name] = col.Value(i)
					}
				case *array.Date32:
					if col.IsValid(i) {
						m[f.Name] = col.Value(i)
					}
				default:
					v := col.GetOneForMarshal(i)
					if s, ok := v.(string); ok {
						v = strings.Clone(s) // it aliases the batch, recycled once released
					}
					m[f.Name] = v
				}
			}
			rows = append(rows, m)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	sc.Release()
	if len(rows) != len(typedValues) {
		t.Fatalf("%d rows, want %d: no record is dropped", len(rows), len(typedValues))
	}
	for i, v := range typedValues {
		r := rows[i]
		if r["offset"].(int64) != int64(i) {
			t.Fatalf("row %d has offset %v", i, r["offset"])
		}
		if v.err == "" {
			if r["_error"] != nil {
				t.Fatalf("row %d (%s): error %v, want none", i, v.value, r["_error"])
			}
			continue
		}
		if e, _ := r["_error"].(string); !strings.Contains(e, v.err) {
			t.Fatalf("row %d (%s): error %q, want %q", i, v.value, e, v.err)
		}
		for _, f := range []string{"user", "amount", "n", "at", "day", "tags", "geo", "ok"} {
			if r[f] != nil {
				t.Fatalf("row %d: non-matching record has %s = %v, want null", i, f, r[f])
			}
		}
	}
	r0, r1, r2 := rows[0], rows[1], rows[2]
	if r0["user"] != "ann" || r0["amount"] != 12.5 || r0["n"] != int32(3) || r0["ok"] != true {
		t.Fatalf("row 0: %v", r0)
	}
	if at := r0["at"].(arrow.Timestamp); at != arrow.Timestamp(time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC).UnixMilli()) {
		t.Fatalf("row 0 at %v", at)
	}
	if d := r0["day"].(arrow.Date32); d.ToTime().Format(time.DateOnly) != "2026-01-02" {
		t.Fatalf("row 0 day %v", d)
	}
	asJSON := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	if tags := asJSON(r0["tags"]); tags != `["a","b"]` {
		t.Fatalf("row 0 tags %s", tags)
	}
	if geo := asJSON(r0["geo"]); geo != `{"lat":1.5,"lon":-2}` {
		t.Fatalf("row 0 geo %s", geo)
	}
	if tags, geo := asJSON(r2["tags"]), asJSON(r2["geo"]); tags != `[null,"x"]` || geo != `{"lat":null,"lon":null}` {
		t.Fatalf("row 2 tags %s geo %s", tags, geo)
	}
	if r1["user"] != nil || r1["amount"] != 0.0 || r1["tags"] != nil || r1["geo"] != nil {
		t.Fatalf("row 1: %v", r1)
	}
	if r2["user"] != "bé\"q" || r2["amount"] != -1000.0 || r2["n"] != nil || r2["at"].(arrow.Timestamp) != 1767225600123 || r2["ok"] != false {
		t.Fatalf("row 2: %v", r2)
	}
	if d := r2["day"].(arrow.Date32); d != 20000 {
		t.Fatalf("row 2 day %v", d)
	}

	// A projection: value and a typed column; no JSON parsing is needed
	// without typed or error columns, but the order is the schema's.
	sc, err = e.r.Scan(ctx, scan.Request{Topic: "typed", Columns: []string{"_error", "value", "amount", "offset"}})
	if err != nil {
		t.Fatal(err)
	}
	names = nil
	for _, f := range sc.Schema().Fields() {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "offset,value,amount,_error" {
		t.Fatalf("projected columns: %s", got)
	}
	n := 0
	for sc.Next() {
		rec := sc.RecordBatch()
		val := rec.Column(1).(*array.Binary)
		for i := range int(rec.NumRows()) {
			want := values[n]
			if got := val.Value(i); val.IsNull(i) != (want == nil) || !bytes.Equal(got, want) {
				t.Fatalf("row %d value %q, want %q", n, got, want)
			}
			n++
		}
	}
	if sc.Err() != nil || n != len(values) {
		t.Fatalf("%d rows: %v", n, sc.Err())
	}
	sc.Release()

	// Parquet carries the typed columns.
	sc, err = e.r.Scan(ctx, scan.Request{Topic: "typed"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := parquet.Write(&buf, sc, parquet.Options{}); err != nil {
		t.Fatal(err)
	}
	sc.Release()
	pf, err := file.NewParquetReader(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	if tbl.NumRows() != int64(len(values)) || tbl.Schema().Field(6).Name != "amount" || tbl.Schema().Field(6).Type.ID() != arrow.FLOAT64 {
		t.Fatalf("parquet: %d rows, schema %s", tbl.NumRows(), tbl.Schema())
	}

	// Changing the schema applies to the records already stored.
	if _, err := e.meta.UpdateTopic(ctx, "typed", func(tp *metadata.Topic) error {
		tp.Schema = &metadata.TopicSchema{Format: "json", Fields: `[{"name":"amount","type":"utf8"}]`}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(10*time.Second, func() bool { tp, _ := e.index.Topic("typed"); return !strings.Contains(tp.Schema.Fields, "float64") }) {
		t.Fatal("the index never saw the new schema")
	}
	sc, err = e.r.Scan(ctx, scan.Request{Topic: "typed", Columns: []string{"amount", "_error"}, Partitions: []int32{0}, ToOffset: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !sc.Next() || sc.RecordBatch().Column(1).(*array.String).Value(0) != `field "amount": want a string, got 12.5` {
		t.Fatalf("after the schema change: %v %v", sc.RecordBatch(), sc.Err())
	}
	sc.Release()
}

func TestScanColumnsBadInput(t *testing.T) {
	e := newScanEnv(t)
	ctx := context.Background()
	e.produceFlushes(t, "plain", 1, 1, 5, 1_700_000_000_000)
	if _, err := e.meta.CreateTopic(ctx, metadata.Topic{Name: "typed", Partitions: 1, Schema: &metadata.TopicSchema{Format: "json", Fields: typedFields}}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, topic string
		cols        []string
		msg         string
	}{
		{"unknown column", "plain", []string{"offset", "nope"}, `unknown column "nope" (the topic has topic, partition, offset, timestamp, key, value, headers)`},
		{"error column without a schema", "plain", []string{"_error"}, `unknown column "_error"`},
		{"typed column without a schema", "plain", []string{"amount"}, `unknown column "amount"`},
		{"unknown typed column", "typed", []string{"amount", "price"}, `unknown column "price" (the topic has topic, partition, offset, timestamp, key, value, headers, user, amount, n, at, day, tags, geo, ok, _error)`},
		{"JSON member instead of column", "typed", []string{"timestamp", "at", "Timestamp"}, `unknown column "Timestamp"`},
		{"column twice", "typed", []string{"amount", "amount"}, `column "amount" listed twice`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.store.Reset()
			sc, err := e.r.Scan(ctx, scan.Request{Topic: c.topic, Columns: c.cols})
			if err == nil {
				sc.Release()
				t.Fatal("scan accepted bad columns")
			}
			if !errors.Is(err, metadata.ErrInvalidArgument) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want invalid argument mentioning %q", err, c.msg)
			}
			if n := len(e.store.Calls()); n != 0 {
				t.Fatalf("bad input made %d store calls", n)
			}
		})
	}
	// A projection without the columns an export needs is refused.
	sc, err := e.r.Scan(ctx, scan.Request{Topic: "plain", Columns: []string{"value"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Release()
	if _, err := parquet.ExportDir(ctx, sc, t.TempDir(), parquet.Options{}); !errors.Is(err, parquet.ErrMissingColumns) || !strings.Contains(err.Error(), "needs the topic, partition and offset columns") {
		t.Fatalf("export of a projection without offsets: %v", err)
	}
}

// TestFlightTypedColumns: Flight serves a typed topic's columns, and the
// columns a command asks for, in GetFlightInfo, GetSchema and DoGet.
func TestFlightTypedColumns(t *testing.T) {
	e := newScanEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := e.meta.CreateTopic(ctx, metadata.Topic{Name: "typed", Partitions: 1, Schema: &metadata.TopicSchema{Format: "json", Fields: typedFields}}); err != nil {
		t.Fatal(err)
	}
	e.produceValues(t, "typed", [][]byte{[]byte(`{"amount":1.5,"user":"x"}`), []byte(`{}`)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- arrowflight.ServeFlight(ctx, ln, arrowflight.NewFlightService(e.r, e.meta)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve flight: %v", err)
		}
	})
	cl, err := flight.NewClientWithMiddleware(ln.Addr().String(), nil, nil, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cmd, _ := json.Marshal(arrowflight.FlightCommand{Topic: "typed", Columns: []string{"offset", "amount", "_error"}})
	d := &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: cmd}
	sr, err := cl.GetSchema(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	schema, err := flight.DeserializeSchema(sr.GetSchema(), memory.DefaultAllocator)
	if err != nil || schema.NumFields() != 3 || schema.Field(1).Name != "amount" || schema.Field(1).Type.ID() != arrow.FLOAT64 {
		t.Fatalf("GetSchema: %v, %v", schema, err)
	}
	info, err := cl.GetFlightInfo(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := cl.DoGet(ctx, info.GetEndpoint()[0].GetTicket())
	if err != nil {
		t.Fatal(err)
	}
	rd, err := flight.NewRecordReader(stream)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	if !rd.Schema().Equal(schema) || !rd.Next() {
		t.Fatalf("DoGet schema %s: %v", rd.Schema(), rd.Err())
	}
	rec := rd.RecordBatch()
	if rec.NumRows() != 2 || rec.Column(1).(*array.Float64).Value(0) != 1.5 || !rec.Column(1).IsNull(1) ||
		rec.Column(2).(*array.String).Value(1) != `field "amount": missing or null, and not nullable` {
		t.Fatalf("DoGet rows: %v", rec)
	}
	bad, _ := json.Marshal(arrowflight.FlightCommand{Topic: "typed", Columns: []string{"nope"}})
	if _, err := cl.GetSchema(ctx, &flight.FlightDescriptor{Type: flight.DescriptorCMD, Cmd: bad}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetSchema with an unknown column: %v", err)
	}
}
