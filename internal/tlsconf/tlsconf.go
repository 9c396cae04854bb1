// Package tlsconf builds the TLS configurations of Varve's listeners and
// clients from PEM files: a server certificate that is read again when its
// files change (rotation needs no restart), an optional client CA for
// mutual TLS, and client configurations with a CA file and a client
// certificate.
//
// It never listens or dials itself and knows nothing of Varve's API.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Reloader serves a certificate/key pair read from two PEM files and reads
// them again when either file's size or modification time changed. The
// files are looked at no more than once per CheckEvery. A pair that fails to
// load (a half-written rotation) keeps the previous one in use until a
// later check loads the new one.
type Reloader struct {
	certFile, keyFile string
	// CheckEvery bounds how often the files are looked at; default 1s.
	CheckEvery time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
	lastErr error
}

// NewReloader loads the pair once (an error if it cannot) and returns the
// reloader.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, CheckEvery: time.Second}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

func (r *Reloader) load() error {
	stamp, err := r.fileStamp()
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s / key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &c, stamp
	return nil
}

// Certificate returns the current pair, reading the files again if they
// changed since the last load.
func (r *Reloader) Certificate() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= r.CheckEvery {
		r.checked = now
		if stamp, err := r.fileStamp(); err == nil && stamp != r.stamp {
			r.lastErr = r.load()
		}
	}
	return r.cert, nil
}

// LastError is the error of the last failed reload (nil after a good one).
func (r *Reloader) LastError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Certificate()
}

// GetClientCertificate implements tls.Config.GetClientCertificate (a node
// presenting its own certificate to another node).
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Certificate()
}

// CertPool reads a PEM file of CA certificates.
func CertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ca file: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("ca file %s: no PEM certificate in it", file)
	}
	return p, nil
}

// Server is the TLS side of a node's listeners.
type Server struct {
	Certs *Reloader
	// ClientCAs verifies client certificates (nil: none asked for).
	ClientCAs *x509.CertPool
	// RequireClientCert refuses connections without a verified client
	// certificate (auth mtls); otherwise one is verified when given.
	RequireClientCert bool
}

// NewServer loads the server side from the settings' files; certFile and
// keyFile must both be set, clientCAFile is optional.
func NewServer(certFile, keyFile, clientCAFile string, requireClientCert bool) (*Server, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("tls_cert_file and tls_key_file must be set together")
	}
	r, err := NewReloader(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	s := &Server{Certs: r, RequireClientCert: requireClientCert}
	if clientCAFile != "" {
		if s.ClientCAs, err = CertPool(clientCAFile); err != nil {
			return nil, fmt.Errorf("tls_client_ca_file: %w", err)
		}
	} else if requireClientCert {
		return nil, errors.New("mutual TLS needs tls_client_ca_file")
	}
	return s, nil
}

// Config returns a server tls.Config offering protos (ALPN), such as
// "h2", "http/1.1".
func (s *Server) Config(protos ...string) *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.Certs.GetCertificate,
		NextProtos:     protos,
	}
	if s.ClientCAs != nil {
		c.ClientCAs = s.ClientCAs
		c.ClientAuth = tls.VerifyClientCertIfGiven
		if s.RequireClientCert {
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return c
}

// Client builds a client tls.Config: caFile (empty: the system roots) and
// an optional client certificate pair.
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		p, err := CertPool(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = p
	}
	switch {
	case certFile != "" && keyFile != "":
		r, err := NewReloader(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		c.GetClientCertificate = r.GetClientCertificate
	case certFile != "" || keyFile != "":
		return nil, errors.New("a client certificate needs both its certificate and its key file")
	}
	return c, nil
}
