package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/varve-io/varve/gen/varve/v1/varvev1connect"
	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/internal/tlsconf"
)

// security is the node's TLS and guard (docs/security.md).
type security struct {
	tls   *tlsconf.Server // nil: no TLS
	guard *guard.Guard
	peer  *tls.Config // node-to-node calls (nil: h2c)
}

// SecretEnv holds what a deployment that injects secrets as environment
// variables (ECS, Kubernetes) gives instead of files: PEM texts in place of
// tls_cert_file, tls_key_file, tls_client_ca_file and tls_ca_file, and the
// cluster secret in place of cluster_secret_file. `varve serve` reads them
// from VARVE_TLS_CERT_PEM, VARVE_TLS_KEY_PEM, VARVE_TLS_CLIENT_CA_PEM,
// VARVE_TLS_CA_PEM and VARVE_CLUSTER_SECRET. Unlike files they are not
// reloaded: a new value takes a restart (a new ECS deployment).
type SecretEnv struct {
	TLSCertPEM, TLSKeyPEM, TLSClientCAPEM, TLSCAPEM string
	ClusterSecret                                   string
}

// Names of the variables of SecretEnv.
const (
	EnvTLSCertPEM     = "VARVE_TLS_CERT_PEM"
	EnvTLSKeyPEM      = "VARVE_TLS_KEY_PEM"
	EnvTLSClientCAPEM = "VARVE_TLS_CLIENT_CA_PEM"
	EnvTLSCAPEM       = "VARVE_TLS_CA_PEM"
	EnvClusterSecret  = "VARVE_CLUSTER_SECRET"
)

// source is a file setting or, when set, the PEM text of its variable.
func source(file, envName, pem string) tlsconf.Source {
	if pem != "" {
		return tlsconf.Source{PEM: []byte(pem), Name: envName}
	}
	return tlsconf.Source{File: file, Name: file}
}

func (s SecurityConfig) tlsCert() tlsconf.Source {
	return source(s.TLSCertFile, EnvTLSCertPEM, s.Env.TLSCertPEM)
}
func (s SecurityConfig) tlsKey() tlsconf.Source {
	return source(s.TLSKeyFile, EnvTLSKeyPEM, s.Env.TLSKeyPEM)
}
func (s SecurityConfig) tlsClientCA() tlsconf.Source {
	return source(s.TLSClientCAFile, EnvTLSClientCAPEM, s.Env.TLSClientCAPEM)
}
func (s SecurityConfig) tlsCA() tlsconf.Source {
	return source(s.TLSCAFile, EnvTLSCAPEM, s.Env.TLSCAPEM)
}

// hasTLS: the listeners serve TLS.
func (s SecurityConfig) hasTLS() bool { return s.tlsCert().IsSet() }

// validate checks the security settings together.
func (s SecurityConfig) validate(c *Config) error {
	for _, p := range []struct{ setting, file, env, pem string }{
		{"tls_cert_file", s.TLSCertFile, EnvTLSCertPEM, s.Env.TLSCertPEM},
		{"tls_key_file", s.TLSKeyFile, EnvTLSKeyPEM, s.Env.TLSKeyPEM},
		{"tls_client_ca_file", s.TLSClientCAFile, EnvTLSClientCAPEM, s.Env.TLSClientCAPEM},
		{"tls_ca_file", s.TLSCAFile, EnvTLSCAPEM, s.Env.TLSCAPEM},
		{"cluster_secret_file", s.ClusterSecretFile, EnvClusterSecret, s.Env.ClusterSecret},
	} {
		if p.file != "" && p.pem != "" {
			return fmt.Errorf("config: %s and the variable %s are both set: give one", p.setting, p.env)
		}
	}
	if s.tlsCert().IsSet() != s.tlsKey().IsSet() {
		return errors.New("config: tls_cert_file and tls_key_file are set together")
	}
	if s.Auth == guard.AuthMTLS && (!s.tlsCert().IsSet() || !s.tlsClientCA().IsSet()) {
		return errors.New("config: auth mtls needs tls_cert_file, tls_key_file and tls_client_ca_file")
	}
	if len(s.NodePrincipals) > 0 && (!s.tlsCert().IsSet() || !s.tlsClientCA().IsSet()) {
		return errors.New("config: node_principals needs tls_cert_file, tls_key_file and tls_client_ca_file: nodes present their certificates to each other")
	}
	if s.Auth != "" && s.Auth != guard.AuthNone && s.ClusterSecretFile == "" && s.Env.ClusterSecret == "" && len(s.NodePrincipals) == 0 && c.has(RoleFetch) {
		return fmt.Errorf("config: auth %s needs cluster_secret_file (or node_principals with mutual TLS) on fetch nodes: it is the node credential of the internal BlockService (the same file on every node)", s.Auth)
	}
	if s.Auth != "" && s.Auth != guard.AuthNone && s.ClusterSecretFile == "" && s.Env.ClusterSecret == "" && len(s.NodePrincipals) == 0 &&
		c.CommitPath == CommitSequencer && (c.has(RoleIngest) || c.has(RoleSequence)) {
		return fmt.Errorf("config: auth %s with commit_path sequencer needs cluster_secret_file (or node_principals with mutual TLS) on ingest and sequence nodes: it is the node credential of the internal SequencerService (the same file on every node)", s.Auth)
	}
	return nil
}

// CheckExposure refuses (an error) a node on a non-loopback address (the
// API's or the Kafka listener's) with auth none and no TLS unless insecure
// is set, and returns a warning when it is, or when a Kafka listener on a
// non-loopback address has authentication but no TLS (kafkaExposure):
// `varve serve` calls it before starting.
func (c Config) CheckExposure() (warning string, err error) {
	s := c.Security
	if (s.Auth != "" && s.Auth != guard.AuthNone) || s.hasTLS() {
		return c.kafkaExposure(), nil
	}
	addr := c.Listen
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", c.Listen, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		addr = ""
		if c.KafkaListen != "" && c.KafkaListen != "off" {
			if kh, _, err := net.SplitHostPort(c.KafkaListen); err == nil {
				if ip := net.ParseIP(kh); kh != "localhost" && (ip == nil || !ip.IsLoopback()) {
					addr = c.KafkaListen // the Kafka listener is exposed
				}
			}
		}
		if addr == "" {
			return "", nil
		}
	}
	if !s.Insecure {
		return "", fmt.Errorf("refusing to serve on %s with auth none and no TLS: anyone who reaches it may read, write and delete everything. Set auth token or mtls with tls_cert_file (docs/security.md), listen on 127.0.0.1, or pass --insecure", addr)
	}
	return fmt.Sprintf("serving on %s with auth none and no TLS (--insecure): anyone who reaches it may read, write and delete everything", addr), nil
}

func readSecretFile(setting, file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", setting, err)
	}
	v := strings.TrimSpace(string(b))
	if len(v) < 16 {
		return "", fmt.Errorf("%s %s: shorter than 16 characters", setting, file)
	}
	return v, nil
}

// startSecurity loads the TLS files and starts the guard.
func (n *Node) startSecurity(ctx context.Context) error {
	s := n.cfg.Security
	if s.hasTLS() {
		var err error
		var clientCA tlsconf.Source
		if s.tlsClientCA().IsSet() {
			clientCA = s.tlsClientCA()
		}
		n.sec.tls, err = tlsconf.NewServerFrom(s.tlsCert(), s.tlsKey(), clientCA, s.Auth == guard.AuthMTLS)
		if err != nil {
			return err
		}
		n.sec.peer, err = tlsconf.Client("", "", "")
		if err != nil {
			return err
		}
		if s.tlsCA().IsSet() {
			if n.sec.peer.RootCAs, err = tlsconf.SourcePool(s.tlsCA()); err != nil {
				return fmt.Errorf("tls_ca_file: %w", err)
			}
		}
		n.sec.peer.ServerName = s.TLSPeerServerName
		// A node presents its own certificate to nodes that ask for one.
		n.sec.peer.GetClientCertificate = n.sec.tls.Certs.GetClientCertificate
	}
	boot := s.BootstrapToken
	if boot == "" {
		var err error
		if boot, err = readSecretFile("bootstrap_token_file", s.BootstrapTokenFile); err != nil {
			return err
		}
	}
	secret, err := readSecretFile("cluster_secret_file", s.ClusterSecretFile)
	if err != nil {
		return err
	}
	if v := strings.TrimSpace(s.Env.ClusterSecret); v != "" {
		if len(v) < 16 {
			return fmt.Errorf("%s: shorter than 16 characters", EnvClusterSecret)
		}
		secret = v
	}
	overrides, err := guard.ParseQuotas(s.Quotas, parseBytes)
	if err != nil {
		return fmt.Errorf("config: quotas: %w", err)
	}
	n.sec.guard, err = guard.New(ctx, n.meta, guard.Config{
		Auth: s.Auth, MTLSPrincipal: s.MTLSPrincipal, BootstrapToken: boot, ClusterSecret: secret, NodePrincipals: s.NodePrincipals, Log: n.log,
		Quotas: guard.QuotaConfig{ProduceBytes: s.QuotaProduceBytes, FetchBytes: s.QuotaFetchBytes, Principals: overrides},
	})
	if err != nil {
		return err
	}
	n.onClose = append(n.onClose, n.sec.guard.Close)
	if boot != "" {
		n.log.Info("bootstrap admin key configured", "principal", guard.BootstrapPrincipal)
	}
	return nil
}

// securityOptions are the handler options every service gets: the guard's
// interceptor.
func (n *Node) securityOptions() []connect.HandlerOption {
	return []connect.HandlerOption{connect.WithInterceptors(n.sec.guard.Interceptor())}
}

// mountAccess serves the AccessService (API keys and ACLs).
func (n *Node) mountAccess(mux *http.ServeMux, hopts []connect.HandlerOption) {
	mux.Handle(varvev1connect.NewAccessServiceHandler(n.sec.guard.Service(), hopts...))
}

// secureHandler authenticates every request.
func (n *Node) secureHandler(h http.Handler) http.Handler { return n.sec.guard.Middleware(h) }

// secureListener wraps the API listener in TLS (HTTP/2 and HTTP/1.1).
func (n *Node) secureListener(ln net.Listener) net.Listener {
	if n.sec.tls == nil {
		return ln
	}
	return tls.NewListener(ln, n.sec.tls.Config("h2", "http/1.1"))
}

// scheme is the API's URL scheme.
func (n *Node) scheme() string {
	if n.sec.tls != nil {
		return "https://"
	}
	return "http://"
}

// flightOptions are the Flight server's TLS and guard.
func (n *Node) flightOptions() []grpc.ServerOption {
	opts := n.sec.guard.FlightOptions()
	if n.sec.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(n.sec.tls.Config("h2"))))
	}
	return opts
}
