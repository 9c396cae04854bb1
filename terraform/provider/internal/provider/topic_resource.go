package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/varve-io/varve/sdk/admin"
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

// topicModel is varve_topic's state: the data source's attributes and
// the resource id.
type topicModel struct {
	ID types.String `tfsdk:"id"`
	topicDataModel
}

func (r *topicResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_topic"
}

func (r *topicResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	// Optional settings the cluster fills with its defaults when omitted:
	// the state keeps what the cluster chose. UpdateTopic changes them in
	// place; the topic keeps its id and its records.
	inPlace := func(desc string, v ...validator.Int64) schema.Int64Attribute {
		return schema.Int64Attribute{
			Optional: true, Computed: true, Description: desc + " Changed in place; the topic keeps its records.", Validators: v,
			PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
		}
	}
	resp.Schema = schema.Schema{
		Description: "A Varve topic. Settings change in place (the topic keeps its id and records), except the name, " +
			"which replaces it. " +
			"Import with the topic's name: terraform import varve_topic.x NAME.",
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed: true, Description: "The topic's name.",
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:    true,
				Description: "Topic name: 1 to 249 of [a-zA-Z0-9._-], not \".\" or \"..\". Changing it replaces the topic (a new, empty topic).",
				Validators: []validator.String{
					stringvalidator.LengthBetween(1, maxTopicNameLen),
					stringvalidator.RegexMatches(topicNameRE, "may contain only ASCII letters, digits, '.', '_' and '-'"),
					stringvalidator.NoneOf(".", ".."),
				},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"partitions": schema.Int64Attribute{
				Required: true,
				Description: "Number of partitions, 1 to 10000. Partitions can only grow, in place (as in Kafka, keyed " +
					"records produced afterwards may map to other partitions); a smaller number is refused at plan time.",
				Validators:    []validator.Int64{int64validator.Between(1, maxPartitions)},
				PlanModifiers: []planmodifier.Int64{partitionsGrowOnly{}},
			},
			"retention_ms": inPlace("How long records are kept, in milliseconds; -1 keeps them forever. "+
				"Defaults to the cluster's default (7 days).", minusOneOrPositive{"keep records forever", "the cluster default (7 days)"}),
			"retention_bytes": inPlace("Bytes kept per partition; -1 (the default) keeps any number.",
				minusOneOrPositive{"no size limit", "no size limit"}),
			"max_record_bytes": inPlace("Largest record accepted, in bytes (1 to 67108864). "+
				"Defaults to the cluster's default (1 MiB).", int64validator.Between(1, maxMaxRecordBytes)),
			"schema": schema.StringAttribute{
				Optional: true,
				Description: "How record values are laid out, so scans return typed columns (docs/scan.md): a JSON list of " +
					"fields, such as jsonencode([{ name = \"user\", type = \"utf8\" }, { name = \"amount\", type = \"float64\", " +
					"nullable = false }]). Unset means opaque values. Set, changed or removed in place; it applies to every " +
					"record scanned afterwards, old or new.",
				Validators: []validator.String{schemaList{}},
			},
			"cleanup_policy": schema.StringAttribute{
				Optional: true, Computed: true,
				Description: "\"delete\" (the default) or \"compact\". Changed in place; the topic keeps its records, and " +
					"compaction and retention follow the new policy from their next pass.",
				Validators:    []validator.String{stringvalidator.OneOf(cleanupDelete, cleanupCompact)},
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"delete_retention_ms": schema.Int64Attribute{
				Optional: true, Computed: true,
				Description: "Compacted topics: how long a tombstone (a record with a null value) is kept after its " +
					"timestamp, in ms (at least 1). Defaults to one day on compacted topics. Changed in place; the topic keeps its records.",
				Validators:    []validator.Int64{int64validator.AtLeast(1)},
				PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown(), defaultFollowsPolicy{}},
			},
			"min_compaction_lag_ms": inPlace("Compacted topics: how old a record must be before compaction may remove "+
				"it, in ms. Defaults to 0 (no lag).", int64validator.AtLeast(0)),
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

// partitionsGrowOnly refuses fewer partitions at plan time, as Kafka does;
// more partitions are added in place.
type partitionsGrowOnly struct{}

func (partitionsGrowOnly) Description(context.Context) string {
	return "Partitions cannot shrink; growing them is an in-place update."
}

func (m partitionsGrowOnly) MarkdownDescription(ctx context.Context) string {
	return m.Description(ctx)
}

func (partitionsGrowOnly) PlanModifyInt64(_ context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if req.StateValue.IsNull() || req.PlanValue.IsUnknown() || req.PlanValue.IsNull() {
		return
	}
	before, after := req.StateValue.ValueInt64(), req.PlanValue.ValueInt64()
	if after < before {
		resp.Diagnostics.AddAttributeError(req.Path, "Partitions cannot be removed",
			fmt.Sprintf("The topic has %d partitions and the configuration asks for %d. Varve, like Kafka, "+
				"cannot remove partitions: records would be lost and keys would move. Keep %d or more, "+
				"or delete and re-create the topic explicitly.", before, after, before))
	}
}

// defaultFollowsPolicy leaves delete_retention_ms unknown in the plan when
// it is not configured and the cleanup policy changes: the cluster gives a
// topic that becomes compacted its default, which the state did not hold.
type defaultFollowsPolicy struct{}

func (defaultFollowsPolicy) Description(context.Context) string {
	return "Unknown until applied when the cleanup policy changes and it is not configured."
}

func (m defaultFollowsPolicy) MarkdownDescription(ctx context.Context) string {
	return m.Description(ctx)
}

func (defaultFollowsPolicy) PlanModifyInt64(ctx context.Context, req planmodifier.Int64Request, resp *planmodifier.Int64Response) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() || !req.ConfigValue.IsNull() {
		return
	}
	var planned, stated types.String
	resp.Diagnostics.Append(req.Plan.GetAttribute(ctx, path.Root("cleanup_policy"), &planned)...)
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("cleanup_policy"), &stated)...)
	if !planned.Equal(stated) {
		resp.PlanValue = types.Int64Unknown()
	}
}

// minusOneOrPositive accepts -1 or a positive value, with one error that
// says what to write instead (0 is the API's "cluster default", which
// would show a diff forever).
type minusOneOrPositive struct{ minusOne, omitted string }

func (v minusOneOrPositive) Description(context.Context) string {
	return fmt.Sprintf("-1 (%s) or a positive value", v.minusOne)
}

func (v minusOneOrPositive) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (v minusOneOrPositive) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if n := req.ConfigValue.ValueInt64(); n == -1 || n > 0 {
		return
	}
	resp.Diagnostics.AddAttributeError(req.Path, fmt.Sprintf("Invalid %s", req.Path),
		fmt.Sprintf("%s = %d is not allowed: give -1 (%s) or a positive value, or leave %s out for %s.",
			req.Path, req.ConfigValue.ValueInt64(), v.minusOne, req.Path, v.omitted))
}

// schemaList checks at plan time that a schema is a non-empty JSON list; the
// cluster checks the fields themselves when the topic is created or updated.
type schemaList struct{}

func (schemaList) Description(context.Context) string { return "a JSON list of fields" }

func (v schemaList) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (schemaList) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	var fields []json.RawMessage
	err := json.Unmarshal([]byte(req.ConfigValue.ValueString()), &fields)
	if err == nil && len(fields) == 0 {
		err = fmt.Errorf("the list is empty")
	}
	if err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid schema",
			fmt.Sprintf("schema must be a JSON list of fields, such as jsonencode([{ name = \"user\", type = \"utf8\" }]) "+
				"(see docs/scan.md); leave it out for opaque values: %v", err))
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
	cfg := &admin.TopicConfig{
		Retention:        msDuration(knownInt(plan.RetentionMs)),
		RetentionBytes:   knownInt(plan.RetentionBytes),
		MaxRecordBytes:   int32(knownInt(plan.MaxRecordBytes)),
		DeleteRetention:  msDuration(knownInt(plan.DeleteRetentionMs)),
		MinCompactionLag: msDuration(knownInt(plan.MinCompactionLagMs)),
		Schema:           schemaOf(plan.Schema),
	}
	switch plan.CleanupPolicy.ValueString() {
	case cleanupCompact:
		cfg.CleanupPolicy = admin.CleanupCompact
	case cleanupDelete:
		cfg.CleanupPolicy = admin.CleanupDelete
	}
	name := plan.Name.ValueString()
	t, err := r.data.client.CreateTopic(ctx, name, int32(plan.Partitions.ValueInt64()), cfg)
	if err != nil {
		detail := fmt.Sprintf("create topic %q on %s: %v", name, r.data.endpoint, err)
		if connect.CodeOf(err) == connect.CodeAlreadyExists {
			// Terraform does not tell providers a resource's address; it
			// prints it with this error ("with varve_topic.NAME").
			detail += fmt.Sprintf("\n\nThe topic already exists on the cluster. To manage it with this resource, import it "+
				"instead of creating it: for the resource \"varve_topic\" \"NAME\" named above after \"with\", run\n"+
				"  terraform import varve_topic.NAME %s", name)
		}
		resp.Diagnostics.AddError("Cannot create topic", detail)
		return
	}
	st := topicState(t)
	st.Schema = plan.Schema // the configuration's text; the cluster keeps a canonical form
	resp.Diagnostics.Append(resp.State.Set(ctx, st)...)
	resp.Diagnostics.Append(setSchemaSeen(ctx, resp.Private, t)...)
}

// privateSchemaKey holds, in the resource's private state, the canonical
// schema the cluster answered when the provider last wrote or read it. The
// state keeps the configuration's text as long as the cluster still holds
// that canonical form, so a schema written differently (jsonencode orders
// keys, "string" is "utf8") shows no diff; a schema changed behind
// Terraform's back does.
const privateSchemaKey = "schema_seen"

type privateData interface {
	GetKey(ctx context.Context, key string) ([]byte, diag.Diagnostics)
	SetKey(ctx context.Context, key string, value []byte) diag.Diagnostics
}

func setSchemaSeen(ctx context.Context, p privateData, t admin.Topic) diag.Diagnostics {
	fields := ""
	if t.Config.Schema != nil {
		fields = t.Config.Schema.Fields
	}
	b, _ := json.Marshal(fields)
	return p.SetKey(ctx, privateSchemaKey, b)
}

func schemaSeen(ctx context.Context, p privateData) (string, diag.Diagnostics) {
	b, diags := p.GetKey(ctx, privateSchemaKey)
	var s string
	if len(b) > 0 {
		_ = json.Unmarshal(b, &s)
	}
	return s, diags
}

func schemaOf(v types.String) *admin.Schema {
	if v.IsNull() || v.IsUnknown() {
		return nil
	}
	return &admin.Schema{Format: admin.SchemaJSON, Fields: v.ValueString()}
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
	seen, diags := schemaSeen(ctx, req.Private)
	resp.Diagnostics.Append(diags...)
	now := topicState(d.Topic)
	if !now.Schema.IsNull() && !st.Schema.IsNull() && now.Schema.ValueString() == seen {
		now.Schema = st.Schema // unchanged since Terraform wrote it
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, now)...)
	resp.Diagnostics.Append(setSchemaSeen(ctx, resp.Private, d.Topic)...)
}

// Update applies the settings UpdateTopic can change in place; the topic
// keeps its id and its records. The others are planned as a replacement.
func (r *topicResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, st topicModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	name := plan.Name.ValueString()
	changed := func(a, b attr.Value) bool { return !a.IsUnknown() && !a.IsNull() && !a.Equal(b) }
	if changed(plan.Name, st.Name) {
		resp.Diagnostics.AddError("Topic cannot be updated in place",
			fmt.Sprintf("topic %q: the name cannot change in place; this change should have been planned as a replacement. "+
				"Please report this as a provider bug.", name))
		return
	}
	var u admin.TopicUpdate
	send := false
	if changed(plan.Partitions, st.Partitions) {
		n := int32(plan.Partitions.ValueInt64())
		u.Partitions, send = &n, true
	}
	if changed(plan.RetentionMs, st.RetentionMs) {
		n := msDuration(plan.RetentionMs.ValueInt64())
		u.Retention, send = &n, true
	}
	if changed(plan.RetentionBytes, st.RetentionBytes) {
		n := plan.RetentionBytes.ValueInt64()
		u.RetentionBytes, send = &n, true
	}
	if changed(plan.MaxRecordBytes, st.MaxRecordBytes) {
		n := int32(plan.MaxRecordBytes.ValueInt64())
		u.MaxRecordBytes, send = &n, true
	}
	if changed(plan.CleanupPolicy, st.CleanupPolicy) {
		p := admin.CleanupDelete
		if plan.CleanupPolicy.ValueString() == cleanupCompact {
			p = admin.CleanupCompact
		}
		u.CleanupPolicy, send = &p, true
	}
	if changed(plan.DeleteRetentionMs, st.DeleteRetentionMs) {
		n := msDuration(plan.DeleteRetentionMs.ValueInt64())
		u.DeleteRetention, send = &n, true
	}
	if changed(plan.MinCompactionLagMs, st.MinCompactionLagMs) {
		n := msDuration(plan.MinCompactionLagMs.ValueInt64())
		u.MinCompactionLag, send = &n, true
	}
	if !plan.Schema.Equal(st.Schema) {
		u.Schema, u.ClearSchema, send = schemaOf(plan.Schema), plan.Schema.IsNull(), true
	}
	if !send {
		resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
		return
	}
	t, err := r.data.client.UpdateTopic(ctx, name, u)
	if err != nil {
		resp.Diagnostics.AddError("Cannot update topic", fmt.Sprintf("update topic %q on %s: %v", name, r.data.endpoint, err))
		return
	}
	now := topicState(t)
	now.Schema = plan.Schema
	resp.Diagnostics.Append(resp.State.Set(ctx, now)...)
	resp.Diagnostics.Append(setSchemaSeen(ctx, resp.Private, t)...)
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

func cleanupName(p admin.CleanupPolicy) string {
	if p == admin.CleanupCompact {
		return cleanupCompact
	}
	return cleanupDelete
}

// msDuration is a setting in milliseconds as the admin client's duration:
// -1 is admin.Forever.
func msDuration(ms int64) time.Duration {
	if ms == -1 {
		return admin.Forever
	}
	return time.Duration(ms) * time.Millisecond
}

// unixMs is t in Unix milliseconds; the zero time is 0.
func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// durationMs is the inverse of msDuration.
func durationMs(d time.Duration) int64 {
	if d == admin.Forever {
		return -1
	}
	return d.Milliseconds()
}

// topicState is the state of t as the cluster describes it (the schema in
// its canonical form).
func topicState(t admin.Topic) topicModel {
	c := t.Config
	sch := types.StringNull()
	if c.Schema != nil {
		sch = types.StringValue(c.Schema.Fields)
	}
	return topicModel{ID: types.StringValue(t.Name), topicDataModel: topicDataModel{
		Name:               types.StringValue(t.Name),
		Partitions:         types.Int64Value(int64(t.Partitions)),
		RetentionMs:        types.Int64Value(durationMs(c.Retention)),
		RetentionBytes:     types.Int64Value(c.RetentionBytes),
		CleanupPolicy:      types.StringValue(cleanupName(c.CleanupPolicy)),
		MaxRecordBytes:     types.Int64Value(int64(c.MaxRecordBytes)),
		Schema:             sch,
		DeleteRetentionMs:  types.Int64Value(durationMs(c.DeleteRetention)),
		MinCompactionLagMs: types.Int64Value(durationMs(c.MinCompactionLag)),
		TopicID:            types.StringValue(t.ID),
		CreatedMs:          types.Int64Value(unixMs(t.Created)),
	}}
}
