package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
)

// addSecurityFlags gives a client command its credentials and TLS flags:
// --token, --ca-file, --cert-file, --key-file (env VARVE_TOKEN,
// VARVE_CA_FILE, VARVE_CERT_FILE, VARVE_KEY_FILE). The files are checked
// before the command runs.
func addSecurityFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.String("token", "", "API key sent as Authorization: Bearer (env VARVE_TOKEN; prefer the variable: flags show in ps)")
	f.String("ca-file", os.Getenv("VARVE_CA_FILE"), "PEM CAs that signed the cluster's certificate, for https:// addresses (env VARVE_CA_FILE; default: the system roots)")
	f.String("cert-file", os.Getenv("VARVE_CERT_FILE"), "PEM client certificate for mutual TLS (env VARVE_CERT_FILE)")
	f.String("key-file", os.Getenv("VARVE_KEY_FILE"), "PEM key of --cert-file (env VARVE_KEY_FILE)")
	prev := cmd.PersistentPreRunE
	cmd.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		if err := unknownVarveEnv(os.Environ()); err != nil {
			return err
		}
		if _, err := clientTLS(c); err != nil {
			return err
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

func clientTLS(cmd *cobra.Command) ([]sdk.Option, error) {
	ca, _ := cmd.Flags().GetString("ca-file")
	cert, _ := cmd.Flags().GetString("cert-file")
	key, _ := cmd.Flags().GetString("key-file")
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	c, err := sdk.LoadTLSConfig(ca, cert, key)
	if err != nil {
		return nil, err
	}
	return []sdk.Option{sdk.WithTLS(c)}, nil
}

// securityOptions are the SDK options of --token and the TLS flags.
func securityOptions(cmd *cobra.Command) []sdk.Option {
	opts, _ := clientTLS(cmd) // checked before the command ran
	tok, _ := cmd.Flags().GetString("token")
	if tok == "" {
		tok = os.Getenv("VARVE_TOKEN")
	}
	if tok != "" {
		opts = append(opts, sdk.WithToken(tok))
	}
	return opts
}

// serveSecurity reads the bootstrap admin key from VARVE_BOOTSTRAP_TOKEN
// and the secrets given as variables instead of files (VARVE_TLS_CERT_PEM,
// VARVE_TLS_KEY_PEM, VARVE_TLS_CLIENT_CA_PEM, VARVE_TLS_CA_PEM,
// VARVE_CLUSTER_SECRET), and refuses an exposed node without authentication
// or TLS unless --insecure, which it warns about.
func serveSecurity(cfg *node.Config, log *slog.Logger) error {
	if v := os.Getenv("VARVE_BOOTSTRAP_TOKEN"); v != "" {
		cfg.Security.BootstrapToken = v
	}
	env := &cfg.Security.Env
	for name, field := range map[string]*string{
		node.EnvTLSCertPEM: &env.TLSCertPEM, node.EnvTLSKeyPEM: &env.TLSKeyPEM,
		node.EnvTLSClientCAPEM: &env.TLSClientCAPEM, node.EnvTLSCAPEM: &env.TLSCAPEM,
		node.EnvClusterSecret: &env.ClusterSecret,
	} {
		*field = os.Getenv(name)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	warn, err := cfg.CheckExposure()
	if err != nil {
		return err
	}
	if warn != "" {
		log.Warn(warn)
	}
	return nil
}

// devSecurityNote says how varve dev authenticates: auth none lets every
// caller do everything.
func devSecurityNote(cmd *cobra.Command, cfg node.Config) {
	if cfg.Security.Auth == "" || cfg.Security.Auth == "none" {
		fmt.Fprintln(cmd.ErrOrStderr(), "varve dev: auth none — no authentication or authorization, every caller may do everything (varve serve supports auth token and mtls, docs/security.md)")
	}
}
