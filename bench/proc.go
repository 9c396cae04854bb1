package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it
// is 100 on every Linux the bench runs on.
const clockTicks = 100

// ProcStats is what /proc says about one process.
type ProcStats struct {
	Name       string  `json:"name"`
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	PeakRSS    int64   `json:"peak_rss_bytes"`
}

// ReadProcStats reads a live process's CPU time (user + system) and peak
// resident set size (VmHWM).
func ReadProcStats(name string, pid int) (ProcStats, error) {
	st := ProcStats{Name: name, PID: pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, fmt.Errorf("read stats of %s (pid %d): %w", name, pid, err)
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return st, fmt.Errorf("parse /proc/%d/stat: no command", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return st, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	st.CPUSeconds = float64(ut+stime) / clockTicks
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, fmt.Errorf("read status of %s (pid %d): %w", name, pid, err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			st.PeakRSS = kb << 10
		}
	}
	return st, nil
}

// SelfStats is ReadProcStats of the bench process (which runs the clients).
func SelfStats() ProcStats {
	st, _ := ReadProcStats(SelfName, os.Getpid())
	return st
}

// SelfName names the bench process in reports. It runs the clients too, so
// it is listed but not counted in a target's CPU totals.
const SelfName = "bench (clients)"

// resetPeakRSS restarts the peak RSS (VmHWM) count of each process, so a
// workload's peak is its own and not the largest since the process started
// (Linux: writing 5 to /proc/PID/clear_refs). It returns the first failure.
func resetPeakRSS(ps []ProcStats) error {
	var first error
	for _, p := range ps {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.PID), []byte("5"), 0); err != nil && first == nil {
			first = fmt.Errorf("reset peak RSS of %s (pid %d): %w", p.Name, p.PID, err)
		}
	}
	return first
}

// serverCPU sums the CPU seconds and the largest peak RSS of a target's own
// processes (not the bench's).
func serverCPU(ps []ProcStats) (cpu float64, rss int64) {
	for _, p := range ps {
		if p.Name == SelfName {
			continue
		}
		cpu += p.CPUSeconds
		rss = max(rss, p.PeakRSS)
	}
	return cpu, rss
}

// childrenNamed finds child processes of the bench whose command is comm
// (MinIO is started by testenv, which does not hand out its PID).
func childrenNamed(comm string) []int {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(string(b[j+1:]))
		if len(f) < 2 || string(b[i+1:j]) != comm {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self {
			out = append(out, pid)
		}
	}
	return out
}

// Process is a server started by the bench, its output in a log file.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	once    sync.Once
}

// StartProcess starts bin with args and env added to the bench's own
// environment. The kernel kills it if the bench dies.
func StartProcess(name, logDir, bin string, env []string, args ...string) (*Process, error) {
	logPath := filepath.Join(logDir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %s %s: %w", name, bin, strings.Join(args, " "), err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stats reads the process's CPU time and peak RSS (while it runs).
func (p *Process) Stats() (ProcStats, error) { return ReadProcStats(p.Name, p.PID()) }

// Stop sends SIGTERM and waits up to grace for the process to exit (then
// SIGKILL). It returns how long the process took to exit after SIGTERM.
func (p *Process) Stop(grace time.Duration) time.Duration {
	start := time.Now()
	var took time.Duration
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		took = time.Since(start)
	})
	return took
}

// LogTail returns the end of the process's log, for errors.
func (p *Process) LogTail() string {
	b, _ := os.ReadFile(p.LogPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// freePortRun finds a port such that port, port+1 and port+2 are free on
// loopback (varve dev takes the next two for its etcd).
func freePortRun(n int) (int, error) {
	for attempt := 0; attempt < 50; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		base := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if base+n > 65535 {
			continue
		}
		ok := true
		var held []net.Listener
		for i := 0; i < n; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("no run of free loopback ports")
}

// waitReady polls url until it answers 200, the process exits or timeout.
func waitReady(url string, p *Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second, Transport: benchHTTP.Transport}
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p != nil && p.Exited() {
			return fmt.Errorf("%s exited before ready: %v\n%s", p.Name, p.err, p.LogTail())
		}
		if time.Now().After(deadline) {
			tail := ""
			if p != nil {
				tail = p.LogTail()
			}
			return fmt.Errorf("%s not ready after %v\n%s", url, timeout, tail)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
