package retention_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/retention"
)

// commitBlock commits one block of n records with timestamps up to maxTS
// and a stored length of size bytes, returning its base offset.
// env is a metadata client and retention over its etcd.
type env struct {
	*metadata.Client
	ret *retention.Client
}

// ApplyRetention is retention.Client.Apply, under the name the tests used
// when it was a method of metadata.Client.
func (e env) ApplyRetention(ctx context.Context, topic string, p int32, now time.Time) (retention.Result, error) {
	return e.ret.Apply(ctx, topic, p, now)
}

func connect(t *testing.T) env {
	t.Helper()
	m, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return env{m, retention.New(m)}
}

func commitBlock(t *testing.T, c env, topic string, p int32, object string, n, maxTS, size int64) int64 {
	t.Helper()
	res, err := c.Commit(context.Background(), object, []metadata.Append{{
		Topic: topic, Partition: p, Object: object, Off: 0, Len: size, Records: n, MinTS: maxTS - 1, MaxTS: maxTS, RawBytes: size,
	}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("commit %s: %v %v", object, err, res)
	}
	return res[0].Base
}

// checkLog asserts the partition's index is dense from Start to Next and
// that offsets below Start are gone.
func checkLog(t *testing.T, c env, topic string, p int32) metadata.PartitionState {
	t.Helper()
	ctx := context.Background()
	sts, err := c.PartitionStates(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	st := sts[p]
	for off := st.Start; off < st.Next; {
		e, _, found, _, err := c.LookupIndex(ctx, topic, p, off)
		if err != nil || !found {
			t.Fatalf("offset %d in [%d,%d) not found: %v", off, st.Start, st.Next, err)
		}
		if e.Base != off {
			t.Fatalf("offset %d: entry starts at %d; the log is not dense", off, e.Base)
		}
		off = e.End()
	}
	if st.Start > 0 {
		if _, _, found, _, _ := c.LookupIndex(ctx, topic, p, st.Start-1); found {
			t.Fatalf("offset %d below the log start %d is still indexed", st.Start-1, st.Start)
		}
	}
	return st
}

func TestApplyRetentionByTime(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "tt", Partitions: 1, RetentionMs: time.Hour.Milliseconds()}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	commitBlock(t, c, "tt", 0, "o1", 10, now.Add(-3*time.Hour).UnixMilli(), 100)
	commitBlock(t, c, "tt", 0, "o2", 5, now.Add(-2*time.Hour).UnixMilli(), 100)
	// An expired block after a live one stays: retention drops a prefix.
	commitBlock(t, c, "tt", 0, "o3", 7, now.UnixMilli(), 100)
	commitBlock(t, c, "tt", 0, "o4", 1, now.Add(-5*time.Hour).UnixMilli(), 100)

	res, err := c.ApplyRetention(ctx, "tt", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 2 || res.Records != 15 || res.Bytes != 200 || res.Start != 15 {
		t.Fatalf("retention result %+v, want 2 entries, 15 records, 200 bytes, start 15", res)
	}
	if fmt.Sprint(res.Objects) != "[o1 o2]" {
		t.Fatalf("dropped objects %v, want [o1 o2]", res.Objects)
	}
	st := checkLog(t, c, "tt", 0)
	if st.Start != 15 || st.Next != 23 || st.Bytes != 200 || st.Segments != 2 {
		t.Fatalf("partition after retention %+v, want start 15 next 23 bytes 200 segments 2", st)
	}
	// Nothing more is due: a second pass changes nothing.
	res, err = c.ApplyRetention(ctx, "tt", 0, now)
	if err != nil || res.Entries != 0 || res.Start != 15 {
		t.Fatalf("second pass: %+v %v", res, err)
	}
	// An hour later the live block and the one behind it expire too.
	res, err = c.ApplyRetention(ctx, "tt", 0, now.Add(2*time.Hour))
	if err != nil || res.Entries != 2 || res.Start != 23 {
		t.Fatalf("pass two hours later: %+v %v", res, err)
	}
	st = checkLog(t, c, "tt", 0)
	if st.Start != 23 || st.Next != 23 || st.Bytes != 0 || st.Segments != 0 {
		t.Fatalf("emptied partition %+v", st)
	}
	// Offsets go on from the high watermark.
	if base := commitBlock(t, c, "tt", 0, "o5", 2, now.UnixMilli(), 10); base != 23 {
		t.Fatalf("next commit got base %d, want 23", base)
	}
}

func TestApplyRetentionBySize(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "ts", Partitions: 2, RetentionMs: -1, RetentionBytes: 250}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for i := range 5 {
		commitBlock(t, c, "ts", 1, fmt.Sprintf("o%d", i), 3, now, 100)
	}
	res, err := c.ApplyRetention(context.Background(), "ts", 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// 500 bytes: dropping 100 leaves 400 >= 250, then 300 >= 250; then 200 < 250 stops.
	if res.Entries != 2 || res.Start != 6 || res.Bytes != 200 {
		t.Fatalf("retention result %+v, want 2 entries, start 6, 200 bytes", res)
	}
	st := checkLog(t, c, "ts", 1)
	if st.Bytes != 300 || st.Segments != 3 {
		t.Fatalf("partition %+v, want 300 bytes in 3 segments", st)
	}
	// The other partition has no state: nothing to do, no error.
	if res, err := c.ApplyRetention(ctx, "ts", 0, time.Now()); err != nil || res.Entries != 0 {
		t.Fatalf("empty partition: %+v %v", res, err)
	}
}

func TestApplyRetentionLeavesForeverAndCompactTopics(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	old := time.Now().Add(-1000 * time.Hour).UnixMilli()
	for _, tp := range []metadata.Topic{
		{Name: "forever", Partitions: 1, RetentionMs: -1},
		{Name: "compacted", Partitions: 1, RetentionMs: 1, RetentionBytes: 1, CleanupPolicy: metadata.CleanupCompact},
	} {
		if _, err := c.CreateTopic(ctx, tp); err != nil {
			t.Fatal(err)
		}
		commitBlock(t, c, tp.Name, 0, tp.Name+"-o1", 3, old, 100)
		commitBlock(t, c, tp.Name, 0, tp.Name+"-o2", 3, old, 100)
		res, err := c.ApplyRetention(ctx, tp.Name, 0, time.Now())
		if err != nil || res.Entries != 0 || res.Start != 0 {
			t.Fatalf("%s: retention %+v %v, want nothing dropped", tp.Name, res, err)
		}
	}
	// A missing topic is not an error: it was deleted meanwhile.
	if res, err := c.ApplyRetention(ctx, "gone", 0, time.Now()); err != nil || res.Entries != 0 {
		t.Fatalf("missing topic: %+v %v", res, err)
	}
}

func TestApplyRetentionManyEntries(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "many", Partitions: 1, RetentionMs: 1000}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).UnixMilli()
	const n = 130 // more than two transactions' worth
	for i := range n {
		commitBlock(t, c, "many", 0, fmt.Sprintf("o%03d", i), 2, old, 10)
	}
	res, err := c.ApplyRetention(ctx, "many", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != n || res.Start != 2*n || len(res.Objects) != n {
		t.Fatalf("retention result: %d entries, start %d, %d objects; want %d, %d, %d", res.Entries, res.Start, len(res.Objects), n, 2*n, n)
	}
	checkLog(t, c, "many", 0)
}

// TestApplyRetentionConcurrentCommits runs retention while other writers
// commit: every commit lands, the log stays dense, and only expired entries
// leave.
func TestApplyRetentionConcurrentCommits(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, metadata.Topic{Name: "busy", Partitions: 1, RetentionMs: time.Hour.Milliseconds()}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := now.Add(-2 * time.Hour).UnixMilli()
	for i := range 70 {
		commitBlock(t, c, "busy", 0, fmt.Sprintf("old%d", i), 1, old, 10)
	}
	const writers, perWriter = 3, 30
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				commitBlock(t, c, "busy", 0, fmt.Sprintf("new-%d-%d", w, i), 1, now.UnixMilli(), 10)
			}
		})
	}
	var total retention.Result
	for range 5 {
		res, err := c.ApplyRetention(ctx, "busy", 0, now)
		if err != nil {
			t.Fatal(err)
		}
		total.Entries += res.Entries
	}
	wg.Wait()
	res, err := c.ApplyRetention(ctx, "busy", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	total.Entries += res.Entries
	if total.Entries != 70 {
		t.Fatalf("retention dropped %d entries, want the 70 expired ones", total.Entries)
	}
	st := checkLog(t, c, "busy", 0)
	if st.Start != 70 || st.Next != 70+writers*perWriter || st.Segments != writers*perWriter || st.Bytes != 10*writers*perWriter {
		t.Fatalf("partition %+v, want start 70, next %d, %d segments", st, 70+writers*perWriter, writers*perWriter)
	}
}
