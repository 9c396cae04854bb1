package e2e

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/murmur2"
	"github.com/varve-io/varve/internal/testenv"
)

// produced is one record the CLI acknowledged.
type produced struct {
	partition int32
	offset    int64
	key       *string
	value     string
}

// produceAck is a line of `varve produce --format json`.
type produceAck struct {
	Partition *int32 `json:"partition"`
	Offset    *int64 `json:"offset"`
}

// consumed is a line of `varve consume --format json`.
type consumed struct {
	Topic     string          `json:"topic"`
	Partition int32           `json:"partition"`
	Offset    int64           `json:"offset"`
	Timestamp json.RawMessage `json:"timestamp"`
	Key       *string         `json:"key"`
	Value     *string         `json:"value"`
}

// devCLI runs client commands against one `varve dev`.
type devCLI struct {
	t    *testing.T
	addr string
}

func (c devCLI) args(args []string) []string {
	return append(slices.Clone(args), "--addr", c.addr)
}

func (c devCLI) run(stdin string, args ...string) cliResult {
	c.t.Helper()
	return runCLI(c.t, stdin, c.args(args)...)
}

func (c devCLI) must(stdin string, args ...string) cliResult {
	c.t.Helper()
	return mustCLI(c.t, stdin, c.args(args)...)
}

// produce pipes values (one per line) into `varve produce TOPIC --format
// json [flags]` and returns what was acknowledged, in input order.
func (c devCLI) produce(topic string, key *string, values []string, flags ...string) []produced {
	c.t.Helper()
	args := append([]string{"produce", topic, "--format", "json"}, flags...)
	if key != nil {
		args = append(args, "--key", *key)
	}
	r := c.must(strings.Join(values, "\n")+"\n", args...)
	lines := nonEmptyLines(r.stdout)
	if len(lines) != len(values) {
		c.t.Fatalf("%d input lines, %d output lines:\n%s", len(values), len(lines), r)
	}
	out := make([]produced, len(values))
	for i, l := range lines {
		var a produceAck
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil || a.Partition == nil || a.Offset == nil {
			c.t.Fatalf("output line %d %q is not {\"partition\":P,\"offset\":O} (%v):\n%s", i+1, l, err, r)
		}
		out[i] = produced{partition: *a.Partition, offset: *a.Offset, key: key, value: values[i]}
	}
	return out
}

// consume runs `varve consume TOPIC --format json [flags]` to completion.
func (c devCLI) consume(topic string, flags ...string) []consumed {
	c.t.Helper()
	args := append([]string{"consume", topic, "--format", "json"}, flags...)
	r := c.must("", args...)
	return parseConsumed(c.t, topic, r.stdout, r.String())
}

func parseConsumed(t testing.TB, topic, stdout, context string) []consumed {
	t.Helper()
	var out []consumed
	for i, l := range nonEmptyLines(stdout) {
		var rec consumed
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("consume output line %d %q is not JSON: %v\n%s", i+1, l, err, context)
		}
		if rec.Topic != topic || rec.Value == nil || len(rec.Timestamp) == 0 || string(rec.Timestamp) == "null" {
			t.Fatalf("consume output line %d %q: want topic %q, a timestamp and a value\n%s", i+1, l, topic, context)
		}
		out = append(out, rec)
	}
	return out
}

func nonEmptyLines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// sortConsumed orders records by partition, then offset.
func sortConsumed(recs []consumed) {
	slices.SortFunc(recs, func(a, b consumed) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
}

// sameRecords fails unless got (any order) is exactly want: the same
// partitions, offsets, keys and values.
func sameRecords(t testing.TB, what string, got []consumed, want []produced) {
	t.Helper()
	got = slices.Clone(got)
	sortConsumed(got)
	want = slices.Clone(want)
	slices.SortFunc(want, func(a, b produced) int {
		return cmp.Or(cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
	})
	if len(got) != len(want) {
		t.Fatalf("%s: %d records, want %d\ngot:  %v\nwant: %v", what, len(got), len(want), summarize(got), want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Partition != w.partition || g.Offset != w.offset || *g.Value != w.value {
			t.Fatalf("%s: record %d is %d/%d %q, want %d/%d %q", what, i, g.Partition, g.Offset, *g.Value, w.partition, w.offset, w.value)
		}
		if w.key != nil && (g.Key == nil || *g.Key != *w.key) {
			t.Fatalf("%s: record %d/%d has key %v, want %q", what, g.Partition, g.Offset, g.Key, *w.key)
		}
		if w.key == nil && g.Key != nil && *g.Key != "" {
			t.Fatalf("%s: record %d/%d has key %q, want none", what, g.Partition, g.Offset, *g.Key)
		}
	}
}

func summarize(recs []consumed) string {
	var b strings.Builder
	for _, r := range recs {
		v := "<nil>"
		if r.Value != nil {
			v = *r.Value
		}
		fmt.Fprintf(&b, "%d/%d:%q ", r.Partition, r.Offset, v)
	}
	return b.String()
}

// bgCLI is a client command running in the background.
type bgCLI struct {
	args           []string
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	err            error
}

func startCLI(t testing.TB, args ...string) *bgCLI {
	t.Helper()
	b := &bgCLI{args: args, done: make(chan struct{})}
	b.cmd = exec.Command(varveBin, args...)
	b.cmd.Env = cleanEnv()
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start `varve %s`: %v", strings.Join(args, " "), err)
	}
	go func() {
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// result is valid once done is closed.
func (b *bgCLI) result() cliResult {
	r := cliResult{args: b.args, stdout: b.stdout.String(), stderr: b.stderr.String()}
	var ee *exec.ExitError
	if errors.As(b.err, &ee) {
		r.code = ee.ExitCode()
	} else if b.err != nil {
		r.code = -1
		r.stderr += "\n(wait: " + b.err.Error() + ")"
	}
	return r
}

// startDev starts `varve dev` on 127.0.0.1:port with dataDir and waits
// until it is ready.
func startDev(t *testing.T, dataDir string, port int) *proc {
	t.Helper()
	listen := "127.0.0.1:" + strconv.Itoa(port)
	p := startProc(t, "dev", cleanEnv(), "dev", "--data-dir", dataDir, "--listen", listen)
	p.waitReady("http://" + listen)
	return p
}

// TestDevUserJourney drives `varve dev` with the CLI exactly as the README
// tells a user to: topics, produce, consume (by partition, from earliest,
// from latest with --follow), errors, the HTTP endpoints, and a restart that
// keeps the data.
func TestDevUserJourney(t *testing.T) {
	dataDir := t.TempDir()
	port := freePortRun(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	dev := startDev(t, dataDir, port)
	cli := devCLI{t: t, addr: base}

	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, base+path); code != 200 {
			dev.fatalf("GET %s: %d %s", path, code, body)
		}
	}
	// It says it runs without authentication.
	if !testenv.Eventually(10*time.Second, func() bool { return strings.Contains(dev.tail(100), "auth none") }) {
		dev.fatalf("varve dev does not say it runs with auth none")
	}

	// Topics.
	cli.must("", "topic", "create", "demo", "--partitions", "3")
	if r := cli.must("", "topic", "list"); !strings.Contains(r.stdout, "demo") {
		t.Fatalf("topic list does not show demo:\n%s", r)
	}
	if r := cli.must("", "topic", "describe", "demo"); !strings.Contains(r.stdout, "demo") {
		t.Fatalf("topic describe does not show demo:\n%s", r)
	}
	if r := cli.run("", "topic", "create", "demo", "--partitions", "3"); r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "exist") {
		t.Fatalf("creating demo twice: want a non-zero exit and a message saying it exists:\n%s", r)
	}

	// Produce 100 records in three runs: sticky (no key), keyed, explicit
	// partition 2.
	var plain, keyed, p2 []string
	for i := range 40 {
		plain = append(plain, fmt.Sprintf("plain-%02d", i))
	}
	for i := range 30 {
		keyed = append(keyed, fmt.Sprintf("keyed-%02d", i))
		p2 = append(p2, fmt.Sprintf("p2-%02d", i))
	}
	key := "user-1"
	var all []produced
	all = append(all, cli.produce("demo", nil, plain)...)
	keyedAcks := cli.produce("demo", &key, keyed)
	all = append(all, keyedAcks...)
	p2Acks := cli.produce("demo", nil, p2, "--partition", "2")
	all = append(all, p2Acks...)
	if len(all) != 100 {
		t.Fatalf("%d records acknowledged, want 100", len(all))
	}
	next := map[int32]int64{}
	for i, a := range all {
		if a.partition < 0 || a.partition >= 3 {
			t.Fatalf("record %d (%s) acknowledged on partition %d of 3", i, a.value, a.partition)
		}
		if a.offset != next[a.partition] {
			t.Fatalf("record %d (%s) acknowledged at %d/%d, want offset %d: offsets must be dense from 0 and follow input order", i, a.value, a.partition, a.offset, next[a.partition])
		}
		next[a.partition]++
	}
	wantKeyed := murmur2.Partition([]byte(key), 3)
	for _, a := range keyedAcks {
		if a.partition != wantKeyed {
			t.Fatalf("record %s with key %q on partition %d; murmur2 (Kafka's default partitioner) puts it on %d", a.value, key, a.partition, wantKeyed)
		}
	}
	for _, a := range p2Acks {
		if a.partition != 2 {
			t.Fatalf("record %s produced with --partition 2 landed on partition %d", a.value, a.partition)
		}
	}

	// Metrics after producing.
	if code, page := httpGet(t, base+"/metrics"); code != 200 || !strings.Contains(page, "varve_ingest") {
		dev.fatalf("GET /metrics after producing: status %d, no varve_ingest metric:\n%s", code, varveMetricNames(page))
	}

	// Consume one partition, then everything.
	var wantP2 []produced
	for _, a := range all {
		if a.partition == 2 {
			wantP2 = append(wantP2, a)
		}
	}
	sameRecords(t, "consume demo --partition 2", cli.consume("demo", "--partition", "2"), wantP2)
	sameRecords(t, "consume demo --from earliest", cli.consume("demo", "--from", "earliest"), all)

	// --from latest --follow --count: a consumer waiting at the end of the
	// log gets records produced after it started, and only those.
	const lateCount = 5
	follower := startCLI(t, cli.args([]string{"consume", "demo", "--from", "latest", "--follow", "--count", strconv.Itoa(lateCount), "--format", "json"})...)
	var late []produced
	deadline := time.Now().Add(45 * time.Second)
	for i := 0; ; i++ {
		select {
		case <-follower.done:
		default:
			if time.Now().After(deadline) {
				_ = follower.cmd.Process.Kill()
				<-follower.done
				t.Fatalf("consume --from latest --follow --count %d did not finish within 45s while %d records were produced:\n%s", lateCount, len(late), follower.result())
			}
			late = append(late, cli.produce("demo", nil, []string{fmt.Sprintf("late-%02d", i)})...)
			continue
		}
		break
	}
	fr := follower.result()
	if fr.code != 0 {
		t.Fatalf("consume --from latest --follow --count %d:\n%s", lateCount, fr)
	}
	got := parseConsumed(t, "demo", fr.stdout, fr.String())
	if len(got) != lateCount {
		t.Fatalf("consume --count %d printed %d records:\n%s", lateCount, len(got), fr)
	}
	lateAt := map[[2]int64]string{}
	for _, a := range late {
		lateAt[[2]int64{int64(a.partition), a.offset}] = a.value
	}
	lastOff := map[int32]int64{}
	for _, g := range got {
		v, ok := lateAt[[2]int64{int64(g.Partition), g.Offset}]
		if !ok || v != *g.Value {
			t.Fatalf("consume --from latest returned %d/%d %q, which is not a record produced after it started (late records: %v):\n%s", g.Partition, g.Offset, *g.Value, late, fr)
		}
		if prev, seen := lastOff[g.Partition]; seen && g.Offset <= prev {
			t.Fatalf("consume --from latest returned partition %d offset %d after offset %d:\n%s", g.Partition, g.Offset, prev, fr)
		}
		lastOff[g.Partition] = g.Offset
	}
	all = append(all, late...)
	t.Logf("--from latest --follow --count %d finished after %d concurrent single-record produces", lateCount, len(late))

	// Errors a user meets.
	if r := cli.run("x\n", "produce", "nope"); r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "not found") {
		t.Fatalf("produce to a missing topic: want a non-zero exit and a message saying not found:\n%s", r)
	}

	// Graceful stop, restart on the same data dir: everything is still there.
	before := cli.consume("demo", "--from", "earliest")
	sameRecords(t, "consume demo --from earliest before the restart", before, all)
	dev.stopGracefully(35 * time.Second) // the default shutdown timeout is 30s
	dev = startDev(t, dataDir, port)
	after := cli.consume("demo", "--from", "earliest")
	sameRecords(t, "consume demo --from earliest after the restart", after, all)
	sortConsumed(before)
	sortConsumed(after)
	for i := range before {
		if string(before[i].Timestamp) != string(after[i].Timestamp) {
			t.Fatalf("record %d/%d: timestamp %s before the restart, %s after", before[i].Partition, before[i].Offset, before[i].Timestamp, after[i].Timestamp)
		}
	}
	if r := cli.must("", "topic", "list"); !strings.Contains(r.stdout, "demo") {
		t.Fatalf("topic list after the restart does not show demo:\n%s", r)
	}
	// And it still takes writes, continuing the offsets.
	more := cli.produce("demo", nil, []string{"after-restart"}, "--partition", "2")
	if more[0].offset != next[2]+countOn(late, 2) {
		t.Fatalf("first record after the restart at 2/%d, want offset %d", more[0].offset, next[2]+countOn(late, 2))
	}
	dev.stopGracefully(35 * time.Second)
}

func countOn(recs []produced, p int32) int64 {
	var n int64
	for _, r := range recs {
		if r.partition == p {
			n++
		}
	}
	return n
}
