package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/testenv"
)

// TestDevSecondProcessOnSameDataDir: a second `varve dev` on a data
// directory in use exits at once, non-zero, naming the lock file and the
// process holding it, and the first keeps serving.
func TestDevSecondProcessOnSameDataDir(t *testing.T) {
	dataDir := t.TempDir()
	port := freePortRun(t)
	first := startDev(t, dataDir, port)

	second := startProc(t, "dev-second", cleanEnv(), "dev", "--data-dir", dataDir, "--listen", "127.0.0.1:"+strconv.Itoa(freePortRun(t)))
	start := time.Now()
	code := second.waitExit(5 * time.Second)
	took := time.Since(start)
	out := second.tail(20)
	lock := filepath.Join(dataDir, "varve.lock")
	pid := strconv.Itoa(first.cmd.Process.Pid)
	if code == 0 || !strings.Contains(out, lock) || !strings.Contains(out, pid) {
		second.fatalf("second `varve dev` on %s exited %d after %v; want a non-zero exit naming the lock %s and the first process's pid %s", dataDir, code, took, lock, pid)
	}
	t.Logf("second `varve dev` exited %d after %v:\n%s", code, took, out)
	if b, err := os.ReadFile(lock); err != nil || strings.TrimSpace(string(b)) != pid {
		t.Fatalf("lock file %s holds %q (%v), want the first process's pid %s", lock, b, err, pid)
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if c, body := httpGet(t, base+"/readyz"); c != 200 {
		first.fatalf("first `varve dev` not ready after the second one was refused: %d %s", c, body)
	}
	first.stopGracefully(35 * time.Second)

	// The lock dies with its process: after a kill -9 the directory is
	// usable at once.
	third := startDev(t, dataDir, port)
	third.kill9()
	startDev(t, dataDir, port).stopGracefully(35 * time.Second)
}

// TestDevSignalDuringStart: a `varve dev` whose start-up blocks (here:
// another process holds the embedded etcd's database lock, as a stray etcd
// or an older varve would) stops at once on SIGTERM, non-zero, and gives up
// by itself after --start-timeout with a message saying what it waited for.
func TestDevSignalDuringStart(t *testing.T) {
	dataDir := t.TempDir()
	port := freePortRun(t)
	startDev(t, dataDir, port).stopGracefully(35 * time.Second)

	db := filepath.Join(dataDir, "etcd", "member", "snap", "db")
	f, err := os.OpenFile(db, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open etcd's database: %v", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("lock %s: %v", db, err)
	}

	// blocked starts dev and waits until it holds the data directory (its
	// pid in the lock file), i.e. it is past that step and in etcd's start.
	blocked := func(name string, extra ...string) *proc {
		t.Helper()
		args := append([]string{"dev", "--data-dir", dataDir, "--listen", "127.0.0.1:" + strconv.Itoa(port)}, extra...)
		p := startProc(t, name, cleanEnv(), args...)
		pid := strconv.Itoa(p.cmd.Process.Pid)
		if !testenv.EventuallyEvery(readyTimeout, pollInterval, func() bool {
			b, _ := os.ReadFile(filepath.Join(dataDir, "varve.lock"))
			return strings.TrimSpace(string(b)) == pid || p.exited()
		}) || p.exited() {
			p.fatalf("did not take the data directory's lock")
		}
		return p
	}

	t.Run("SIGTERM", func(t *testing.T) {
		p := blocked("dev-sigterm")
		p.signal(syscall.SIGTERM)
		start := time.Now()
		code := p.waitExit(5 * time.Second)
		out := p.tail(20)
		if code == 0 || !strings.Contains(out, "embedded etcd") {
			p.fatalf("exit %d after SIGTERM during start-up; want non-zero and a message naming the step (embedded etcd)", code)
		}
		t.Logf("SIGTERM while etcd waits for its lock: exit %d after %v:\n%s", code, time.Since(start), out)
	})
	t.Run("SIGINT", func(t *testing.T) {
		p := blocked("dev-sigint")
		p.signal(syscall.SIGINT)
		if code := p.waitExit(5 * time.Second); code == 0 {
			p.fatalf("exit 0 after Ctrl-C during start-up, want non-zero")
		}
	})
	t.Run("StartTimeout", func(t *testing.T) {
		p := blocked("dev-timeout", "--start-timeout", "2s")
		code := p.waitExit(10 * time.Second)
		out := p.tail(20)
		if code == 0 || !strings.Contains(out, "not started after 2s") {
			p.fatalf("exit %d; want non-zero and 'not started after 2s' once --start-timeout passed", code)
		}
	})

	// Unlocked, the same directory starts and keeps its data.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	startDev(t, dataDir, port).stopGracefully(35 * time.Second)
}

// TestDevStopsQuickly: an idle `varve dev` stops within 1.5 s of SIGTERM
// (it took 2.7–4.7 s: the janitor resigned its election on an etcd client
// that was already closed and waited out the retries).
func TestDevStopsQuickly(t *testing.T) {
	dataDir := t.TempDir()
	port := freePortRun(t)
	dev := startDev(t, dataDir, port)
	cli := devCLI{t: t, addr: "http://127.0.0.1:" + strconv.Itoa(port)}
	cli.must("", "topic", "create", "idle", "--partitions", "2")
	cli.produce("idle", nil, []string{"a", "b"})
	start := time.Now()
	dev.stopGracefully(35 * time.Second)
	took := time.Since(start)
	t.Logf("idle varve dev stopped %v after SIGTERM", took)
	if took > 1500*time.Millisecond {
		dev.fatalf("idle `varve dev` took %v to stop after SIGTERM, want under 1.5s", took)
	}
}

// diskFullOptOut names the variable that skips TestDevDiskFull where a
// tmpfs cannot be mounted (the test needs root or CAP_SYS_ADMIN).
const diskFullOptOut = "VARVE_E2E_NO_TMPFS"

// mountTmpfs mounts a tmpfs of size on a new directory for the test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size="+size); err != nil {
		if os.Getenv(diskFullOptOut) == "1" {
			t.Skipf("cannot mount a tmpfs (%v) and %s=1 opts out", err, diskFullOptOut)
		}
		t.Fatalf("mount a tmpfs on %s to fill a disk: %v (run as root, or set %s=1 to opt out)", mnt, err, diskFullOptOut)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// startDevArgs is startDev with extra flags.
func startDevArgs(t *testing.T, dataDir string, port int, extra ...string) *proc {
	t.Helper()
	listen := "127.0.0.1:" + strconv.Itoa(port)
	p := startProc(t, "dev", cleanEnv(), append([]string{"dev", "--data-dir", dataDir, "--listen", listen}, extra...)...)
	p.waitReady("http://" + listen)
	return p
}

// TestDevDiskFull runs `varve dev` on a small tmpfs and fills it with
// another file (no reserve: --min-free-bytes 0). Produce must be refused at
// once with RESOURCE_EXHAUSTED naming the segment, the process must stay up
// and serve reads, and writes must resume when space returns, without a
// restart. Before, the process exited 1 without a log line.
func TestDevDiskFull(t *testing.T) {
	// Room for two 64 MB WAL files: etcd's WAL pipeline preallocates the
	// next file in the background at start, and with one file's room it
	// sometimes filled the disk before etcd's first database write.
	mnt := mountTmpfs(t, "160m")
	dataDir := filepath.Join(mnt, "data")
	port := freePortRun(t)
	// No probe while the test looks: readiness follows the failed PUT.
	dev := startDevArgs(t, dataDir, port, "--min-free-bytes", "0", "--store-probe-interval", "1h")
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	cli := devCLI{t: t, addr: base}
	cli.must("", "topic", "create", "full", "--partitions", "1", "--max-record-bytes", strconv.Itoa(8<<20))
	before := cli.produce("full", nil, []string{"before-1", "before-2"})

	// Full but for 2 MiB left to etcd, whose writes (the producer's
	// registration, bbolt growing its file) would otherwise meet the full
	// disk first, at random, and stop the process: the record below needs
	// a segment of ~4 MiB (incompressible past base64).
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler, 2<<20)
	big := make([]byte, 4<<20)
	rand.Read(big)
	during := base64.StdEncoding.EncodeToString(big) + "\n"

	start := time.Now()
	r := cli.run(during, "produce", "full", "--delivery-timeout", "20s")
	took := time.Since(start)
	if r.code == 0 || !strings.Contains(r.stderr, "no space left on device writing segment") || !strings.Contains(r.stderr, "resource_exhausted") {
		dev.fatalf("produce on a full disk: want a non-zero exit and resource_exhausted 'no space left on device writing segment ...':\n%s", r)
	}
	if took > 10*time.Second {
		dev.fatalf("produce on a full disk took %v to be refused, want under 10s:\n%s", took, r)
	}
	t.Logf("produce on a full disk refused after %v: %s", took, strings.TrimSpace(r.stderr))

	// Reads go on.
	if dev.exited() {
		dev.fatalf("exited (status %d) on a full disk", dev.state.ExitCode())
	}
	sameRecords(t, "consume on a full disk", cli.consume("full", "--from", "earliest"), before)
	// Readiness follows whether the node can flush (issue 12 item 19): a
	// full disk makes it not ready, saying why, so a load balancer sends
	// writes elsewhere; reads above still work.
	if c, body := httpGet(t, base+"/readyz"); c != 503 || !strings.Contains(body, "no space left on device") {
		dev.fatalf("/readyz on a full disk: %d %s, want 503 naming the full disk", c, body)
	}

	// Space returns: writes resume in the same process.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	after := cli.produce("full", nil, []string{"after-1"})
	sameRecords(t, "consume after space returned", cli.consume("full", "--from", "earliest"), append(before, after...))
	if logged := readLog(t, dev); !strings.Contains(logged, "segment put failed: no space left on device") {
		dev.fatalf("the log does not mention the full disk")
	}

	// Without a reserve, metadata writes on a full disk end in etcd failing
	// to write and stopping the process: never silently (its logger was a
	// no-op), always with etcd's reason in the log.
	fillDisk(t, filler, 0)
	for i := 0; i < 500 && !dev.exited(); i++ {
		cli.run("", "topic", "create", fmt.Sprintf("meta-%d", i), "--partitions", "50")
	}
	if !dev.exited() {
		t.Logf("etcd kept going through 500 topic creations on a full disk")
		dev.stopGracefully(35 * time.Second)
		return
	}
	dev.waitExit(10 * time.Second)
	logged := readLog(t, dev)
	var etcdErr string
	for _, l := range nonEmptyLines(logged) {
		if strings.Contains(l, "level=ERROR") && strings.Contains(l, "component=etcd") && strings.Contains(l, "no space left on device") {
			etcdErr = l
		}
	}
	if etcdErr == "" {
		dev.fatalf("exited (status %d) on a full disk without an etcd error in the log", dev.state.ExitCode())
	}
	t.Logf("etcd stopped the process (status %d) on a full disk, saying: %s", dev.state.ExitCode(), etcdErr)
}

func readLog(t *testing.T, p *proc) string {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDevDiskFullKeepsRoomForEtcd fills a tmpfs by producing into `varve
// dev` with its default reserve: the segment that would eat into the room
// kept for the embedded etcd is refused with RESOURCE_EXHAUSTED, and etcd
// still takes writes (a topic is created, a group commits). Without the
// reserve, etcd cannot grow its database on a full disk and stops the
// process (it did: "failed to commit tx", exit 1).
func TestDevDiskFullKeepsRoomForEtcd(t *testing.T) {
	mnt := mountTmpfs(t, "320m")
	dataDir := filepath.Join(mnt, "data")
	port := freePortRun(t)
	dev := startDevArgs(t, dataDir, port)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	cli := devCLI{t: t, addr: base}
	cli.must("", "topic", "create", "full", "--partitions", "1")
	before := cli.produce("full", nil, []string{"before-1", "before-2"})

	// Leave 2 MiB above the reserve, then produce 8 MiB of hex (about
	// 4 MiB compressed).
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler, 128<<20+2<<20)
	var in strings.Builder
	buf := make([]byte, 511)
	for range 8192 {
		_, _ = rand.Read(buf)
		in.WriteString(hex.EncodeToString(buf) + "\n")
	}
	r := cli.run(in.String(), "produce", "full")
	if r.code == 0 || !strings.Contains(r.stderr, "no space left on device writing segment") || !strings.Contains(r.stderr, "kept free for etcd") || !strings.Contains(r.stderr, "resource_exhausted") {
		dev.fatalf("produce into the reserve: want a non-zero exit and resource_exhausted 'no space left on device writing segment ... kept free for etcd':\n%s", r)
	}
	t.Logf("produce into the reserve refused: %s", lastLine(r.stderr))

	// etcd has room: metadata writes work, the process is up, reads go on.
	cli.must("", "topic", "create", "after-full", "--partitions", "8")
	for i := range 20 {
		cli.must("", "topic", "create", fmt.Sprintf("more-%d", i), "--partitions", "50")
	}
	got := cli.consume("full", "--from", "earliest")
	if len(got) < len(before) {
		dev.fatalf("consume on a full disk: %d records, want at least the %d produced before", len(got), len(before))
	}
	sameRecords(t, "the records produced before the disk filled", got[:len(before)], before)
	if dev.exited() {
		dev.fatalf("exited (status %d) on a full disk", dev.state.ExitCode())
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	cli.produce("full", nil, []string{"after-1"})
	dev.stopGracefully(35 * time.Second)
}

func lastLine(s string) string {
	lines := nonEmptyLines(s)
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

// fillDisk writes path until the file system has only leave bytes free
// (0: none).
func fillDisk(t *testing.T, path string, leave uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total := 0
	free := func() uint64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
			t.Fatal(err)
		}
		return st.Bavail * uint64(st.Bsize)
	}
	for chunk := 1 << 20; chunk >= 512; {
		if leave > 0 {
			fr := free()
			if fr <= leave {
				break
			}
			chunk = int(min(uint64(chunk), fr-leave))
		}
		n, err := f.Write(make([]byte, chunk))
		total += n
		if err == nil {
			continue
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("fill %s: %v", path, err)
		}
		chunk /= 2
	}
	t.Logf("filled the disk with %d bytes; %d bytes free", total, free())
}
