package sdk

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"

	"connectrpc.com/connect"
)

// WithToken sends token (an API key, vk_...) as Authorization: Bearer on
// every call, for clusters running auth token (docs/security.md).
func WithToken(token string) Option {
	return WithClientOptions(connect.WithInterceptors(tokenInterceptor(token)))
}

// WithTLS sets the TLS configuration of the client's own HTTP client for
// https:// addresses: the CAs to trust (RootCAs) and a client certificate
// for clusters running mutual TLS. Ignored with WithHTTPClient.
func WithTLS(c *tls.Config) Option {
	return func(cfg *clientConfig) { cfg.tls = c }
}

// LoadTLSConfig builds a client TLS configuration from PEM files: caFile
// (empty: the system roots) and an optional client certificate and key.
func LoadTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("ca file %s: no PEM certificate in it", caFile)
		}
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		return nil, errors.New("a client certificate needs both its certificate and its key file")
	}
	return c, nil
}

type tokenInterceptor string

func (t tokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			req.Header().Set("Authorization", "Bearer "+string(t))
		}
		return next(ctx, req)
	}
}

func (t tokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set("Authorization", "Bearer "+string(t))
		return conn
	}
}

func (t tokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// applyTLS puts c into the client's own transport.
func applyTLS(hc *http.Client, c *tls.Config) {
	if t, ok := hc.Transport.(*http.Transport); ok && c != nil {
		t.TLSClientConfig = c
	}
}
