package provider_test

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/compare"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// produceRecords stores n keyed records in topic through the SDK and
// returns their values.
func produceRecords(t *testing.T, topic string, n int) map[string]bool {
	t.Helper()
	recs := make([]sdk.Record, n)
	want := make(map[string]bool, n)
	for i := range recs {
		v := fmt.Sprintf("%s-value-%d", topic, i)
		recs[i] = sdk.Record{Key: fmt.Appendf(nil, "key-%d", i), Value: []byte(v)}
		want[v] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client(t).Produce(ctx, topic, recs); err != nil {
		t.Fatalf("produce %d records to %q with the SDK: %v", n, topic, err)
	}
	return want
}

// readAll fetches every record of every partition of topic through the
// SDK and returns their values.
func readAll(topic string, c *sdk.Client) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := admin.NewFromClient(c).DescribeTopic(ctx, topic)
	if err != nil {
		return nil, err
	}
	got := map[string]bool{}
	for _, p := range d.Partitions {
		for off := p.LogStartOffset; off < p.NextOffset; {
			res, err := c.Fetch(ctx, topic, p.Partition, off, 0, 0)
			if err != nil {
				return nil, err
			}
			if len(res.Records) == 0 {
				return nil, fmt.Errorf("fetch %s/%d at %d returned nothing before the high watermark %d", topic, p.Partition, off, p.NextOffset)
			}
			for _, r := range res.Records {
				got[string(r.Value)] = true
			}
			off = res.NextOffset
		}
	}
	return got, nil
}

// checkRecords asserts, through the SDK, that topic holds exactly want.
func checkRecords(t *testing.T, topic string, want map[string]bool) error {
	got, err := readAll(topic, client(t))
	if err != nil {
		return fmt.Errorf("read %q back with the SDK: %w", topic, err)
	}
	missing := 0
	for v := range want {
		if !got[v] {
			missing++
		}
	}
	if missing > 0 || len(got) != len(want) {
		return fmt.Errorf("topic %q holds %d records, %d of the %d produced before the apply are missing", topic, len(got), missing, len(want))
	}
	return nil
}

func describe(t *testing.T, name string) (admin.Topic, error) {
	d, err := adminClient(t).DescribeTopic(context.Background(), name)
	if err != nil {
		return admin.Topic{}, fmt.Errorf("describe %q on the cluster: %w", name, err)
	}
	return d.Topic, nil
}

// TestTopicRetentionChangeKeepsRecords: changing retention_ms is applied to
// the existing topic; every record produced before the apply is still there
// afterwards, and the topic keeps its id.
func TestTopicRetentionChangeKeepsRecords(t *testing.T) {
	const name = "tfacc-keep-records"
	var want map[string]bool
	var id string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		CheckDestroy:             checkGone(t, name),
		Steps: []resource.TestStep{
			{Config: topicConfig(name, 3, "  retention_ms = 3600000")},
			{
				PreConfig: func() {
					want = produceRecords(t, name, 300)
					if err := checkRecords(t, name, want); err != nil {
						t.Fatalf("before the apply: %v", err)
					}
					tp, err := describe(t, name)
					if err != nil {
						t.Fatal(err)
					}
					id = tp.ID
				},
				Config: topicConfig(name, 3, "  retention_ms = 7200000"),
				Check: func(*terraform.State) error {
					tp, err := describe(t, name)
					if err != nil {
						return err
					}
					kept := checkRecords(t, name, want)
					if tp.ID != id || ms(tp.Config.Retention) != 7200000 {
						return fmt.Errorf("after the apply the topic has id %s and retention_ms %d; want id %s (the same topic) and 7200000 (records: %v)",
							tp.ID, ms(tp.Config.Retention), id, kept)
					}
					return kept
				},
			},
		},
	})
}

// TestTopicUpdatesInPlace: retention, size limits, the schema and partition
// growth are updated in place, and so is drift made with `varve topic
// alter`; only a new name replaces the topic.
func TestTopicUpdatesInPlace(t *testing.T) {
	const name, renamed = "tfacc-inplace", "tfacc-inplace-renamed"
	addr := "varve_topic.t"
	var want map[string]bool
	var id string
	schemaHCL := `  schema           = jsonencode([{ name = "user", type = "string" }, { name = "amount", type = "float64", nullable = false }])`
	canonical := `[{"name":"user","type":"utf8"},{"name":"amount","type":"float64","nullable":false}]`
	updated := topicConfig(name, 4, `  retention_ms     = 7200000
  retention_bytes  = 1073741824
  max_record_bytes = 2097152
`+schemaHCL)
	sameTopic := func(check func(admin.Topic) error) resource.TestCheckFunc {
		return func(*terraform.State) error {
			tp, err := describe(t, name)
			if err != nil {
				return err
			}
			if tp.ID != id {
				return fmt.Errorf("topic %q has id %s, want %s: it was replaced", name, tp.ID, id)
			}
			if err := check(tp); err != nil {
				return err
			}
			return checkRecords(t, name, want)
		}
	}
	settingsApplied := func(tp admin.Topic) error {
		c := tp.Config
		if tp.Partitions != 4 || ms(c.Retention) != 7200000 || c.RetentionBytes != 1<<30 ||
			c.MaxRecordBytes != 2<<20 || c.Schema == nil || c.Schema.Fields != canonical {
			return fmt.Errorf("cluster has %v, want 4 partitions, retention 7200000 ms / 1 GiB, max_record_bytes 2 MiB, schema %s", tp, canonical)
		}
		return nil
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		CheckDestroy:             checkGone(t, name, renamed),
		Steps: []resource.TestStep{
			{Config: topicConfig(name, 2, "  retention_ms = 3600000")},
			{ // every setting the API can change, in one in-place update
				PreConfig: func() {
					want = produceRecords(t, name, 100)
					tp, err := describe(t, name)
					if err != nil {
						t.Fatal(err)
					}
					id = tp.ID
				},
				Config: updated,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(addr, tfjsonpath.New("partitions"), knownvalue.Int64Exact(4)),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					// The configuration's text stays in the state although
					// the cluster keeps the schema in its canonical form.
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("schema"), knownvalue.StringExact(
						`[{"name":"user","type":"string"},{"name":"amount","nullable":false,"type":"float64"}]`)),
				},
				Check: sameTopic(settingsApplied),
			},
			{ // drift made with the CLI is put back in place
				PreConfig: func() {
					out, err := exec.Command(varveBin, "topic", "alter", name, "--addr", devAddr,
						"--retention-ms", "86400000", "--max-record-bytes", "4096",
						"--schema", `[{"name":"other","type":"int64"}]`).CombinedOutput()
					if err != nil {
						t.Fatalf("varve topic alter: %v\n%s", err, out)
					}
					tp, err := describe(t, name)
					if err != nil || ms(tp.Config.Retention) != 86400000 || tp.ID != id {
						t.Fatalf("varve topic alter did not change the topic in place: %v %v", tp, err)
					}
				},
				Config: updated,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
				}},
				Check: sameTopic(settingsApplied),
			},
			{ // a schema removed from the configuration is removed in place
				Config: topicConfig(name, 4, `  retention_ms     = 7200000
  retention_bytes  = 1073741824
  max_record_bytes = 2097152`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
					plancheck.ExpectKnownValue(addr, tfjsonpath.New("schema"), knownvalue.Null()),
				}},
				Check: sameTopic(func(tp admin.Topic) error {
					if s := tp.Config.Schema; s != nil {
						return fmt.Errorf("the schema is still on the cluster: %v", s)
					}
					return nil
				}),
			},
			{ // a new name is a new topic: the plan replaces it
				Config: topicConfig(renamed, 4, `  retention_ms     = 7200000
  retention_bytes  = 1073741824
  max_record_bytes = 2097152`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionDestroyBeforeCreate),
				}},
				Check: resource.ComposeTestCheckFunc(checkGone(t, name), func(*terraform.State) error {
					tp, err := describe(t, renamed)
					if err != nil {
						return err
					}
					if tp.ID == id || tp.Partitions != 4 || ms(tp.Config.Retention) != 7200000 {
						return fmt.Errorf("renamed topic on the cluster: %v", tp)
					}
					return nil
				}),
			},
		},
	})
}

// TestTopicCompactionSettings: delete_retention_ms and min_compaction_lag_ms
// are set at creation and read back, and they and the cleanup policy change
// in place: the topic keeps its id and every record produced before.
func TestTopicCompactionSettings(t *testing.T) {
	const name = "tfacc-compaction"
	addr := "varve_topic.t"
	sameID := statecheck.CompareValue(compare.ValuesSame())
	var want map[string]bool
	cluster := func(policy admin.CleanupPolicy, deleteRetention, lag int64) func(*terraform.State) error {
		return func(*terraform.State) error {
			tp, err := describe(t, name)
			if err != nil {
				return err
			}
			if c := tp.Config; c.CleanupPolicy != policy || ms(c.DeleteRetention) != deleteRetention || ms(c.MinCompactionLag) != lag {
				return fmt.Errorf("cluster has %+v, want %s, delete_retention_ms %d, min_compaction_lag_ms %d", c, policy, deleteRetention, lag)
			}
			if want != nil {
				return checkRecords(t, name, want)
			}
			return nil
		}
	}
	inPlace := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate)}}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		CheckDestroy:             checkGone(t, name),
		Steps: []resource.TestStep{
			{
				Config: topicConfig(name, 1, `  cleanup_policy        = "compact"
  delete_retention_ms   = 3600000
  min_compaction_lag_ms = 60000`),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("delete_retention_ms"), knownvalue.Int64Exact(3600000)),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("min_compaction_lag_ms"), knownvalue.Int64Exact(60000)),
					sameID.AddStateValue(addr, tfjsonpath.New("topic_id")),
				},
				Check: cluster(admin.CleanupCompact, 3600000, 60000),
			},
			{ // left out: the cluster's values stay, no diff
				Config: topicConfig(name, 1, `  cleanup_policy = "compact"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectEmptyPlan(),
				}},
			},
			{
				PreConfig: func() { want = produceRecords(t, name, 200) },
				Config: topicConfig(name, 1, `  cleanup_policy        = "compact"
  delete_retention_ms   = 7200000
  min_compaction_lag_ms = 0`),
				ConfigPlanChecks:  inPlace,
				ConfigStateChecks: []statecheck.StateCheck{sameID.AddStateValue(addr, tfjsonpath.New("topic_id"))},
				Check:             cluster(admin.CleanupCompact, 7200000, 0),
			},
			{ // compact -> delete in place, records kept
				Config:            topicConfig(name, 1, `  cleanup_policy = "delete"`),
				ConfigPlanChecks:  inPlace,
				ConfigStateChecks: []statecheck.StateCheck{sameID.AddStateValue(addr, tfjsonpath.New("topic_id"))},
				Check:             cluster(admin.CleanupDelete, 7200000, 0),
			},
		},
	})
}

// TestTopicBecomesCompacted: a delete topic switched to compact in place
// gets the cluster's default tombstone retention (unknown in the plan, not
// an inconsistent result) and keeps its records.
func TestTopicBecomesCompacted(t *testing.T) {
	const name = "tfacc-becomes-compacted"
	addr := "varve_topic.t"
	sameID := statecheck.CompareValue(compare.ValuesSame())
	var want map[string]bool
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: protoV6Providers,
		CheckDestroy:             checkGone(t, name),
		Steps: []resource.TestStep{
			{
				Config:            topicConfig(name, 2, ""),
				ConfigStateChecks: []statecheck.StateCheck{sameID.AddStateValue(addr, tfjsonpath.New("topic_id"))},
			},
			{
				PreConfig: func() { want = produceRecords(t, name, 150) },
				Config:    topicConfig(name, 2, `  cleanup_policy = "compact"`),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(addr, plancheck.ResourceActionUpdate),
					plancheck.ExpectUnknownValue(addr, tfjsonpath.New("delete_retention_ms")),
				}},
				ConfigStateChecks: []statecheck.StateCheck{
					sameID.AddStateValue(addr, tfjsonpath.New("topic_id")),
					statecheck.ExpectKnownValue(addr, tfjsonpath.New("delete_retention_ms"), knownvalue.Int64Exact(86400000)),
				},
				Check: func(*terraform.State) error { return checkRecords(t, name, want) },
			},
		},
	})
}
