package testenv

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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/varve-io/varve/internal/randhex"
	"github.com/varve-io/varve/tier"
)

const (
	// minioReadyTimeout bounds how long StartMinIO waits for the server.
	minioReadyTimeout = 60 * time.Second
	// minioStopGrace is how long a stopping server gets after SIGTERM.
	minioStopGrace = 5 * time.Second
	// minioRegion is the region test clients use.
	minioRegion = "us-east-1"
)

// MinIOServer is a running MinIO server.
type MinIOServer struct {
	// Endpoint is the server's base URL, http://127.0.0.1:PORT.
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string

	clientOnce sync.Once
	client     *s3.Client

	bin, dir, addr string // to restart it where it was
}

var (
	minioOnce   sync.Once
	minioShared *MinIOServer
	minioErr    error

	stopMu sync.Mutex
	stops  []func() // run by Main, last first
)

// MinIO returns the MinIO server shared by the tests of this test binary,
// starting it on first use; the package's TestMain must call Main to stop it.
// It fails the test if the server cannot be started, for instance because
// the minio binary has not been built (`make tools`).
func MinIO(tb testing.TB) *MinIOServer {
	tb.Helper()
	minioOnce.Do(func() {
		dir, err := os.MkdirTemp("", "varve-minio-")
		if err != nil {
			minioErr = err
			return
		}
		srv, stop, err := StartMinIO(dir)
		if err != nil {
			os.RemoveAll(dir)
			minioErr = err
			return
		}
		atExit(func() {
			stop()
			os.RemoveAll(dir)
		})
		minioShared = srv
	})
	if minioErr != nil {
		tb.Fatalf("testenv: %v", minioErr)
	}
	return minioShared
}

// atExit registers f to be run by Main after the tests.
func atExit(f func()) {
	stopMu.Lock()
	stops = append(stops, f)
	stopMu.Unlock()
}

// Main runs the tests and then stops the servers they started and removes
// their files. Use it as a package's TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	stopMu.Lock()
	defer stopMu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	stops = nil
	return code
}

// MinIOBinary returns the path of the minio binary: $VARVE_MINIO_BIN if set,
// else .tools/bin/minio in the repository (built by `make tools`), else minio
// on the PATH.
func MinIOBinary() (string, error) {
	if p := os.Getenv("VARVE_MINIO_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("minio binary from VARVE_MINIO_BIN: %w (run `make tools` to build .tools/bin/minio)", err)
		}
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", "minio")
		if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", errors.New("minio binary not found: run `make tools` to build .tools/bin/minio, or set VARVE_MINIO_BIN")
}

// StartMinIO starts a MinIO server on loopback ports, keeping its data and
// its log (minio.log) in dir, and waits until it is ready. stop shuts the
// server down (SIGTERM, then SIGKILL after 5s); it is safe to call more than
// once and does not remove dir.
func StartMinIO(dir string) (srv *MinIOServer, stop func(), err error) {
	bin, err := MinIOBinary()
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, nil, fmt.Errorf("start minio: %w", err)
	}
	srv = &MinIOServer{AccessKey: "varve-test", SecretKey: randhex.String(16)}
	// A free port found by listening can be taken again before MinIO binds
	// it; try a few times.
	for attempt := 1; ; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, nil, fmt.Errorf("start minio: %w", err)
		}
		stop, err = srv.start(bin, dir, addr)
		if err == nil || !errors.Is(err, errExited) || attempt == 3 {
			return srv, stop, err
		}
	}
}

// Restart starts the server again after stop, on the same address and
// data directory (the objects are still there), and waits until it is
// ready. It returns the new stop function.
func (m *MinIOServer) Restart() (stop func(), err error) {
	return m.start(m.bin, m.dir, m.addr)
}

var errExited = errors.New("minio exited")

func (m *MinIOServer) start(bin, dir, addr string) (func(), error) {
	m.bin, m.dir, m.addr = bin, dir, addr
	consoleAddr, err := freeAddr()
	if err != nil {
		return nil, fmt.Errorf("start minio: %w", err)
	}
	logPath := filepath.Join(dir, "minio.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start minio: %w", err)
	}
	defer logFile.Close() // the child has its own copy

	cmd := exec.Command(bin, "server", "--address", addr, "--console-address", consoleAddr, filepath.Join(dir, "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = serverProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			pgid := -cmd.Process.Pid
			_ = syscall.Kill(pgid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(minioStopGrace):
				_ = syscall.Kill(pgid, syscall.SIGKILL)
				<-exited
			}
		})
	}

	m.Endpoint = "http://" + addr
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(minioReadyTimeout)
	for {
		resp, err := hc.Get(m.Endpoint + "/minio/health/ready")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop, nil
			}
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("%w (%v) before it was ready; end of %s:\n%s", errExited, waitErr, logPath, logTail(logPath))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("minio at %s not ready after %v; end of %s:\n%s", m.Endpoint, minioReadyTimeout, logPath, logTail(logPath))
		}
	}
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// logTail returns the last few KiB of a log file.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}

// S3Config returns the configuration of a tier.S3 store for bucket on this
// server.
func (m *MinIOServer) S3Config(bucket string) tier.S3Config {
	return tier.S3Config{
		Bucket:    bucket,
		Endpoint:  m.Endpoint,
		Region:    minioRegion,
		PathStyle: true,
		AccessKey: m.AccessKey,
		SecretKey: m.SecretKey,
	}
}

var bucketSeq atomic.Int64

// NewBucket creates a new, empty bucket with a unique name and returns the
// name. The bucket lives as long as the server.
func (m *MinIOServer) NewBucket(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("test-%d-%s", bucketSeq.Add(1), randhex.String(4))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := m.s3Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
		if err == nil {
			return name
		}
		// Ready can answer before the object layer is: MinIO then refuses
		// with XMinioServerNotInitialized for a moment.
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != "XMinioServerNotInitialized" || ctx.Err() != nil {
			tb.Fatalf("testenv: create bucket %s on minio %s: %v", name, m.Endpoint, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *MinIOServer) s3Client() *s3.Client {
	m.clientOnce.Do(func() {
		m.client = s3.New(s3.Options{
			Region:                     minioRegion,
			BaseEndpoint:               aws.String(m.Endpoint),
			UsePathStyle:               true,
			Credentials:                credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
			RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
			ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		})
	})
	return m.client
}
