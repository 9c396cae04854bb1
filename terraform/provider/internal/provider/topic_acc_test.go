package provider_test

import (
	"context"
	"fmt"
	"regexp"
	"testing"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/varve-io/varve/sdk/admin"
)

func topicConfig(name string, partitions int, extra string) string {
	return providerBlock() + fmt.Sprintf(`
resource "varve_topic" "t" {
  name       = %q
  partitions = %d
%s
}
`, name, partitions, extra)
}

// checkTopic asserts, through the SDK rather than the provider, what the
// cluster holds.
func checkTopic(t *testing.T, name string, partitions int32, retentionMs int64, policy admin.CleanupPolicy) resource.TestCheckFunc {
	return func(*terraform.State) error {
		d, err := adminClient(t).DescribeTopic(context.Background(), name)
		if err != nil {
			return fmt.Errorf("describe %q on the cluster: %w", name, err)
		}
		got := d.Topic
		if got.Partitions != partitions || ms(got.Config.Retention) != retentionMs || got.Config.CleanupPolicy != policy {
			return fmt.Errorf("cluster has topic %q with partitions=%d retention_ms=%d cleanup=%v, want %d, %d, %v",
				name, got.Partitions, ms(got.Config.Retention), got.Config.CleanupPolicy, partitions, retentionMs, policy)
		}
		return nil
	}
}

func checkGone(t *testing.T, names ...string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		for _, n := range names {
			_, err := adminClient(t).DescribeTopic(context.Background(), n)
			if connect.CodeOf(err) != connect.CodeNotFound {
				return fmt.Errorf("topic %q should be gone from the cluster; describe returned %v", n, err)
			}
		}
		return nil
	}
}

// TestTopicLifecycle: create, no-op plan, import, growth in place, refusal
// to shrink, a cleanup policy change in place, drift repair, destroy.
func TestTopicLifecycle(t *testing.T) {
	const name = "tfacc-lifecycle"
	addr := "varve_topic.t"
	sameID := statecheck.CompareValue(compare.ValuesSame())
	compact := admin.CleanupCompact
	del := admin.CleanupDelete
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		CheckDestroy:             checkGone(t, name),
		Steps: []resource.TestStep{
			{ // create, with server defaults filled in
				Config: topicConfig(name, 3, `  retention_ms = 3600000
  cleanup_policy = "compact"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionCreate),
					plancheck.ExpectUnknownValue(addr, tfjsonpath.New("topic_id")),
					plancheck.ExpectUnknownValue(addr, tfjsonpath.New("max_record_bytes")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("id"), knownvalue.StringExact(name)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("partitions"), knownvalue.Int64Exact(3)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("retention_ms"), knownvalue.Int64Exact(3600000)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("retention_bytes"), knownvalue.Int64Exact(-1)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("max_record_bytes"), knownvalue.Int64Exact(1<<20)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("cleanup_policy"), knownvalue.StringExact("compact")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("topic_id"), knownvalue.StringRegexp(regexp.MustCompile(`^[0-9a-f]{32}$`))),
					sameID.AddStateValue(addr, tfjsonpath.New("topic_id")),
				},
				// The framework also plans again after apply and fails on
				// any diff: "plan shows no changes" is checked every step.
				Check: checkTopic(t, name, 3, 3600000, compact),
			},
			{ // import by name gives the same state
				ResourceName: addr, ImportState: true, ImportStateId: name, ImportStateVerify: true,
			},
			{ // dropping an optional setting keeps the cluster's value: no diff
				Config: topicConfig(name, 3, `  cleanup_policy = "compact"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
			},
			{ // growing partitions is an in-place update: same topic, and
				// retention_ms, no longer configured, keeps its value
				Config: topicConfig(name, 5, `  cleanup_policy = "compact"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(addr, tfjsonpath.New("partitions"), knownvalue.Int64Exact(5)),
				}},
				ConfigStateChecks: []statecheck.StateCheck{sameID.AddStateValue(addr, tfjsonpath.New("topic_id"))},
				Check:             checkTopic(t, name, 5, 3600000, compact),
			},
			{ // shrinking is refused at plan time, before anything changes
				Config:      topicConfig(name, 2, `  cleanup_policy = "compact"`),
				ExpectError: regexp.MustCompile(`Partitions cannot be removed`),
			},
			{ // the cleanup policy changes in place: same topic
				PreConfig: func() { // the refused shrink changed nothing
					if err := checkTopic(t, name, 5, 3600000, compact)(nil); err != nil {
						t.Fatalf("after the refused shrink: %v", err)
					}
				},
				Config: topicConfig(name, 5, `  cleanup_policy = "delete"
  retention_ms = -1`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				ConfigStateChecks: []statecheck.StateCheck{sameID.AddStateValue(addr, tfjsonpath.New("topic_id"))},
				Check:             checkTopic(t, name, 5, -1, del),
			},
			{ // deleted behind Terraform's back: the plan creates it again
				PreConfig: func() {
					if err := adminClient(t).DeleteTopic(context.Background(), name); err != nil {
						t.Fatalf("delete %q out of band: %v", name, err)
					}
				},
				Config: topicConfig(name, 5, `  cleanup_policy = "delete"
  retention_ms = -1`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionCreate),
				}},
				Check: checkTopic(t, name, 5, -1, del),
			},
		},
	})
}

// TestTopicImportExisting: a topic made outside Terraform cannot be created
// again; it is imported instead, after which the plan is empty.
func TestTopicImportExisting(t *testing.T) {
	const name = "tfacc-existing"
	if _, err := adminClient(t).CreateTopic(context.Background(), name, 4, &admin.TopicConfig{RetentionBytes: 1 << 30}); err != nil {
		t.Fatalf("create %q with the SDK: %v", name, err)
	}
	cfg := topicConfig(name, 4, `  retention_bytes = 1073741824`)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		CheckDestroy:             checkGone(t, name),
		Steps: []resource.TestStep{
			{Config: cfg, ExpectError: regexp.MustCompile(`(?s)already exists.*terraform import varve_topic\.NAME tfacc-existing`)},
			{ // importing a topic that does not exist is refused
				Config: cfg, ResourceName: "varve_topic.t", ImportState: true, ImportStateId: "tfacc-no-such-topic",
				ExpectError: regexp.MustCompile(`Cannot import non-existent remote object`),
			},
			{Config: cfg, ResourceName: "varve_topic.t", ImportState: true, ImportStateId: name, ImportStatePersist: true},
			{Config: cfg, PlanOnly: true}, // fails on any diff
			{
				Config: cfg,
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("varve_topic.t", tfjsonpath.New("partitions"), knownvalue.Int64Exact(4)),
					statecheck.ExpectKnownValue("varve_topic.t", tfjsonpath.New("retention_bytes"), knownvalue.Int64Exact(1<<30)),
				},
			},
		},
	})
}

// TestTopicDataSources reads topics and the cluster.
func TestTopicDataSources(t *testing.T) {
	cfg := providerBlock() + `
resource "varve_topic" "a" {
  name       = "tfacc-ds-a"
  partitions = 2
}
resource "varve_topic" "b" {
  name             = "tfacc-ds-b"
  partitions       = 1
  max_record_bytes = 4096
  schema           = jsonencode([{ name = "n", type = "double" }])
}
data "varve_topic" "b" {
  name = varve_topic.b.name
}
data "varve_topics" "all" {
  depends_on = [varve_topic.a, varve_topic.b]
}
data "varve_cluster" "this" {
  depends_on = [varve_topic.a, varve_topic.b]
}
output "b_max_record_bytes" {
  value = data.varve_topic.b.max_record_bytes
}
output "names" {
  value = [for n in data.varve_topics.all.names : n if startswith(n, "tfacc-ds-")]
}
output "cluster_has_a" {
  value = contains(data.varve_cluster.this.topic_names, "tfacc-ds-a")
}
output "endpoint" {
  value = data.varve_cluster.this.endpoint
}
`
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		CheckDestroy:             checkGone(t, "tfacc-ds-a", "tfacc-ds-b"),
		Steps: []resource.TestStep{{
			Config: cfg,
			ConfigStateChecks: []statecheck.StateCheck{
				statecheck.ExpectKnownOutputValue("b_max_record_bytes", knownvalue.Int64Exact(4096)),
				statecheck.ExpectKnownOutputValue("names", knownvalue.ListExact([]knownvalue.Check{
					knownvalue.StringExact("tfacc-ds-a"), knownvalue.StringExact("tfacc-ds-b")})),
				statecheck.ExpectKnownOutputValue("cluster_has_a", knownvalue.Bool(true)),
				statecheck.ExpectKnownOutputValue("endpoint", knownvalue.StringExact(devAddr)),
				statecheck.ExpectKnownValue("data.varve_topic.b", tfjsonpath.New("partitions"), knownvalue.Int64Exact(1)),
				// the data source shows the cluster's canonical form
				statecheck.ExpectKnownValue("data.varve_topic.b", tfjsonpath.New("schema"), knownvalue.StringExact(`[{"name":"n","type":"float64"}]`)),
				statecheck.ExpectKnownValue("data.varve_topic.b", tfjsonpath.New("min_compaction_lag_ms"), knownvalue.Int64Exact(0)),
			},
		}},
	})
}

// TestTopicPlanTimeValidation: bad values are refused by plan, and nothing
// reaches the cluster.
func TestTopicPlanTimeValidation(t *testing.T) {
	cases := []struct {
		name, config, want string
	}{
		{"space in name", topicConfig("bad name", 1, ""), `may contain only ASCII letters`},
		{"dot name", topicConfig(".", 1, ""), `value must be none of`},
		{"zero partitions", topicConfig("tfacc-bad", 0, ""), `partitions.*between 1 and 10000`},
		{"too many partitions", topicConfig("tfacc-bad", 10001, ""), `between 1 and 10000`},
		{"retention zero", topicConfig("tfacc-bad", 1, "  retention_ms = 0"), `retention_ms = 0 is not allowed: give -1`},
		{"retention below -1", topicConfig("tfacc-bad", 1, "  retention_bytes = -2"), `retention_bytes`},
		{"unknown cleanup policy", topicConfig("tfacc-bad", 1, `  cleanup_policy = "shred"`), `value must be one of`},
		{"record too large", topicConfig("tfacc-bad", 1, "  max_record_bytes = 67108865"), `between 1 and 67108864`},
		{"schema not a list", topicConfig("tfacc-bad", 1, `  schema = "{not json"`), `schema must be a JSON list of fields`},
		{"zero delete retention", topicConfig("tfacc-bad", 1, "  delete_retention_ms = 0"), `delete_retention_ms`},
		{"negative compaction lag", topicConfig("tfacc-bad", 1, "  min_compaction_lag_ms = -1"), `min_compaction_lag_ms`},
	}
	steps := make([]resource.TestStep, len(cases))
	for i, c := range cases {
		steps[i] = resource.TestStep{Config: c.config, PlanOnly: true, ExpectError: regexp.MustCompile("(?s)" + c.want)}
	}
	resource.Test(t, resource.TestCase{ProtoV6ProviderFactories: protoV6Providers, Steps: steps})
	ts, err := adminClient(t).ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range ts {
		if tp.Name == "tfacc-bad" || tp.Name == "bad name" {
			t.Errorf("topic %q reached the cluster despite a plan-time error", tp.Name)
		}
	}
}

// TestUnreachableCluster: a wrong endpoint is reported clearly at plan time.
func TestUnreachableCluster(t *testing.T) {
	port, err := freePortTriple() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		Steps: []resource.TestStep{{
			Config: fmt.Sprintf(`
provider "varve" {
  endpoint = "127.0.0.1:%d"
}
data "varve_cluster" "this" {}
`, port),
			PlanOnly:    true,
			ExpectError: regexp.MustCompile(`(?s)Cannot reach the cluster.*list topics on http://127.0.0.1:` + fmt.Sprint(port)),
		}},
	})
}
