package gc_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/maintenance"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/tier"
	"github.com/varve-io/varve/tier/gc"
)

const grace = time.Minute

// clock is the janitor's clock: real time plus an offset tests advance, so
// grace periods pass without waiting.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

func connectMeta(t *testing.T, endpoints []string) *metadata.Client {
	t.Helper()
	m, err := metadata.Connect(context.Background(), metadata.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newJanitor(t *testing.T, store tier.Store, meta *metadata.Client, clk *clock) *gc.Janitor {
	t.Helper()
	j, err := gc.New(gc.Config{NodeID: "test", Grace: grace, Now: clk.Now}, store, meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func listKeys(t *testing.T, s tier.Store) []string {
	t.Helper()
	var keys []string
	if err := s.List(context.Background(), "", func(o tier.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

func startNode(t *testing.T, endpoints []string, store tier.Store, roles ...string) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Roles = roles
	// These tests follow retention's dropped index keys to their objects
	// through GC: the direct path (records_test.go follows the
	// sequencer's records through the pruner).
	cfg.CommitPath = node.CommitDirect
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = endpoints
	cfg.Store = "fs:/unused" // Options.Store is used
	cfg.Linger = 5 * time.Millisecond
	n, err := node.New(context.Background(), cfg, node.Options{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return n
}

// TestCrashBetweenPutAndCommit kills (SIGKILL) a real ingest node after its
// segment PUT and before its commit, then runs orphan collection with a
// short grace: exactly the orphan goes; the committed object and a foreign
// key stay, and the acknowledged records are still read back.
func TestCrashBetweenPutAndCommit(t *testing.T) {
	ctx := context.Background()
	srv := testenv.MinIO(t)
	s3cfg := srv.S3Config(srv.NewBucket(t))
	etcd := testenv.StartEtcd(t)
	meta := connectMeta(t, etcd)
	if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: "crash", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	s3, err := tier.NewS3(ctx, s3cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A key that is not a segment: never Varve's to delete.
	if err := s3.PutIfAbsent(ctx, "segments/README.txt", []byte("not a segment")); err != nil {
		t.Fatal(err)
	}

	spec, _ := json.Marshal(childSpec{Etcd: etcd, S3: s3cfg, Topic: "crash"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("crash child exited early: %s", stderr.String())
			}
			return l
		case <-time.After(2 * time.Minute):
			t.Fatalf("crash child silent: %s", stderr.String())
		}
		return ""
	}
	if l := next(); l != "committed" {
		t.Fatalf("child said %q, want committed", l)
	}
	orphan, ok := strings.CutPrefix(next(), "stored ")
	if !ok {
		t.Fatal("child did not report the held PUT")
	}
	// kill -9 between the PUT and the commit.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true

	refs, _, err := maintenance.New(meta).ReferencedObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 {
		t.Fatalf("%d objects referenced, want the first batch's one", len(refs))
	}
	if _, ok := refs[orphan]; ok {
		t.Fatalf("held object %s was committed", orphan)
	}
	keys := listKeys(t, s3)
	if len(keys) != 3 || !slices.Contains(keys, orphan) {
		t.Fatalf("bucket holds %v, want the committed object, the orphan %s and README", keys, orphan)
	}

	rec := tier.NewRecorder(s3)
	clk := &clock{}
	j := newJanitor(t, rec, meta, clk)
	rep, err := j.CollectOrphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Listed != 2 || rep.Referenced != 1 || rep.Young != 1 || len(rep.Deleted) != 0 {
		t.Fatalf("first pass %+v: want 2 listed, 1 referenced, 1 young, none deleted", rep)
	}
	clk.Advance(grace / 2)
	if rep, err = j.CollectOrphans(ctx); err != nil || len(rep.Deleted) != 0 {
		t.Fatalf("pass within the grace period deleted %v (%v)", rep.Deleted, err)
	}
	clk.Advance(grace/2 + time.Second)
	if rep, err = j.CollectOrphans(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Deleted, []string{orphan}) {
		t.Fatalf("deleted %v, want exactly the orphan %s", rep.Deleted, orphan)
	}
	var deletes []string
	for _, c := range rec.Calls() {
		if c.Op == tier.OpDelete {
			deletes = append(deletes, c.Key)
		}
	}
	if !slices.Equal(deletes, []string{orphan}) {
		t.Fatalf("DELETE calls %v, want one of %s", deletes, orphan)
	}
	after := listKeys(t, s3)
	if len(after) != 2 || slices.Contains(after, orphan) || !slices.Contains(after, "segments/README.txt") {
		t.Fatalf("bucket after collection holds %v", after)
	}
	// Later passes find nothing more to delete.
	clk.Advance(10 * grace)
	if rep, err = j.CollectOrphans(ctx); err != nil || len(rep.Deleted) != 0 || rep.Referenced != 1 {
		t.Fatalf("pass after collection: %+v %v", rep, err)
	}

	// The acknowledged records are intact, read by a fresh fetch node.
	n := startNode(t, etcd, s3, node.RoleFetch)
	res, err := sdk.New(n.Addr()).Fetch(ctx, "crash", 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := valuesOf(res.Records); got != valuesOf(batch("acked", 10, time.Time{})) || res.HighWatermark != 10 {
		t.Fatalf("read back %q (high watermark %d)", got, res.HighWatermark)
	}
}

type env struct {
	etcd []string
	meta *metadata.Client
	fs   tier.Store
	rec  *tier.Recorder
	node *node.Node
	c    *sdk.Client
	clk  *clock
	j    *gc.Janitor
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{etcd: testenv.StartEtcd(t), clk: &clock{}}
	e.meta = connectMeta(t, e.etcd)
	fs, err := tier.NewFS(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	e.fs, e.rec = fs, tier.NewRecorder(fs)
	e.node = startNode(t, e.etcd, fs, node.RoleIngest, node.RoleFetch)
	e.c = sdk.New(e.node.Addr())
	e.j = newJanitor(t, e.rec, e.meta, e.clk)
	return e
}

func (e *env) produce(t *testing.T, topic string, recs []sdk.Record) []sdk.Offset {
	t.Helper()
	offs, err := e.c.Produce(context.Background(), topic, recs)
	if err != nil {
		t.Fatal(err)
	}
	return offs
}

// waitOutOfRange waits until a fetch at offset answers OUT_OF_RANGE naming
// the log start (the fetch node's watched index catches up in
// milliseconds).
func (e *env) waitOutOfRange(t *testing.T, topic string, offset, start int64) {
	t.Helper()
	var last error
	want := fmt.Sprintf("offset %d is before the log start %d", offset, start)
	if !testenv.Eventually(10*time.Second, func() bool {
		_, last = e.c.Fetch(context.Background(), topic, 0, offset, 0, 0)
		return connect.CodeOf(last) == connect.CodeOutOfRange && strings.Contains(last.Error(), want)
	}) {
		t.Fatalf("fetch at %d: %v; want OUT_OF_RANGE saying %q", offset, last, want)
	}
	offs, err := e.c.ListOffsets(context.Background(), topic, varvev1.OffsetSpec_OFFSET_SPEC_EARLIEST, time.Time{}, 0)
	if err != nil || offs[0] != start {
		t.Fatalf("earliest offset %v (%v), want %d", offs, err, start)
	}
}

// collectAfterGrace runs one pass, lets the grace period pass, runs
// another, and returns what the second deleted.
func (e *env) collectAfterGrace(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	if rep, err := e.j.CollectOrphans(ctx); err != nil || len(rep.Deleted) != 0 {
		t.Fatalf("first pass deleted %v (%v) before any grace period", rep.Deleted, err)
	}
	e.clk.Advance(grace + time.Second)
	rep, err := e.j.CollectOrphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Deleted)
	return rep.Deleted
}

func TestRetentionByTime(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := admin.NewFromClient(e.c).CreateTopic(ctx, "rt", 1, &admin.TopicConfig{Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-3 * time.Hour)
	for i := range 3 {
		e.produce(t, "rt", batch(fmt.Sprintf("old%d", i), 10, old))
	}
	var fresh []sdk.Record
	for i := range 2 {
		b := batch(fmt.Sprintf("new%d", i), 10, time.Time{})
		e.produce(t, "rt", b)
		fresh = append(fresh, b...)
	}
	objects := listKeys(t, e.fs)
	if len(objects) != 5 {
		t.Fatalf("%d objects for 5 acknowledged produces, want 5", len(objects))
	}
	rep, err := e.j.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 3 || rep.Records != 30 || len(rep.Objects) != 3 {
		t.Fatalf("retention %+v, want 3 entries of 30 records", rep)
	}
	// Retention touches no object.
	if n := e.rec.Count(tier.OpDelete); n != 0 {
		t.Fatalf("retention deleted %d objects itself", n)
	}
	e.waitOutOfRange(t, "rt", 0, 30)
	e.waitOutOfRange(t, "rt", 29, 30)

	// A consumer positioned before the log start moves to it and reads on
	// (with OffsetResetEarliest; the default, latest, moves to the end).
	cons := e.c.NewConsumer("rt", sdk.ConsumerOptions{MaxWait: 50 * time.Millisecond, OffsetReset: sdk.OffsetResetEarliest})
	defer cons.Close()
	cons.Seek(0, 0)
	var got []sdk.Record
	for len(got) < len(fresh) {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		recs, err := cons.Poll(pctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, recs...)
	}
	if got[0].Offset != 30 || valuesOf(got) != valuesOf(fresh) {
		t.Fatalf("consumer from 0 read from offset %d: %q", got[0].Offset, valuesOf(got))
	}

	// The dropped entries' objects leave after the grace period; the live
	// ones stay.
	dropped := slices.Clone(rep.Objects)
	slices.Sort(dropped)
	if deleted := e.collectAfterGrace(t); !slices.Equal(deleted, dropped) {
		t.Fatalf("collected %v, want the dropped entries' objects %v", deleted, dropped)
	}
	left := listKeys(t, e.fs)
	refs, _, err := maintenance.New(e.meta).ReferencedObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 || len(refs) != 2 {
		t.Fatalf("left %v with %d referenced, want the 2 live objects", left, len(refs))
	}
	for _, k := range left {
		if _, ok := refs[k]; !ok {
			t.Fatalf("object %s left but unreferenced", k)
		}
	}
	// The live records still read back.
	res, err := e.c.Fetch(ctx, "rt", 0, 30, 0, 0)
	if err != nil || valuesOf(res.Records) != valuesOf(fresh) {
		t.Fatalf("fetch from 30 after collection: %v %q", err, valuesOf(res.Records))
	}
}

func TestRetentionBySize(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	// Keep at least one byte: every block but the newest goes.
	if _, err := admin.NewFromClient(e.c).CreateTopic(ctx, "rs", 1, &admin.TopicConfig{Retention: admin.Forever, RetentionBytes: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		e.produce(t, "rs", batch(fmt.Sprintf("b%d", i), 10, time.Time{}))
	}
	rep, err := e.j.Retention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Entries != 3 || rep.Records != 30 {
		t.Fatalf("retention %+v, want 3 entries of 30 records", rep)
	}
	e.waitOutOfRange(t, "rs", 0, 30)
	sts, err := e.meta.PartitionStates(ctx, "rs")
	if err != nil {
		t.Fatal(err)
	}
	if st := sts[0]; st.Start != 30 || st.Next != 40 || st.Segments != 1 || st.Bytes <= 0 {
		t.Fatalf("partition after retention %+v", st)
	}
	if deleted := e.collectAfterGrace(t); len(deleted) != 3 {
		t.Fatalf("collected %v, want 3 objects", deleted)
	}
	if rep, err := e.j.Retention(ctx); err != nil || rep.Entries != 0 {
		t.Fatalf("second retention pass %+v %v, want nothing", rep, err)
	}
}

// TestRetentionWithConcurrentProducer enforces retention while a producer
// writes: every acknowledged record stays readable and only the expired
// ones go.
func TestRetentionWithConcurrentProducer(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := admin.NewFromClient(e.c).CreateTopic(ctx, "rc", 1, &admin.TopicConfig{Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	for i := range 5 {
		e.produce(t, "rc", batch(fmt.Sprintf("old%d", i), 10, old))
	}
	acked := map[int64]string{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 40 {
			b := batch(fmt.Sprintf("live%d", i), 5, time.Time{})
			offs, err := e.c.Produce(ctx, "rc", b)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			for k, o := range offs {
				acked[o.Offset] = string(b[k].Value)
			}
			mu.Unlock()
		}
	}()
	dropped := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		rep, err := e.j.Retention(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dropped += rep.Entries
	}
	if dropped != 5 {
		t.Fatalf("retention dropped %d entries, want the 5 expired", dropped)
	}
	e.waitOutOfRange(t, "rc", 49, 50)
	if len(acked) != 200 {
		t.Fatalf("%d records acknowledged, want 200", len(acked))
	}
	// Collect what retention left behind, then read every acknowledged record.
	if deleted := e.collectAfterGrace(t); len(deleted) != 5 {
		t.Fatalf("collected %v, want the 5 expired objects", deleted)
	}
	read := map[int64]string{}
	for off := int64(50); off < 250; {
		res, err := e.c.Fetch(ctx, "rc", 0, off, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Records {
			read[r.Offset] = string(r.Value)
		}
		off = res.NextOffset
	}
	for o, v := range acked {
		if read[o] != v {
			t.Fatalf("offset %d: read %q, acknowledged %q", o, read[o], v)
		}
	}
}

func TestHistoryCompaction(t *testing.T) {
	ctx := context.Background()
	etcd := testenv.StartEtcd(t)
	meta := connectMeta(t, etcd)
	clk := &clock{}
	j, err := gc.New(gc.Config{NodeID: "h", HistoryInterval: time.Minute, HistoryRetain: 10 * time.Minute, Now: clk.Now}, nil, meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := j.CompactHistory(ctx)
	if err != nil || first.CompactedTo != 0 {
		t.Fatalf("first pass %+v %v: nothing is old enough yet", first, err)
	}
	for i := range 20 {
		if _, err := meta.CreateTopic(ctx, metadata.Topic{Name: fmt.Sprintf("t%d", i), Partitions: 1}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(5 * time.Minute)
	if rep, err := j.CompactHistory(ctx); err != nil || rep.CompactedTo != 0 {
		t.Fatalf("pass within the retained window %+v %v", rep, err)
	}
	clk.Advance(5 * time.Minute)
	rep, err := j.CompactHistory(ctx)
	if err != nil || rep.CompactedTo != first.Revision {
		t.Fatalf("pass after the window %+v %v, want compaction to %d", rep, err, first.Revision)
	}
	st, err := j.SampleStats(ctx)
	if err != nil || st.Keys != 20 || st.DBSize <= 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
}

// TestOneJanitorLeads runs two janitors: one leads; when it stops the other
// takes over.
func TestOneJanitorLeads(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	meta := connectMeta(t, etcd)
	var js [2]*gc.Janitor
	var cancels [2]context.CancelFunc
	var wg sync.WaitGroup
	for i := range js {
		j, err := gc.New(gc.Config{NodeID: fmt.Sprint(i), HistoryInterval: -1}, tier.NewRecorder(mustFS(t)), meta, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		js[i] = j
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		wg.Go(func() { j.Run(ctx) })
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	}()
	leader := -1
	if !testenv.Eventually(30*time.Second, func() bool {
		a, b := js[0].Leading(), js[1].Leading()
		switch {
		case a && !b:
			leader = 0
		case b && !a:
			leader = 1
		}
		return a != b
	}) {
		t.Fatal("no single leader")
	}
	cancels[leader]()
	other := js[1-leader]
	if !testenv.Eventually(30*time.Second, other.Leading) {
		t.Fatal("the other janitor did not take over")
	}
	if js[leader].Leading() {
		t.Fatal("both janitors lead")
	}
}

func mustFS(t *testing.T) tier.Store {
	fs, err := tier.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// TestNodeCompactRole runs a node with the compact role: its janitor leads,
// enforces retention on its own schedule and exports the etcd and bucket
// gauges.
func TestNodeCompactRole(t *testing.T) {
	ctx := context.Background()
	etcd := testenv.StartEtcd(t)
	cfg := node.DefaultConfig()
	cfg.Roles = []string{node.RoleIngest, node.RoleFetch, node.RoleSequence, node.RoleCompact}
	cfg.Listen = "127.0.0.1:0"
	cfg.EtcdEndpoints = etcd
	cfg.Store = "fs:" + filepath.Join(t.TempDir(), "objects")
	cfg.Linger = 5 * time.Millisecond
	cfg.RetentionCheckInterval = time.Second
	n, err := node.New(ctx, cfg, node.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := n.Shutdown(sctx); err != nil {
			t.Error(err)
		}
	}()
	e := &env{c: sdk.New(n.Addr())}
	if _, err := admin.NewFromClient(e.c).CreateTopic(ctx, "auto", 1, &admin.TopicConfig{Retention: time.Hour}); err != nil {
		t.Fatal(err)
	}
	e.produce(t, "auto", batch("old", 10, time.Now().Add(-2*time.Hour)))
	e.produce(t, "auto", batch("new", 10, time.Time{}))
	e.waitOutOfRange(t, "auto", 0, 10)

	var body string
	if !testenv.EventuallyEvery(30*time.Second, 50*time.Millisecond, func() bool {
		resp, err := http.Get(n.Addr() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return metricIs(body, "varve_janitor_leader", "1") && metricIs(body, "varve_retention_entries_total", "1") &&
			strings.Contains(body, "\nvarve_etcd_keys ") && strings.Contains(body, "\nvarve_etcd_db_bytes ") &&
			strings.Contains(body, "\nvarve_bucket_objects ")
	}) {
		t.Fatalf("janitor metrics missing:\n%s", grepLines(body, "varve_janitor", "varve_etcd", "varve_bucket", "varve_retention", "varve_gc"))
	}
}

// metricIs reports whether the exposition has a sample of name (any
// labels) with value v.
func metricIs(body, name, v string) bool {
	for l := range strings.SplitSeq(body, "\n") {
		// Unlabelled series have no braces (no otel_scope_* labels).
		if (strings.HasPrefix(l, name+"{") && strings.HasSuffix(l, "} "+v)) || l == name+" "+v {
			return true
		}
	}
	return false
}

func grepLines(s string, prefixes ...string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
