package metadata_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/sequencer"
)

// TestKeyEntriesShadowRecords: blocks committed through the sequencer, then
// index keys put over some of them (as a compaction swap does). Wherever an
// index key covers an offset range, the record entries overlapping it are
// not served — by the watched cache (as the keys arrive and on a fresh
// load), IndexEntries and LookupIndex — and the high watermark stays; a
// deleted key serves its records again.
func TestKeyEntriesShadowRecords(t *testing.T) {
	ctx := context.Background()
	e := newSeqEnv(t, sequencer.Config{})
	if _, err := e.writer.CreateTopic(ctx, metadata.Topic{Name: "t", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	ca := e.cache(t)
	var mu sync.Mutex
	l := ledger{}
	for i := range 5 { // records at 0, 2, 4, 6, 8
		e.commit(t, &mu, l, "t", fmt.Sprintf("objects/%d.vseg", i), []int32{0}, func(int32) int64 { return 2 })
	}
	raw, err := clientv3.New(clientv3.Config{Endpoints: e.endpoints})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	key := func(base int64) string { return fmt.Sprintf("/varve/index/t/0/%020d", base) }
	put := func(base, records int64, obj string) int64 {
		v, _ := json.Marshal(metadata.IndexEntry{Object: obj, Len: 10, Records: records, Level: 1})
		resp, err := raw.Put(ctx, key(base), string(v))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	// serves checks every reader: the entries by base and object.
	serves := func(what string, rev int64, want map[int64]string, lookups map[int64]string) {
		t.Helper()
		same := func(src string, got []metadata.IndexEntry, next int64) {
			t.Helper()
			if next != 10 {
				t.Fatalf("%s: %s high watermark %d, want 10", what, src, next)
			}
			if len(got) != len(want) {
				t.Fatalf("%s: %s serves %+v, want %v", what, src, got, want)
			}
			for _, g := range got {
				if want[g.Base] != g.Object || (g.Record == 0) != (g.Level == 1) {
					t.Fatalf("%s: %s serves %+v, want %v", what, src, got, want)
				}
			}
		}
		if err := ca.WaitRevision(ctx, rev); err != nil {
			t.Fatal(err)
		}
		got, st, _ := ca.Snapshot("t", 0)
		same("the watched cache", got, st.Next)
		fresh := e.cache(t)
		got, st, _ = fresh.Snapshot("t", 0)
		same("a freshly loaded cache", got, st.Next)
		got, st, err := e.reader.IndexEntries(ctx, "t", 0)
		if err != nil {
			t.Fatal(err)
		}
		same("IndexEntries", got, st.Next)
		for off, obj := range lookups {
			en, st, found, _, err := e.reader.LookupIndex(ctx, "t", 0, off)
			if err != nil || !found || en.Object != obj || st.Next != 10 {
				t.Fatalf("%s: LookupIndex(%d) = %+v found %v next %d, %v; want %s", what, off, en, found, st.Next, err, obj)
			}
			if en, ok := ca.Lookup("t", 0, off); !ok || en.Object != obj {
				t.Fatalf("%s: cache Lookup(%d) = %+v, %v; want %s", what, off, en, ok, obj)
			}
		}
	}
	serves("records only", revisionOf(t, e.writer), map[int64]string{0: "objects/0.vseg", 2: "objects/1.vseg", 4: "objects/2.vseg", 6: "objects/3.vseg", 8: "objects/4.vseg"},
		map[int64]string{1: "objects/0.vseg", 9: "objects/4.vseg"})
	rev := put(0, 4, "l1/a")
	serves("a key over [0,4)", rev, map[int64]string{0: "l1/a", 4: "objects/2.vseg", 6: "objects/3.vseg", 8: "objects/4.vseg"},
		map[int64]string{1: "l1/a", 3: "l1/a", 5: "objects/2.vseg"})
	rev = put(4, 6, "l1/b")
	serves("keys over everything", rev, map[int64]string{0: "l1/a", 4: "l1/b"},
		map[int64]string{3: "l1/a", 5: "l1/b", 9: "l1/b"})
	resp, err := raw.Delete(ctx, key(4))
	if err != nil {
		t.Fatal(err)
	}
	serves("the second key deleted", resp.Header.Revision, map[int64]string{0: "l1/a", 4: "objects/2.vseg", 6: "objects/3.vseg", 8: "objects/4.vseg"},
		map[int64]string{5: "objects/2.vseg", 9: "objects/4.vseg"})
	// A key that overlaps record entries without matching their bounds
	// shadows each of them.
	rev = put(5, 2, "l1/c")
	serves("a key over [5,7)", rev, map[int64]string{0: "l1/a", 5: "l1/c", 8: "objects/4.vseg"},
		map[int64]string{6: "l1/c", 8: "objects/4.vseg"})
}
