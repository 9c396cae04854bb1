package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestServeRefusesUnknownSettings: a misspelled key in the config file or a
// misspelled VARVE_* variable stops `varve serve` at once, naming the
// mistake and the closest valid name, before it contacts etcd or the store.
func TestServeRefusesUnknownSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "varve.yaml")
	if err := os.WriteFile(file, []byte("flush_bytes: 1048576\nlingr: 5ms\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Endpoints that answer nothing: a run that gets past the settings
	// would wait for etcd instead of exiting.
	base := []string{"serve", "--etcd-endpoints", "http://127.0.0.1:1", "--store", "fs:" + dir}
	cases := []struct {
		name string
		env  []string
		args []string
		want []string
	}{
		{"file key", nil, append(base, "--config", file), []string{`unknown key "lingr"`, `"linger"`, file}},
		{"file key from VARVE_CONFIG", []string{"VARVE_CONFIG=" + file}, base, []string{`unknown key "lingr"`, `"linger"`}},
		{"environment", []string{"VARVE_LINGR=5ms"}, base, []string{"VARVE_LINGR", "VARVE_LINGER"}},
		{"bad value", []string{"VARVE_LINGER=soon"}, base, []string{"VARVE_LINGER", `"soon" is not a duration`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, varveBin, tc.args...)
			cmd.Env = cleanEnv(tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("varve serve did not exit within %v: %s", cliTimeout, stderr.String())
			}
			if err == nil {
				t.Fatalf("varve serve exited 0; stderr: %s", stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Fatalf("stderr does not name %s:\n%s", w, stderr.String())
				}
			}
		})
	}
}
