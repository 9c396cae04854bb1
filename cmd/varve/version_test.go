package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/node"
)

// TestVersionCommand: `varve version` and `varve --version` print the
// version and revision the build stamped (as `make build` does, since the
// Makefile turns Go's own VCS stamp off) and the Go version.
func TestVersionCommand(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "varve")
	const pkg = "github.com/varve-io/varve/internal/obs"
	build := exec.Command("go", "build", "-buildvcs=false",
		"-ldflags", "-X "+pkg+".version=v9.8.7-test -X "+pkg+".revision=0123abcd-dirty", "-o", bin, "./cmd/varve")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("varve %v: %v\n%s", args, err, out)
		}
		for _, want := range []string{"v9.8.7-test", "revision 0123abcd-dirty", runtime.Version()} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("varve %v printed %q, missing %q", args, out, want)
			}
		}
	}
	// Without the stamp: the module's own version, and a revision that says
	// it is unknown rather than nothing.
	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, "varve ") || !strings.Contains(s, "revision ") || !strings.Contains(s, runtime.Version()) {
		t.Errorf("varve version: %q", s)
	}
}

// TestTelemetrySettings: pprof is off for serve and on for dev unless
// turned off; otlp_endpoint is empty by default and checked.
func TestTelemetrySettings(t *testing.T) {
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addNodeFlags(fs)
	c, err := loadNodeConfig(fs)
	if err != nil || c.PProf || c.OTLPEndpoint != "" {
		t.Fatalf("serve defaults: pprof %v otlp_endpoint %q %v", c.PProf, c.OTLPEndpoint, err)
	}
	dev := newDevCmd()
	c, err = loadNodeConfig(dev.Flags())
	if err != nil || !c.PProf {
		t.Fatalf("dev: pprof %v %v", c.PProf, err)
	}
	t.Setenv("VARVE_PPROF", "false")
	c, err = loadNodeConfig(newDevCmd().Flags())
	if err != nil || c.PProf {
		t.Fatalf("dev with VARVE_PPROF=false: pprof %v %v", c.PProf, err)
	}
	t.Setenv("VARVE_OTLP_ENDPOINT", "collector:4317")
	c, err = loadNodeConfig(newDevCmd().Flags())
	if err != nil || c.OTLPEndpoint != "collector:4317" {
		t.Fatalf("VARVE_OTLP_ENDPOINT: %q %v", c.OTLPEndpoint, err)
	}
	for _, bad := range []string{"collector", "ftp://collector:4317", "http://"} {
		c := node.DefaultConfig()
		c.EtcdEndpoints, c.Store, c.OTLPEndpoint = []string{"http://e:2379"}, "fs:/x", bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "otlp_endpoint") {
			t.Errorf("otlp_endpoint %q: %v", bad, err)
		}
	}
}
