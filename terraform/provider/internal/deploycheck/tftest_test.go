package deploycheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pluginDir holds the hashicorp/aws provider binary of the machine image
// (registry.terraform.io/hashicorp/aws/VERSION/linux_amd64), which lets
// `terraform init -plugin-dir` work without the registry.
const pluginDir = "/opt/tf-plugins"

// TestModuleTerraformTest runs `terraform validate` and the module's
// `terraform test` files (terraform/modules/varve/tests, a mock AWS
// provider: plan and apply without AWS) on a copy of the module: the
// provider schema of every resource, TLS on the load-balancer path, the
// secrets the tasks get, the execution role's access to them.
func TestModuleTerraformTest(t *testing.T) {
	tf := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if tf == "" {
		tf = "terraform"
	}
	if _, err := os.Stat(filepath.Join(pluginDir, "registry.terraform.io", "hashicorp", "aws")); err != nil {
		t.Fatalf("the hashicorp/aws provider is not in %s (%v): this check needs the machine image's provider binary, the registry cannot be reached", pluginDir, err)
	}
	dir := filepath.Join(t.TempDir(), "varve")
	src := filepath.Join(repoRoot, "terraform", "modules", "varve")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			if d.Name() == ".terraform" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		return copyFile(p, filepath.Join(dir, rel))
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "terraformrc")
	if err := os.WriteFile(cfg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		cmd := exec.Command(tf, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+cfg, "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("terraform %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("init", "-backend=false", "-input=false", "-no-color", "-plugin-dir="+pluginDir)
	run("validate", "-no-color")
	out := run("test", "-no-color")
	if !strings.Contains(out, "0 failed") || strings.Contains(out, " 0 passed") {
		t.Fatalf("terraform test:\n%s", out)
	}
	t.Log(out)
}
