package provider

import (
	"context"
	"fmt"
	"sort"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/varve-io/varve/sdk/admin"
)

// dataSourceBase holds the client every data source gets from Configure.
type dataSourceBase struct {
	data *clientData
}

func (b *dataSourceBase) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if req.ProviderData == nil {
		return
	}
	d, ok := req.ProviderData.(*clientData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
		return
	}
	b.data = d
}

// topicAttributes are the computed attributes describing one topic, shared
// by varve_topic (data) and the elements of varve_topics.
func topicAttributes(nameRequired bool) map[string]schema.Attribute {
	return map[string]schema.Attribute{
		"name":             schema.StringAttribute{Required: nameRequired, Computed: !nameRequired, Description: "Topic name."},
		"partitions":       schema.Int64Attribute{Computed: true, Description: "Number of partitions."},
		"retention_ms":     schema.Int64Attribute{Computed: true, Description: "Retention in milliseconds; -1 is forever."},
		"retention_bytes":  schema.Int64Attribute{Computed: true, Description: "Bytes kept per partition; -1 is unlimited."},
		"cleanup_policy":   schema.StringAttribute{Computed: true, Description: "\"delete\" or \"compact\"."},
		"max_record_bytes": schema.Int64Attribute{Computed: true, Description: "Largest record accepted, in bytes."},
		"schema":           schema.StringAttribute{Computed: true, Description: "The value schema (canonical JSON field list); null when values are opaque."},
		"delete_retention_ms": schema.Int64Attribute{Computed: true,
			Description: "Compacted topics: how long tombstones are kept, in ms."},
		"min_compaction_lag_ms": schema.Int64Attribute{Computed: true,
			Description: "Compacted topics: how old a record must be before compaction may remove it, in ms."},
		"topic_id":   schema.StringAttribute{Computed: true, Description: "Random id fixed at creation."},
		"created_ms": schema.Int64Attribute{Computed: true, Description: "Creation time, ms since the Unix epoch."},
	}
}

var topicObjectType = map[string]attr.Type{
	"name": types.StringType, "partitions": types.Int64Type, "retention_ms": types.Int64Type,
	"retention_bytes": types.Int64Type, "cleanup_policy": types.StringType, "max_record_bytes": types.Int64Type,
	"schema": types.StringType, "delete_retention_ms": types.Int64Type, "min_compaction_lag_ms": types.Int64Type,
	"topic_id": types.StringType, "created_ms": types.Int64Type,
}

// topicDataModel is data.varve_topic (and one element of data.varve_topics).
type topicDataModel struct {
	Name               types.String `tfsdk:"name"`
	Partitions         types.Int64  `tfsdk:"partitions"`
	RetentionMs        types.Int64  `tfsdk:"retention_ms"`
	RetentionBytes     types.Int64  `tfsdk:"retention_bytes"`
	CleanupPolicy      types.String `tfsdk:"cleanup_policy"`
	MaxRecordBytes     types.Int64  `tfsdk:"max_record_bytes"`
	Schema             types.String `tfsdk:"schema"`
	DeleteRetentionMs  types.Int64  `tfsdk:"delete_retention_ms"`
	MinCompactionLagMs types.Int64  `tfsdk:"min_compaction_lag_ms"`
	TopicID            types.String `tfsdk:"topic_id"`
	CreatedMs          types.Int64  `tfsdk:"created_ms"`
}

func topicData(t admin.Topic) topicDataModel { return topicState(t).topicDataModel }

// ---- data "varve_topic"

type topicDataSource struct{ dataSourceBase }

func newTopicDataSource() datasource.DataSource { return &topicDataSource{} }

func (d *topicDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_topic"
}

func (d *topicDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{Description: "One existing topic, by name.", Attributes: topicAttributes(true)}
}

func (d *topicDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var cfg topicDataModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, err := d.data.client.DescribeTopic(ctx, cfg.Name.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot read topic", fmt.Sprintf("describe topic %q on %s: %v", cfg.Name.ValueString(), d.data.endpoint, err))
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, topicData(out.Topic))...)
}

// ---- data "varve_topics"

type topicsDataSource struct{ dataSourceBase }

func newTopicsDataSource() datasource.DataSource { return &topicsDataSource{} }

type topicsModel struct {
	Names  types.List `tfsdk:"names"`
	Topics types.List `tfsdk:"topics"`
}

func (d *topicsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_topics"
}

func (d *topicsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Every topic of the cluster, sorted by name.",
		Attributes: map[string]schema.Attribute{
			"names": schema.ListAttribute{Computed: true, ElementType: types.StringType, Description: "Topic names, sorted."},
			"topics": schema.ListNestedAttribute{
				Computed: true, Description: "Topics with their settings, sorted by name.",
				NestedObject: schema.NestedAttributeObject{Attributes: topicAttributes(false)},
			},
		},
	}
}

func (d *topicsDataSource) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	ts, err := listSorted(ctx, d.data)
	if err != nil {
		resp.Diagnostics.AddError("Cannot list topics", err.Error())
		return
	}
	names := make([]string, len(ts))
	objs := make([]topicDataModel, len(ts))
	for i, t := range ts {
		names[i], objs[i] = t.Name, topicData(t)
	}
	var m topicsModel
	var diags diag.Diagnostics
	m.Names, diags = types.ListValueFrom(ctx, types.StringType, names)
	resp.Diagnostics.Append(diags...)
	m.Topics, diags = types.ListValueFrom(ctx, types.ObjectType{AttrTypes: topicObjectType}, objs)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, m)...)
}

func listSorted(ctx context.Context, d *clientData) ([]admin.Topic, error) {
	ts, err := d.client.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list topics on %s: %w", d.endpoint, err)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	return ts, nil
}

// ---- data "varve_cluster"

type clusterDataSource struct{ dataSourceBase }

func newClusterDataSource() datasource.DataSource { return &clusterDataSource{} }

type clusterModel struct {
	Endpoint   types.String `tfsdk:"endpoint"`
	TopicNames types.List   `tfsdk:"topic_names"`
	TopicCount types.Int64  `tfsdk:"topic_count"`
}

func (d *clusterDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_cluster"
}

func (d *clusterDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "The cluster the provider talks to. Reading it checks that the cluster answers.",
		Attributes: map[string]schema.Attribute{
			"endpoint":    schema.StringAttribute{Computed: true, Description: "The API endpoint the provider uses."},
			"topic_names": schema.ListAttribute{Computed: true, ElementType: types.StringType, Description: "Topic names, sorted."},
			"topic_count": schema.Int64Attribute{Computed: true, Description: "Number of topics."},
		},
	}
}

func (d *clusterDataSource) Read(ctx context.Context, _ datasource.ReadRequest, resp *datasource.ReadResponse) {
	ts, err := listSorted(ctx, d.data)
	if err != nil {
		resp.Diagnostics.AddError("Cannot reach the cluster", err.Error())
		return
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	list, diags := types.ListValueFrom(ctx, types.StringType, names)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, clusterModel{
		Endpoint: types.StringValue(d.data.endpoint), TopicNames: list, TopicCount: types.Int64Value(int64(len(ts))),
	})...)
}
