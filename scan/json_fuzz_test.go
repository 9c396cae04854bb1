package scan

import (
	"testing"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/varve-io/varve/metadata"
)

// fuzzFields is a schema with every type the JSON scanner converts.
const fuzzFields = `[{"name":"s","type":"utf8"},{"name":"f","type":"float64","nullable":false},
{"name":"i8","type":"int8"},{"name":"u64","type":"uint64"},{"name":"f32","type":"float32"},
{"name":"at","type":"timestamp[us]","json":"timestamp"},{"name":"day","type":"date32"},
{"name":"raw","type":"binary"},{"name":"ok","type":"bool"},
{"name":"tags","type":"list<list<utf8>>"},{"name":"geo","type":"struct<lat: float64, where: struct<city: utf8, n: int32>>"}]`

// FuzzJSONRow feeds record values (untrusted: any producer writes them)
// to the JSON scanner behind typed scans. It must never panic; a value it
// accepts appends exactly one row to every typed column, one it refuses
// says why, and the answer does not depend on the value matched before.
func FuzzJSONRow(f *testing.F) {
	for _, seed := range []string{
		`{"s":"ann","f":12.5,"i8":-3,"u64":18446744073709551615,"f32":1e38,"timestamp":"2026-01-02T03:04:05.006Z","day":"2026-01-02","raw":"AAEC","ok":true,"tags":[["a"],null,[]],"geo":{"lat":1.5,"where":{"city":"x","n":7}},"extra":{"x":[1,2,{"y":null}]}}`,
		`{"f":0}`,
		` { "s" : "b\u00e9\"q\ud83d\ude00" , "f" : -1e3 , "timestamp": 1767225600123, "day": 20000, "ok": false } `,
		`{"f":"12"}`, `{"s":"d"}`, `{"f":null}`, `{"f":1,"i8":128}`, `{"f":1,"u64":-1}`, `{"f":1,"raw":"!!"}`,
		`{"f":1,"geo":{"where":[]}}`, `{"f":1,"s":"\ud800"}`, `{"f":1,"x":"\q"}`,
		`[1,2]`, `null`, `"x"`, `{`, `{"f":1,`, `{"f":1}}`, `{"f":1e999}`, ``, "\x00", `{"f":1,"s":"` + "\xff" + `"}`,
		`{"f":1,"tags":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add([]byte(seed))
	}
	vs, err := ParseTopicSchema(metadata.TopicSchema{Format: metadata.SchemaJSON, Fields: fuzzFields})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		jr := newJSONRow(vs)
		alloc := memory.NewGoAllocator()
		bs := make([]array.Builder, len(vs.Fields))
		for i, fd := range vs.Fields {
			bs[i] = array.NewBuilder(alloc, fd.Type)
			defer bs[i].Release()
		}
		err := jr.match(value)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("refused %q without a reason", value)
			}
		} else {
			jr.appendTo(bs)
			for i, b := range bs {
				if b.Len() != 1 {
					t.Fatalf("accepted %q: column %s has %d rows, want 1", value, vs.Fields[i].Name, b.Len())
				}
				b.NewArray().Release()
			}
		}
		// The same value after another gets the same answer.
		_ = jr.match([]byte(`{"s":"other","f":2,"tags":[["z"]]}`))
		if err2 := jr.match(value); (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("%q: %v, then %v", value, err, err2)
		}
	})
}
