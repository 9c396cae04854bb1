package provider

import (
	"context"
	"os"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	tfprovider "github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

// securityOptions are the SDK options of the token and TLS settings, each
// falling back to its environment variable.
func securityOptions(cfg providerModel) ([]sdk.Option, error) {
	or := func(v types.String, env string) string {
		if s := v.ValueString(); s != "" {
			return s
		}
		return os.Getenv(env)
	}
	var opts []sdk.Option
	ca, cert, key := or(cfg.CAFile, "VARVE_CA_FILE"), or(cfg.ClientCertFile, "VARVE_CERT_FILE"), or(cfg.ClientKeyFile, "VARVE_KEY_FILE")
	if ca != "" || cert != "" || key != "" {
		tc, err := sdk.LoadTLSConfig(ca, cert, key)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdk.WithTLS(tc))
	}
	if tok := or(cfg.Token, "VARVE_TOKEN"); tok != "" {
		opts = append(opts, sdk.WithToken(tok))
	}
	return opts, nil
}

// DefaultEndpoint is used when neither the endpoint attribute nor VARVE_ADDR
// is set; it is where `varve dev` listens.
const DefaultEndpoint = "http://127.0.0.1:7700"

// New returns a constructor of the provider at the given version.
func New(version string) func() tfprovider.Provider {
	return func() tfprovider.Provider { return &varveProvider{version: version} }
}

type varveProvider struct {
	version string
}

var _ tfprovider.Provider = (*varveProvider)(nil)

type providerModel struct {
	Endpoint       types.String `tfsdk:"endpoint"`
	Token          types.String `tfsdk:"token"`
	CAFile         types.String `tfsdk:"ca_file"`
	ClientCertFile types.String `tfsdk:"client_cert_file"`
	ClientKeyFile  types.String `tfsdk:"client_key_file"`
}

// clientData is what Configure hands to resources and data sources.
type clientData struct {
	client   *admin.Client
	endpoint string
}

func (p *varveProvider) Metadata(_ context.Context, _ tfprovider.MetadataRequest, resp *tfprovider.MetadataResponse) {
	resp.TypeName = "varve"
	resp.Version = p.version
}

func (p *varveProvider) Schema(_ context.Context, _ tfprovider.SchemaRequest, resp *tfprovider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Manages Varve topics through the Varve API (Connect RPC).",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				Optional: true,
				Description: "Base URL of any Varve node, such as http://127.0.0.1:7700 or the load balancer " +
					"of a cluster. Defaults to the VARVE_ADDR environment variable, then " + DefaultEndpoint + ".",
			},
			"token": schema.StringAttribute{
				Optional: true, Sensitive: true,
				Description: "API key sent as Authorization: Bearer (clusters with auth token). Defaults to VARVE_TOKEN.",
			},
			"ca_file": schema.StringAttribute{
				Optional:    true,
				Description: "PEM CAs that signed the cluster's certificate, for https:// endpoints. Defaults to VARVE_CA_FILE, then the system roots.",
			},
			"client_cert_file": schema.StringAttribute{
				Optional:    true,
				Description: "PEM client certificate for mutual TLS (auth mtls). Defaults to VARVE_CERT_FILE.",
			},
			"client_key_file": schema.StringAttribute{
				Optional:    true,
				Description: "PEM key of client_cert_file. Defaults to VARVE_KEY_FILE.",
			},
		},
	}
}

func (p *varveProvider) Configure(ctx context.Context, req tfprovider.ConfigureRequest, resp *tfprovider.ConfigureResponse) {
	var cfg providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &cfg)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if cfg.Endpoint.IsUnknown() {
		resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Unknown Varve endpoint",
			"The provider's endpoint depends on a value known only after apply. Apply the infrastructure "+
				"that creates the cluster first (terraform apply -target=...), or set endpoint to a known value.")
		return
	}
	endpoint := cfg.Endpoint.ValueString()
	if endpoint == "" {
		endpoint = os.Getenv("VARVE_ADDR")
	}
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "http://" + endpoint
	}
	endpoint = strings.TrimRight(endpoint, "/")
	opts, err := securityOptions(cfg)
	if err != nil {
		resp.Diagnostics.AddError("Bad Varve TLS settings", err.Error())
		return
	}
	data := &clientData{client: admin.New(endpoint, opts...), endpoint: endpoint}
	resp.ResourceData = data
	resp.DataSourceData = data
}

func (p *varveProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{newTopicResource, newAPIKeyResource, newACLResource}
}

func (p *varveProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{newTopicDataSource, newTopicsDataSource, newClusterDataSource}
}
