package provider_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// TestTerraformCLIDevOverrides drives the built provider binary with the
// plain terraform CLI, the way a user developing against `varve dev` does:
// a CLI config with dev_overrides (no terraform init, no registry), the
// example in examples/basic, then apply, an empty plan, state rm + import,
// an empty plan again, and destroy. The cluster is checked with the SDK
// after each step.
func TestTerraformCLIDevOverrides(t *testing.T) {
	const topic = "tfcli-clicks"
	dir := t.TempDir()
	examples, err := filepath.Glob("../../examples/basic/*.tf")
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example configuration in ../../examples/basic: %v", err)
	}
	tests, _ := filepath.Glob("../../examples/basic/tests/*.tftest.hcl")
	if len(tests) == 0 {
		t.Fatal("no tests/*.tftest.hcl in ../../examples/basic")
	}
	if err := os.Mkdir(filepath.Join(dir, "tests"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range append(examples, tests...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel := filepath.Base(f)
		if strings.HasSuffix(f, ".tftest.hcl") {
			rel = filepath.Join("tests", rel)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rc := filepath.Join(dir, "dev.tfrc")
	rcText := fmt.Sprintf(`provider_installation {
  dev_overrides {
    "varve-io/varve" = %q
  }
  direct {}
}
`, providerDir)
	if err := os.WriteFile(rc, []byte(rcText), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"TF_CLI_CONFIG_FILE="+rc, "TF_VAR_endpoint="+devAddr, "TF_VAR_topic_name="+topic,
		"TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1", "TF_INPUT=0")

	tf := func(wantCode int, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, terraformBin, append(args, "-no-color")...)
		cmd.Dir, cmd.Env = dir, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("terraform %s: %v", strings.Join(args, " "), err)
		}
		if code != wantCode {
			t.Fatalf("terraform %s: exit code %d, want %d\n%s", strings.Join(args, " "), code, wantCode, out.String())
		}
		// apply, plan and destroy warn that the override is in effect (import,
		// output and test do not print it).
		loads := args[0] == "apply" || args[0] == "plan" || args[0] == "destroy"
		if loads && !strings.Contains(out.String(), "Provider development overrides are in effect") {
			t.Fatalf("terraform %s did not use the dev_overrides provider:\n%s", strings.Join(args, " "), out.String())
		}
		return out.String()
	}
	topicID := func() string {
		t.Helper()
		d, err := adminClient(t).DescribeTopic(context.Background(), topic)
		if err != nil {
			t.Fatalf("describe %q on the cluster: %v", topic, err)
		}
		if d.Topic.Partitions != 3 || ms(d.Topic.Config.Retention) != 86400000 {
			t.Fatalf("cluster has %v, want 3 partitions and retention_ms 86400000", d.Topic)
		}
		return d.Topic.ID
	}
	t.Cleanup(func() { _ = adminClient(t).DeleteTopic(context.Background(), topic) })

	tf(0, "apply", "-auto-approve")
	id := topicID()
	var outs struct {
		TopicID       struct{ Value string }   `json:"topic_id"`
		ClusterTopics struct{ Value []string } `json:"cluster_topics"`
	}
	if err := json.Unmarshal([]byte(tf(0, "output", "-json")), &outs); err != nil {
		t.Fatalf("terraform output -json: %v", err)
	}
	if outs.TopicID.Value != id || !slices.Contains(outs.ClusterTopics.Value, topic) {
		t.Fatalf("outputs topic_id=%q cluster_topics=%v; cluster says id %q", outs.TopicID.Value, outs.ClusterTopics.Value, id)
	}
	tf(0, "plan", "-detailed-exitcode") // 0: no changes

	tf(0, "state", "rm", "varve_topic.clicks")
	tf(2, "plan", "-detailed-exitcode") // 2: it would create the topic again
	// Creating it fails with a hint that can be followed as printed.
	out := tf(1, "apply", "-auto-approve")
	if strings.Contains(out, "<address>") || !strings.Contains(out, "with varve_topic.clicks,") ||
		!strings.Contains(out, "terraform import varve_topic.NAME "+topic) {
		t.Fatalf("creating an existing topic: want the import hint naming this resource and the topic:\n%s", out)
	}
	tf(0, "import", "varve_topic.clicks", topic)
	tf(0, "plan", "-detailed-exitcode")
	if topicID() != id {
		t.Fatal("the topic changed identity during state rm + import")
	}

	// Settings change in place; only a rename replaces the topic, and
	// shrinking is refused before anything happens.
	plan := tf(2, "plan", "-detailed-exitcode", "-var", "topic_name="+topic+"-renamed")
	if !strings.Contains(plan, "must be replaced") || !regexp.MustCompile(`name += "`+topic+`" -> "`+topic+`-renamed" # forces replacement`).MatchString(plan) {
		t.Fatalf("renaming the topic should plan a replacement forced by name:\n%s", plan)
	}
	for _, v := range []string{"partitions=5", "retention_ms=172800000"} {
		plan = tf(2, "plan", "-detailed-exitcode", "-var", v)
		for _, want := range []string{"will be updated in-place", "Plan: 0 to add, 1 to change, 0 to destroy"} {
			if !strings.Contains(plan, want) || strings.Contains(plan, "forces replacement") {
				t.Fatalf("-var %s: plan lacks %q or replaces:\n%s", v, want, plan)
			}
		}
		if v == "partitions=5" && !regexp.MustCompile(`~ partitions += 3 -> 5\n`).MatchString(plan) {
			t.Fatalf("growing partitions: plan does not show ~ partitions = 3 -> 5:\n%s", plan)
		}
	}
	plan = tf(2, "plan", "-detailed-exitcode", "-var", "cleanup_policy=compact")
	for _, want := range []string{"will be updated in-place", "Plan: 0 to add, 1 to change, 0 to destroy"} {
		if !strings.Contains(plan, want) || strings.Contains(plan, "forces replacement") ||
			!regexp.MustCompile(`~ cleanup_policy += "delete" -> "compact"\n`).MatchString(plan) {
			t.Fatalf("changing the cleanup policy: plan lacks %q or replaces:\n%s", want, plan)
		}
	}
	plan = tf(1, "plan", "-detailed-exitcode", "-var", "partitions=2")
	if !strings.Contains(plan, "Partitions cannot be removed") {
		t.Fatalf("shrinking partitions should fail at plan time:\n%s", plan)
	}
	// retention_ms = 0 gets one error that says what to write instead.
	plan = tf(1, "plan", "-var", "retention_ms=0")
	if n := strings.Count(plan, "Error: "); n != 1 || !strings.Contains(plan, "retention_ms = 0 is not allowed: give -1") {
		t.Fatalf("retention_ms = 0: want exactly one error explaining it, got %d:\n%s", n, plan)
	}
	if topicID() != id {
		t.Fatal("planning changed the topic")
	}

	tf(0, "destroy", "-auto-approve")
	if _, err := adminClient(t).DescribeTopic(context.Background(), topic); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("after destroy, describe %q returned %v, want NotFound", topic, err)
	}

	// The example's own `terraform test` (tests/*.tftest.hcl): apply,
	// assertions, destroy, in a state of its own.
	if out := tf(0, "test"); !strings.Contains(out, "1 passed, 0 failed") {
		t.Fatalf("terraform test did not pass its run:\n%s", out)
	}
	if _, err := adminClient(t).DescribeTopic(context.Background(), topic); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("after terraform test, describe %q returned %v, want NotFound (test destroys what it creates)", topic, err)
	}
}
