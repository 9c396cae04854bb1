package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/sdk"
)

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// streamProduce is `varve produce --format json` fed lines "r<i>" as fast
// as it reads them, until stop is called or limit lines (0: no limit).
type streamProduce struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	stdin          io.WriteCloser
	done           chan struct{}
	exited         time.Time
	err            error
	mu             sync.Mutex
	written        int
}

func startStreamProduce(t *testing.T, limit int, args ...string) *streamProduce {
	t.Helper()
	s := &streamProduce{done: make(chan struct{})}
	s.cmd = exec.Command(varveBin, append([]string{"produce", "--format", "json"}, args...)...)
	s.cmd.Env = cleanEnv()
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	if s.stdin, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start varve produce: %v", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		s.exited = time.Now()
		close(s.done)
	}()
	go func() {
		w := bufio.NewWriterSize(s.stdin, 64<<10)
		for i := 0; limit == 0 || i < limit; i++ {
			if _, err := fmt.Fprintf(w, "r%d\n", i); err != nil {
				return
			}
			s.mu.Lock()
			s.written = i + 1
			s.mu.Unlock()
		}
		w.Flush()
		s.stdin.Close()
	}()
	t.Cleanup(func() {
		s.stdin.Close()
		select {
		case <-s.done:
		default:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// acked returns the acknowledged places printed so far (complete lines).
func (s *streamProduce) acked(t *testing.T) [][2]int64 {
	t.Helper()
	var out [][2]int64
	for _, line := range strings.Split(s.stdout.String(), "\n") {
		if line == "" {
			continue
		}
		var r struct {
			Partition int64 `json:"partition"`
			Offset    int64 `json:"offset"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			break // a line being written
		}
		out = append(out, [2]int64{r.Partition, r.Offset})
	}
	return out
}

func (s *streamProduce) waitAcked(t *testing.T, n int) {
	t.Helper()
	if !testenv.EventuallyEvery(60*time.Second, pollInterval, func() bool {
		select {
		case <-s.done:
			t.Fatalf("varve produce exited early (%v): %s", s.err, s.stderr.String())
		default:
		}
		return strings.Count(s.stdout.String(), "\n") >= n
	}) {
		t.Fatalf("fewer than %d records acknowledged in 60s; stderr: %s", n, s.stderr.String())
	}
}

// checkAckedOnce checks that every acknowledged place holds a record of
// the input, that no input line is stored twice, that each partition holds
// its lines in input order, and returns how many records the log holds.
func checkAckedOnce(t *testing.T, logs [][]logRecord, acked [][2]int64) int {
	t.Helper()
	seen := map[string]string{}
	total := 0
	for p, recs := range logs {
		last := -1
		for _, r := range recs {
			where := fmt.Sprintf("%d/%d", p, r.offset)
			i, err := strconv.Atoi(strings.TrimPrefix(r.value, "r"))
			if err != nil || i <= last {
				t.Fatalf("record %q at %s stored after input line %d: not in input order", r.value, where, last)
			}
			last = i
			if prev, ok := seen[r.value]; ok {
				t.Fatalf("record %q stored twice: at %s and %s", r.value, prev, where)
			}
			if !strings.HasPrefix(r.value, "r") {
				t.Fatalf("record at %s is %q, not an input line", where, r.value)
			}
			seen[r.value] = where
			total++
		}
	}
	at := map[[2]int64]bool{}
	for _, a := range acked {
		if at[a] {
			t.Fatalf("place %d/%d acknowledged twice", a[0], a[1])
		}
		at[a] = true
		if a[0] < 0 || int(a[0]) >= len(logs) || a[1] < 0 || a[1] >= int64(len(logs[a[0]])) {
			t.Fatalf("acknowledged place %d/%d is not in the log", a[0], a[1])
		}
	}
	return total
}

var ackedLine = regexp.MustCompile(`(?m)^(\d+) records? acknowledged$`)

// TestProduceNodeKilledDeliveryTimeout: `varve produce` streams into one
// node, which is killed with SIGKILL mid-stream. Within the delivery
// timeout the command stops, says how many records were acknowledged and
// why the rest were not, and exits 1; every acknowledged record is in the
// log exactly once.
func TestProduceNodeKilledDeliveryTimeout(t *testing.T) {
	const timeout = 10 * time.Second
	c := newCluster(t)
	a := c.startServe("a", loopbackListen(t))
	topic := "killed"
	newAPI(a.addr).createTopic(t, topic, 4)

	s := startStreamProduce(t, 0, topic, "--addr", a.addr, "--delivery-timeout", timeout.String())
	s.waitAcked(t, 2000)
	killed := time.Now()
	a.kill9()
	select {
	case <-s.done:
	case <-time.After(timeout + 30*time.Second):
		t.Fatalf("varve produce still running %v after its node was killed (delivery timeout %v)", time.Since(killed), timeout)
	}
	took := s.exited.Sub(killed)
	t.Logf("varve produce exited %v after the kill; stderr: %s", took, s.stderr.String())
	if took > timeout+2*time.Second {
		t.Fatalf("varve produce exited %v after its node was killed, want within the delivery timeout %v", took, timeout)
	}
	var ee *exec.ExitError
	if !errors.As(s.err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("varve produce: %v, want a non-zero exit", s.err)
	}
	stderr := s.stderr.String()
	m := ackedLine.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("stderr does not say how many records were acknowledged: %s", stderr)
	}
	n, _ := strconv.Atoi(m[1])
	acked := s.acked(t)
	if n != len(acked) || n < 2000 {
		t.Fatalf("stderr says %d acknowledged, stdout lists %d (want at least 2000)", n, len(acked))
	}
	if !strings.Contains(stderr, "not acknowledged") || !strings.Contains(stderr, "delivery timeout") {
		t.Fatalf("stderr does not say why the rest failed: %s", stderr)
	}
	s.mu.Lock()
	written := s.written
	s.mu.Unlock()
	if written >= 1<<30 {
		t.Fatalf("reading did not stop")
	}

	b := c.startServe("b", loopbackListen(t))
	logs := newAPI(b.addr).readAll(t, topic)
	stored := checkAckedOnce(t, logs, acked)
	t.Logf("%d records acknowledged, %d stored", n, stored)
}

// TestProduceFailsOverToAnotherNode: `varve produce --addr A,B` streams
// into A, which is killed mid-stream; the producer carries on through B
// and every record is acknowledged and stored exactly once.
func TestProduceFailsOverToAnotherNode(t *testing.T) {
	const lines = 200000
	c := newCluster(t)
	a := c.startServe("a", loopbackListen(t))
	b := c.startServe("b", loopbackListen(t))
	topic := "failover"
	newAPI(a.addr).createTopic(t, topic, 4)

	s := startStreamProduce(t, lines, topic, "--addr", a.addr+","+b.addr, "--delivery-timeout", "60s")
	s.waitAcked(t, 5000)
	a.kill9()
	if n := len(s.acked(t)); n >= lines {
		t.Fatalf("all %d records were acknowledged before the kill", n)
	} else {
		t.Logf("%d of %d records acknowledged when node a was killed", n, lines)
	}
	select {
	case <-s.done:
	case <-time.After(120 * time.Second):
		t.Fatalf("varve produce still running 120s after the kill; stderr: %s", s.stderr.String())
	}
	if s.err != nil {
		t.Fatalf("varve produce: %v; stderr: %s", s.err, s.stderr.String())
	}
	acked := s.acked(t)
	if len(acked) != lines {
		t.Fatalf("%d records acknowledged, want %d; stderr: %s", len(acked), lines, s.stderr.String())
	}
	logs := newAPI(b.addr).readAll(t, topic)
	if stored := checkAckedOnce(t, logs, acked); stored != lines {
		t.Fatalf("%d records stored, want %d", stored, lines)
	}
}

// TestProducerNodeKilledCompletesWithinDeliveryTimeout: an SDK producer
// streams into one node, which is killed with SIGKILL mid-stream. Every
// record's callback runs within the delivery timeout of its Produce call,
// and every acknowledged record is in the log exactly once, at the offset
// its callback got.
func TestProducerNodeKilledCompletesWithinDeliveryTimeout(t *testing.T) {
	const timeout = 5 * time.Second
	c := newCluster(t)
	a := c.startServe("a", loopbackListen(t))
	topic := "sdk-killed"
	newAPI(a.addr).createTopic(t, topic, 4)

	cl := sdk.New(a.addr)
	defer cl.Close()
	// A small buffer bounds the records in flight when the node dies (the
	// loop below produces as fast as it can), so their callbacks are few.
	p := cl.NewProducer(sdk.ProducerOptions{DeliveryTimeout: timeout, MaxBufferedBytes: 256 << 10})
	type outcome struct {
		rec    sdk.Record
		err    error
		done   int64         // when the callback ran
		queued *atomic.Int64 // when Produce returned
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		acked    atomic.Int64
		failing  atomic.Int64
	)
	stop := make(chan struct{})
	produced := make(chan int)
	go func() {
		i := 0
		defer func() { produced <- i }()
		for ; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// The delivery timeout runs from when Produce returns (it
			// may block for buffer space before).
			var queued atomic.Int64
			p.Produce(context.Background(), sdk.Record{Topic: topic, Value: fmt.Appendf(nil, "r%d", i)}, func(r sdk.Record, err error) {
				done := time.Now().UnixNano()
				if err == nil {
					acked.Add(1)
				} else {
					failing.Add(1)
				}
				mu.Lock()
				outcomes = append(outcomes, outcome{rec: r, err: err, done: done, queued: &queued})
				mu.Unlock()
			})
			queued.Store(time.Now().UnixNano())
		}
	}()
	if !testenv.EventuallyEvery(60*time.Second, pollInterval, func() bool { return acked.Load() >= 2000 }) {
		t.Fatalf("only %d records acknowledged in 60s", acked.Load())
	}
	a.kill9()
	// Keep producing into the dead node until a record fails: the records
	// produced meanwhile too must fail within the delivery timeout.
	if !testenv.EventuallyEvery(2*timeout, pollInterval, func() bool { return failing.Load() > 0 }) {
		t.Fatalf("no record failed %v after the only node was killed (delivery timeout %v)", 2*timeout, timeout)
	}
	close(stop)
	n := <-produced
	ctx, cancel := context.WithTimeout(context.Background(), 2*timeout)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("close: %v (records not completed within the delivery timeout)", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(outcomes) != n {
		t.Fatalf("%d callbacks for %d records", len(outcomes), n)
	}
	var places [][2]int64
	failed := 0
	for _, o := range outcomes {
		if took := time.Duration(o.done - o.queued.Load()); took > timeout+time.Second {
			t.Fatalf("record %s completed %v after Produce returned (%v), delivery timeout %v", o.rec.Value, took, o.err, timeout)
		}
		if o.err != nil {
			failed++
			if !errors.Is(o.err, sdk.ErrDeliveryTimeout) {
				t.Fatalf("record %s failed with %v, want ErrDeliveryTimeout", o.rec.Value, o.err)
			}
			continue
		}
		places = append(places, [2]int64{int64(o.rec.Partition), o.rec.Offset})
	}
	if failed == 0 {
		t.Fatal("no record failed although the only node was killed")
	}
	b := c.startServe("b", loopbackListen(t))
	logs := newAPI(b.addr).readAll(t, topic)
	stored := checkAckedOnce(t, logs, places)
	for _, o := range outcomes {
		if o.err == nil && logs[o.rec.Partition][o.rec.Offset].value != string(o.rec.Value) {
			t.Fatalf("record %s acknowledged at %d/%d, which holds %s", o.rec.Value, o.rec.Partition, o.rec.Offset, logs[o.rec.Partition][o.rec.Offset].value)
		}
	}
	t.Logf("%d records produced, %d acknowledged, %d failed, %d stored", n, len(places), failed, stored)
}
