package provider

import (
	"context"
	"fmt"
	"regexp"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	varvev1 "github.com/varve-io/varve/gen/varve/v1"
)

// Limits the cluster enforces (metadata package), checked at plan time so a
// bad value never reaches apply.
const (
	maxPartitions     = 10000
	maxMaxRecordBytes = 64 << 20
	maxTopicNameLen   = 249
)

var topicNameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]+$`)

// Cleanup policies as Terraform spells them.
const (
	cleanupDelete  = "delete"
	cleanupCompact = "compact"
)

type topicResource struct {
	data *clientData
}

var (
	_ resource.Resource                = (*topicResource)(nil)
	_ resource.ResourceWithConfigure   = (*topicResource)(nil)
	_ resource.ResourceWithImportState = (*topicResource)(nil)
)

func newTopicResource() resource.Resource { return &topicResource{} }

// topicModel is varve_topic's state.
type topicModel struct {
	ID             types.String `tfsdk:"id"`
	Name           types.String `tfsdk:"name"`
	Partitions     types.Int64  `tfsdk:"partitions"`
	RetentionMs    types.Int64  `tfsdk:"retention_ms"`
	RetentionBytes types.Int64  `tfsdk:"retention_bytes"`
	CleanupPolicy  types.String `tfsdk:"cleanup_policy"`
	MaxRecordBytes types.Int64  `tfsdk:"max_record_bytes"`
	TopicID        types.String `tfsdk:"topic_id"`
	CreatedMs      types.Int64  `tfsdk:"created_ms"`
}

func (r *topicResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_topic"
}

const replaceNote = " Varve has no UpdateTopic API yet: changing it replaces the topic, deleting its records."

func (r *topicResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	// Optional settings the cluster fills with its defaults when omitted:
	// the state keeps what the cluster chose, and a change replaces.
	serverDefaultInt := func(desc string, v ...validator.Int64) schema.Int64Attribute {
		return schema.Int64Attribute{
			Optional: true, Computed: true, Description: desc + replaceNote, Validators: v,
			PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown(), int64planmodifier.RequiresReplace()},
		}
	}
	minusOneOrPositive := int64validator.Any(int64validator.OneOf(-1), int64validator.AtLeast(1))
	resp.Schema = schema.Schema{
		Description: "A Varve topic. Import with the topic's name: terraform import varve_topic.x NAME.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed: true, Description: "The topic's name.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:    true,
				Description: "Topic name: 1 to 249 of [a-zA-Z0-9._-], not \".\" or \"..\". Changing it replaces the topic.",
				Validators: []validator.String{
					stringvalidator.LengthBetween(1, maxTopicNameLen),
					stringvalidator.RegexMatches(topicNameRE, "may contain only ASCII letters, digits, '.', '_' and '-'"),
					stringvalidator.NoneOf(".", ".."),
				},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"partitions": schema.Int64Attribute{
				Required: true,
				Description: "Number of partitions, 1 to 10000. Partitions can only grow: a smaller number is refused " +
					"at plan time; a larger one replaces the topic (Varve has no UpdateTopic API yet).",
				Validators:    []validator.Int64{int64validator.Between(1, maxPartitions)},
				PlanModifiers: []planmodifier.Int64{partitionsGrowOnly{}},
			},
			"retention_ms": serverDefaultInt("How long records are kept, in milliseconds; -1 keeps them forever. "+
				"Defaults to the cluster's default (7 days).", minusOneOrPositive),
			"retention_bytes": serverDefaultInt("Bytes kept per partition; -1 (the default) keeps any number.",
				minusOneOrPositive),
			"max_record_bytes": serverDefaultInt("Largest record accepted, in bytes (1 to 67108864). "+
				"Defaults to the cluster's default (1 MiB).", int64validator.Between(1, maxMaxRecordBytes)),
			"cleanup_policy": schema.StringAttribute{
				Optional: true, Computed: true,
				Description: "\"delete\" (the default) or \"compact\"." + replaceNote,
				Validators:  []validator.String{stringvalidator.OneOf(cleanupDelete, cleanupCompact)},
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown(),
					stringplanmodifier.RequiresReplace()},
			},
			"topic_id": schema.StringAttribute{
				Computed:      true,
				Description:   "Random id the cluster fixed at creation: a deleted and re-created topic has a new one.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"created_ms": schema.Int64Attribute{
				Computed:      true,
				Description:   "Creation time, milliseconds since the Unix epoch.",
				PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
			},
		},
	}
}

// partitionsGrowOnly refuses fewer partitions at plan time and replaces the
// topic for more, until the API can add partitions in place.
type partitionsGrowOnly struct{}

func (partitionsGrowOnly) Description(context.Context) string {
	return "Partitions cannot shrink; growing them replaces the topic."
}

func (m partitionsGrowOnly) MarkdownDescription(ctx context.Context) string {
	return m.Description(ctx)
}

func (partitionsGrowOnly) PlanModifyInt64(_ context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if req.StateValue.IsNull() || req.PlanValue.IsUnknown() || req.PlanValue.IsNull() {
		return
	}
	before, after := req.StateValue.ValueInt64(), req.PlanValue.ValueInt64()
	switch {
	case after < before:
		resp.Diagnostics.AddAttributeError(req.Path, "Partitions cannot be removed",
			fmt.Sprintf("The topic has %d partitions and the configuration asks for %d. Varve, like Kafka, "+
				"cannot remove partitions: records would be lost and keys would move. Keep %d or more, "+
				"or delete and re-create the topic explicitly.", before, after, before))
	case after > before:
		resp.RequiresReplace = true
		resp.Diagnostics.AddAttributeWarning(req.Path, "Growing partitions replaces the topic",
			fmt.Sprintf("Going from %d to %d partitions deletes the topic and its records and creates it again: "+
				"Varve has no API to add partitions in place yet.", before, after))
	}
}

func (r *topicResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	d, ok := req.ProviderData.(*clientData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
		return
	}
	r.data = d
}

func (r *topicResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan topicModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	cfg := &varvev1.TopicConfig{
		RetentionMs:    knownInt(plan.RetentionMs),
		RetentionBytes: knownInt(plan.RetentionBytes),
		MaxRecordBytes: int32(knownInt(plan.MaxRecordBytes)),
	}
	switch plan.CleanupPolicy.ValueString() {
	case cleanupCompact:
		cfg.CleanupPolicy = varvev1.CleanupPolicy_CLEANUP_POLICY_COMPACT
	case cleanupDelete:
		cfg.CleanupPolicy = varvev1.CleanupPolicy_CLEANUP_POLICY_DELETE
	}
	name := plan.Name.ValueString()
	t, err := r.data.client.CreateTopic(ctx, name, int32(plan.Partitions.ValueInt64()), cfg)
	if err != nil {
		detail := fmt.Sprintf("create topic %q on %s: %v", name, r.data.endpoint, err)
		if connect.CodeOf(err) == connect.CodeAlreadyExists {
			detail += fmt.Sprintf("\n\nThe topic already exists. Bring it under Terraform with: terraform import <address> %s", name)
		}
		resp.Diagnostics.AddError("Cannot create topic", detail)
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, topicState(t))...)
}

func (r *topicResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var st topicModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := st.Name.ValueString()
	if name == "" {
		name = st.ID.ValueString()
	}
	d, err := r.data.client.DescribeTopic(ctx, name)
	if connect.CodeOf(err) == connect.CodeNotFound {
		// Deleted outside Terraform: plan will create it again.
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError("Cannot read topic", fmt.Sprintf("describe topic %q on %s: %v", name, r.data.endpoint, err))
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, topicState(d.GetTopic()))...)
}

// Update is never needed: every attribute a user sets replaces the topic.
func (r *topicResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan topicModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.AddError("Topic cannot be updated in place",
		fmt.Sprintf("topic %q: Varve has no UpdateTopic API; this change should have been planned as a replacement. "+
			"Please report this as a provider bug.", plan.Name.ValueString()))
}

func (r *topicResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var st topicModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := st.Name.ValueString()
	err := r.data.client.DeleteTopic(ctx, name)
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		resp.Diagnostics.AddError("Cannot delete topic", fmt.Sprintf("delete topic %q on %s: %v", name, r.data.endpoint, err))
	}
}

// ImportState takes the topic's name; Read fills the rest.
func (r *topicResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if req.ID == "" {
		resp.Diagnostics.AddError("Missing topic name", "import a topic by its name: terraform import varve_topic.x NAME")
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), req.ID)...)
}

func knownInt(v types.Int64) int64 {
	if v.IsNull() || v.IsUnknown() {
		return 0 // the cluster default
	}
	return v.ValueInt64()
}

func cleanupName(p varvev1.CleanupPolicy) string {
	if p == varvev1.CleanupPolicy_CLEANUP_POLICY_COMPACT {
		return cleanupCompact
	}
	return cleanupDelete
}

func topicState(t *varvev1.Topic) topicModel {
	c := t.GetConfig()
	return topicModel{
		ID:             types.StringValue(t.GetName()),
		Name:           types.StringValue(t.GetName()),
		Partitions:     types.Int64Value(int64(t.GetPartitions())),
		RetentionMs:    types.Int64Value(c.GetRetentionMs()),
		RetentionBytes: types.Int64Value(c.GetRetentionBytes()),
		CleanupPolicy:  types.StringValue(cleanupName(c.GetCleanupPolicy())),
		MaxRecordBytes: types.Int64Value(int64(c.GetMaxRecordBytes())),
		TopicID:        types.StringValue(t.GetId()),
		CreatedMs:      types.Int64Value(t.GetCreatedMs()),
	}
}
