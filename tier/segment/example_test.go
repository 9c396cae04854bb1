package segment

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/example*.hex")

// exampleSpecs is the worked example of docs/segment-format.md.
func exampleSpecs() []blockSpec {
	return []blockSpec{{"clicks", 3, []Record{
		{Key: []byte("u1"), Value: []byte(`{"p":1}`), Timestamp: 1767225600000, Headers: []Header{{Key: "src", Value: []byte("web")}}},
		{Key: nil, Value: []byte("hi"), Timestamp: 1767225600250},
	}}}
}

// sparseExampleSpecs is the version 2 (sparse block) example of
// docs/segment-format.md: the example's partition after compaction of a
// compacted topic kept offsets base+1 and base+4.
func sparseExampleSpecs() []blockSpec {
	return []blockSpec{{"clicks", 3, []Record{
		{Key: []byte("u1"), Value: []byte("b"), Timestamp: 1767225600000, Gap: 1},
		{Key: []byte("u2"), Value: nil, Timestamp: 1767225600250, Gap: 2},
	}}}
}

func TestSparseWorkedExample(t *testing.T) {
	checkExample(t, sparseExampleSpecs(), filepath.Join("testdata", "example-sparse.hex"))
}

// TestWorkedExample pins the bytes of the documented example, so the
// document and the code cannot drift apart (go test -run WorkedExample
// -update rewrites the file after a deliberate format change).
func TestWorkedExample(t *testing.T) {
	checkExample(t, exampleSpecs(), filepath.Join("testdata", "example.hex"))
}

func checkExample(t *testing.T, specs []blockSpec, path string) {
	obj, _ := mustBuild(t, specs)
	dump := hexLines(obj)
	if *update {
		if err := os.WriteFile(path, []byte(dump), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := hex.DecodeString(strings.Join(strings.Fields(string(want)), ""))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, obj) {
		t.Fatalf("the example object changed:\n%s\nwant:\n%s", dump, want)
	}
	_, recs, err := Decode(got)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRecords(specs[0].recs, recs[0]); d != "" {
		t.Fatal(d)
	}
}

func hexLines(b []byte) string {
	var s strings.Builder
	for i := 0; i < len(b); i += 16 {
		s.WriteString(hex.EncodeToString(b[i:min(i+16, len(b))]))
		s.WriteByte('\n')
	}
	return s.String()
}
