package provider_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"

	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
	"github.com/varve-io/varve/terraform/provider/internal/provider"
)

// The suite runs against a real `varve dev` built from this repository and
// the real terraform binary. Nothing is skipped: a missing prerequisite
// fails the run with its reason.
var (
	devAddr      string // http://127.0.0.1:PORT of the running varve dev
	terraformBin string // the terraform CLI
	providerDir  string // directory holding the built terraform-provider-varve
	workDir      string // scratch directory of the whole run
	varveBin     string // the varve CLI built from this repository
)

var protoV6Providers = map[string]func() (tfprotov6.ProviderServer, error){
	"varve": providerserver.NewProtocol6WithError(provider.New("test")()),
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "provider tests: "+format+"\n", args...)
		return 1
	}
	var err error
	workDir, err = os.MkdirTemp("", "varve-tf-")
	if err != nil {
		return fail("temp dir: %v", err)
	}
	defer os.RemoveAll(workDir)

	// terraform: TF_ACC_TERRAFORM_PATH, else the one on PATH.
	terraformBin = os.Getenv("TF_ACC_TERRAFORM_PATH")
	if terraformBin == "" {
		if terraformBin, err = exec.LookPath("terraform"); err != nil {
			return fail("the terraform CLI is required (set TF_ACC_TERRAFORM_PATH or put terraform on PATH): %v", err)
		}
	}
	if out, err := exec.Command(terraformBin, "version").CombinedOutput(); err != nil {
		return fail("%s version: %v\n%s", terraformBin, err, out)
	}
	// terraform-plugin-testing runs only with TF_ACC set; these tests are
	// the point of the package, so they always run. It must never try to
	// download terraform, and the CLI must read a real (empty) config file:
	// no registry is reachable here and none is needed.
	cliConfig := filepath.Join(workDir, "empty.tfrc")
	if err := os.WriteFile(cliConfig, []byte("# no provider installation overrides\n"), 0o644); err != nil {
		return fail("write %s: %v", cliConfig, err)
	}
	for k, v := range map[string]string{
		"TF_ACC": "1", "TF_ACC_TERRAFORM_PATH": terraformBin, "TF_CLI_CONFIG_FILE": cliConfig,
		"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1",
	} {
		os.Setenv(k, v)
	}

	root, err := filepath.Abs("../../../..")
	if err != nil {
		return fail("repo root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "varve")); err != nil {
		return fail("cannot find the varve repository at %s: %v", root, err)
	}
	binDir := filepath.Join(workDir, "bin")
	varveBin = filepath.Join(binDir, "varve")
	if out, err := goBuild(root, varveBin, "./cmd/varve"); err != nil {
		return fail("build varve: %v\n%s", err, out)
	}
	providerDir = filepath.Join(workDir, "provider")
	if out, err := goBuild(filepath.Join(root, "terraform", "provider"), filepath.Join(providerDir, "terraform-provider-varve"), "."); err != nil {
		return fail("build terraform-provider-varve: %v\n%s", err, out)
	}

	dev, err := startDev(varveBin, filepath.Join(workDir, "varve-data"))
	if err != nil {
		return fail("start varve dev: %v", err)
	}
	defer dev.stop()
	devAddr = dev.addr
	return m.Run()
}

func goBuild(dir, out, pkg string) ([]byte, error) {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	return cmd.CombinedOutput()
}

type devProcess struct {
	cmd  *exec.Cmd
	addr string
	log  string
	done chan error
	http *http.Client // for /readyz
}

// startDev runs `varve dev` on a port whose next two ports (the embedded
// etcd's) are free too, and waits until GET /readyz answers 200. Its Kafka
// listener is off: varve dev binds 127.0.0.1:9092 by default, which a
// second varve dev here (TestAPIKeyAndACL's, beside TestMain's) or any
// other process on the machine would find taken.
func startDev(bin, dataDir string) (*devProcess, error) {
	return startDevWith(bin, dataDir, http.DefaultClient, "http")
}

// startDevWith runs `varve dev` with extra flags, its API reached with hc
// over scheme (https with TLS flags).
func startDevWith(bin, dataDir string, hc *http.Client, scheme string, extra ...string) (*devProcess, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortTriple()
		if err != nil {
			return nil, err
		}
		d := &devProcess{addr: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), log: filepath.Join(dataDir + fmt.Sprintf("-dev-%d.log", attempt)), done: make(chan error, 1), http: hc}
		logf, err := os.Create(d.log)
		if err != nil {
			return nil, err
		}
		d.cmd = exec.Command(bin, append([]string{"dev", "--data-dir", dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--kafka-listen", "off"}, extra...)...)
		d.cmd.Stdout, d.cmd.Stderr = logf, logf
		if err := d.cmd.Start(); err != nil {
			logf.Close()
			return nil, err
		}
		go func() { d.done <- d.cmd.Wait(); logf.Close() }()
		if err := d.waitReady(60 * time.Second); err != nil {
			d.stop()
			out, _ := os.ReadFile(d.log)
			lastErr = fmt.Errorf("%w\n--- varve dev log:\n%s", err, out)
			continue // most likely a port taken in between: try others
		}
		return d, nil
	}
	return nil, lastErr
}

func (d *devProcess) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("varve dev exited before it was ready: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.addr+"/readyz", nil)
		resp, err := d.http.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("GET %s/readyz not 200 after %s (last: %s)", d.addr, timeout, last)
}

func (d *devProcess) stop() {
	if d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// freePortTriple finds a port p with p, p+1 and p+2 free on 127.0.0.1.
func freePortTriple() (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		ok := p+2 < 65536
		var others []net.Listener
		for q := p + 1; ok && q <= p+2; q++ {
			o, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				ok = false
				break
			}
			others = append(others, o)
		}
		l.Close()
		for _, o := range others {
			o.Close()
		}
		if ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no three consecutive free ports on 127.0.0.1 after 50 tries")
}

// client is an SDK client of the dev cluster, to check what Terraform did
// independently of the provider.
func client(t *testing.T) *sdk.Client {
	t.Helper()
	c := sdk.New(devAddr)
	t.Cleanup(c.Close)
	return c
}

// adminClient is an admin client of the dev cluster, to check what
// Terraform did independently of the provider.
func adminClient(t *testing.T) *admin.Client {
	return admin.NewFromClient(client(t))
}

// ms is a duration of the admin client in milliseconds, as the provider's
// attributes hold it: admin.Forever is -1.
func ms(d time.Duration) int64 {
	if d == admin.Forever {
		return -1
	}
	return d.Milliseconds()
}

func providerBlock() string {
	return fmt.Sprintf("provider \"varve\" {\n  endpoint = %q\n}\n", devAddr)
}
