package provider

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/varve-io/varve/sdk/admin"
)

func configureFrom(req resource.ConfigureRequest, resp *resource.ConfigureResponse) *clientData {
	if req.ProviderData == nil {
		return nil
	}
	d, ok := req.ProviderData.(*clientData)
	if !ok {
		resp.Diagnostics.AddError("Unexpected provider data", fmt.Sprintf("got %T", req.ProviderData))
	}
	return d
}

var replace = []planmodifier.String{stringplanmodifier.RequiresReplace()}

// varve_api_key: an API key of a principal. The token is known only when
// the key is created: it is a sensitive attribute kept in the state.
type apiKeyResource struct{ data *clientData }

type apiKeyModel struct {
	ID        types.String `tfsdk:"id"`
	Principal types.String `tfsdk:"principal"`
	Token     types.String `tfsdk:"token"`
}

var _ resource.ResourceWithConfigure = (*apiKeyResource)(nil)

func newAPIKeyResource() resource.Resource { return &apiKeyResource{} }

func (r *apiKeyResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_api_key"
}

func (r *apiKeyResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A Varve API key (auth token). Only a salted hash is kept by the cluster; the token is in this resource's state (sensitive). Any change replaces the key; destroying it revokes it on every node.",
		Attributes: map[string]schema.Attribute{
			"id":        schema.StringAttribute{Computed: true, Description: "The key id (public).", PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"principal": schema.StringAttribute{Required: true, Description: "The principal the key authenticates as.", PlanModifiers: replace, Validators: []validator.String{stringvalidator.LengthAtLeast(1)}},
			"token":     schema.StringAttribute{Computed: true, Sensitive: true, Description: "The secret token (vk_...).", PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
		},
	}
}

func (r *apiKeyResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = configureFrom(req, resp)
}

func (r *apiKeyResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan apiKeyModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	k, tok, err := r.data.client.CreateAPIKey(ctx, plan.Principal.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Cannot create API key", fmt.Sprintf("create an API key for %q on %s: %v", plan.Principal.ValueString(), r.data.endpoint, err))
		return
	}
	plan.ID, plan.Token = types.StringValue(k.ID), types.StringValue(tok)
	resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
}

func (r *apiKeyResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var st apiKeyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	keys, err := r.data.client.ListAPIKeys(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Cannot read API keys", fmt.Sprintf("list API keys on %s: %v", r.data.endpoint, err))
		return
	}
	for _, k := range keys {
		if k.ID == st.ID.ValueString() {
			st.Principal = types.StringValue(k.Principal)
			resp.Diagnostics.Append(resp.State.Set(ctx, st)...)
			return
		}
	}
	resp.State.RemoveResource(ctx) // revoked outside Terraform: a new key is planned
}

func (r *apiKeyResource) Update(_ context.Context, _ resource.UpdateRequest, resp *resource.UpdateResponse) {
	resp.Diagnostics.AddError("API keys cannot change", "every change of varve_api_key replaces the key")
}

func (r *apiKeyResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var st apiKeyModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if _, err := r.data.client.RevokeAPIKey(ctx, st.ID.ValueString()); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		resp.Diagnostics.AddError("Cannot revoke API key", fmt.Sprintf("revoke API key %s on %s: %v", st.ID.ValueString(), r.data.endpoint, err))
	}
}

// varve_acl: one ACL. Any change replaces it (an ACL's id is a digest of
// its fields).
type aclResource struct{ data *clientData }

type aclModel struct {
	ID        types.String `tfsdk:"id"`
	Principal types.String `tfsdk:"principal"`
	Resource  types.String `tfsdk:"resource"`
	Operation types.String `tfsdk:"operation"`
	Effect    types.String `tfsdk:"effect"`
}

var (
	_ resource.ResourceWithConfigure   = (*aclResource)(nil)
	_ resource.ResourceWithImportState = (*aclResource)(nil)
)

func newACLResource() resource.Resource { return &aclResource{} }

func (r *aclResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_acl"
}

func (r *aclResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "A Varve ACL: allows or denies a principal an operation on a resource (deny wins). See docs/security.md.",
		Attributes: map[string]schema.Attribute{
			"id":        schema.StringAttribute{Computed: true, Description: "The ACL id (a digest of its fields).", PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()}},
			"principal": schema.StringAttribute{Required: true, Description: "A principal, or * for every authenticated principal.", PlanModifiers: replace},
			"resource":  schema.StringAttribute{Required: true, Description: "cluster, topic:NAME, topic:PREFIX*, group:NAME or group:PREFIX*.", PlanModifiers: replace},
			"operation": schema.StringAttribute{Required: true, Description: "produce, consume, describe, alter, delete or admin.", PlanModifiers: replace,
				Validators: []validator.String{stringvalidator.OneOf("produce", "consume", "describe", "alter", "delete", "admin")}},
			"effect": schema.StringAttribute{Optional: true, Computed: true, Default: stringdefault.StaticString("allow"), Description: "allow (default) or deny.", PlanModifiers: replace,
				Validators: []validator.String{stringvalidator.OneOf("allow", "deny")}},
		},
	}
}

func (r *aclResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	r.data = configureFrom(req, resp)
}

func aclState(a admin.ACL) aclModel {
	return aclModel{ID: types.StringValue(a.ID), Principal: types.StringValue(a.Principal), Resource: types.StringValue(a.Resource),
		Operation: types.StringValue(a.Operation), Effect: types.StringValue(a.Effect)}
}

func (r *aclResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan aclModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	a, err := r.data.client.AddACL(ctx, admin.ACL{Principal: plan.Principal.ValueString(), Resource: plan.Resource.ValueString(),
		Operation: plan.Operation.ValueString(), Effect: plan.Effect.ValueString()})
	if err != nil {
		resp.Diagnostics.AddError("Cannot add ACL", fmt.Sprintf("add ACL on %s: %v", r.data.endpoint, err))
		return
	}
	resp.Diagnostics.Append(resp.State.Set(ctx, aclState(a))...)
}

func (r *aclResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var st aclModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	acls, err := r.data.client.ListACLs(ctx, "")
	if err != nil {
		resp.Diagnostics.AddError("Cannot read ACLs", fmt.Sprintf("list ACLs on %s: %v", r.data.endpoint, err))
		return
	}
	for _, a := range acls {
		if a.ID == st.ID.ValueString() {
			resp.Diagnostics.Append(resp.State.Set(ctx, aclState(a))...)
			return
		}
	}
	resp.State.RemoveResource(ctx) // removed outside Terraform
}

func (r *aclResource) Update(_ context.Context, _ resource.UpdateRequest, resp *resource.UpdateResponse) {
	resp.Diagnostics.AddError("ACLs cannot change", "every change of varve_acl replaces the ACL")
}

func (r *aclResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var st aclModel
	resp.Diagnostics.Append(req.State.Get(ctx, &st)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if _, err := r.data.client.RemoveACL(ctx, st.ID.ValueString()); err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		resp.Diagnostics.AddError("Cannot remove ACL", fmt.Sprintf("remove ACL %s on %s: %v", st.ID.ValueString(), r.data.endpoint, err))
	}
}

// ImportState takes the ACL's id (varve acl list shows it); Read fills the
// rest.
func (r *aclResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), req.ID)...)
}
