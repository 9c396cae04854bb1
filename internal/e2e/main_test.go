package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
)

// varveBin is the binary built by TestMain.
var varveBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "varve-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	varveBin, err = testenv.BuildVarve(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	return testenv.Main(m)
}

// Timeouts of the helpers. Every wait is a poll with one of these deadlines.
const (
	readyTimeout = 60 * time.Second
	cliTimeout   = 60 * time.Second
	pollInterval = 25 * time.Millisecond // between requests to a server under test
)

// cleanEnv is the test process's environment without VARVE_* and AWS_*
// variables, so the processes under test see only what a test gives them.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VARVE_") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proc is a running varve process with its stdout and stderr in a file.
type proc struct {
	t       testing.TB
	name    string
	args    []string
	logPath string
	cmd     *exec.Cmd
	logFile *os.File

	done  chan struct{} // closed when the process has exited
	state *os.ProcessState
	wErr  error
}

var procSeq struct {
	sync.Mutex
	n int
}

// startProc starts varveBin with args. The process is killed (SIGKILL) when
// the test ends, and by the kernel if the test process dies first.
func startProc(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	procSeq.Lock()
	procSeq.n++
	seq := procSeq.n
	procSeq.Unlock()
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("%s-%d.log", name, seq))
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create log file: %v", err)
	}
	cmd := exec.Command(varveBin, args...)
	cmd.Env = env
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s %s: %v", varveBin, strings.Join(args, " "), err)
	}
	p := &proc{t: t, name: name, args: args, logPath: logPath, cmd: cmd, logFile: lf, done: make(chan struct{})}
	go func() {
		p.wErr = cmd.Wait()
		p.state = cmd.ProcessState
		lf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s (%s):\n%s", p.name, strings.Join(p.args, " "), p.tail(60))
		}
	})
	return p
}

// tail returns the last n lines of the process's output.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\t" + strings.Join(lines, "\n\t")
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// fatalf fails the test with the process's output tail.
func (p *proc) fatalf(format string, args ...any) {
	p.t.Helper()
	p.t.Fatalf("%s: %s\n--- last output of %s:\n%s", p.name, fmt.Sprintf(format, args...), p.name, p.tail(40))
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		p.fatalf("send %v: %v", sig, err)
	}
}

// waitExit waits up to timeout for the process to exit and returns its
// exit code (-1 when killed by a signal).
func (p *proc) waitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.fatalf("still running %v after it was asked to stop", timeout)
	}
	return p.state.ExitCode()
}

// kill9 kills the process with SIGKILL and waits until it is gone.
func (p *proc) kill9() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	p.waitExit(30 * time.Second)
}

// stopGracefully sends SIGTERM and requires exit status 0 within timeout.
func (p *proc) stopGracefully(timeout time.Duration) {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.waitExit(timeout); code != 0 {
		p.fatalf("exit status %d after SIGTERM, want 0 (%v)", code, p.wErr)
	}
}

// waitReady polls GET base/readyz until it answers 200.
func (p *proc) waitReady(base string) {
	p.t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	if !testenv.EventuallyEvery(readyTimeout, pollInterval, func() bool {
		if p.exited() {
			p.fatalf("exited (status %d) before %s/readyz answered 200", p.state.ExitCode(), base)
		}
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			last = err.Error()
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))
		return resp.StatusCode == http.StatusOK
	}) {
		p.fatalf("%s/readyz not 200 after %v; last answer: %s", base, readyTimeout, last)
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freePortRun returns a port P such that P to P+3 are all free (the API,
// the embedded etcd and the Kafka listener of `varve dev`).
func freePortRun(t testing.TB) int {
	t.Helper()
	var lastErr error
	for range 100 {
		p := freePort(t)
		if p+3 > 65535 {
			continue
		}
		var lns []net.Listener
		ok := true
		for i := range 4 {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+i)))
			if err != nil {
				lastErr = err
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return p
		}
	}
	t.Fatalf("no run of three free loopback ports found: %v", lastErr)
	return 0
}

// httpGet returns the status code and body of GET url.
func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// cliResult is the outcome of one client command.
type cliResult struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r cliResult) String() string {
	return fmt.Sprintf("`varve %s` exited %d\n--- stdout:\n%s--- stderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// runCLI runs a client command to completion with stdin and returns its
// output and exit code. It fails the test only if the command cannot run or
// does not finish within cliTimeout.
func runCLI(t testing.TB, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, varveBin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	res := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("`varve %s` did not finish within %v\n%s", strings.Join(args, " "), cliTimeout, res)
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("run `varve %s`: %v", strings.Join(args, " "), err)
	}
	return res
}

// mustCLI runs a client command and requires exit status 0.
func mustCLI(t testing.TB, stdin string, args ...string) cliResult {
	t.Helper()
	r := runCLI(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("want exit status 0:\n%s", r)
	}
	return r
}
