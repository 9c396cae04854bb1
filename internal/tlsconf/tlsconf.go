// Package tlsconf builds the TLS configurations of Varve's listeners and
// clients from PEM files (or PEM text injected as environment variables): a
// server certificate and a client CA (mutual TLS) that are read again when
// their files change (rotation needs no restart), and client configurations
// with a CA file and a client certificate.
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

// Source is one PEM input: a file, read again when it changes, or the PEM
// text itself (a secret a deployment injects as an environment variable),
// which never changes. Name says where it comes from in errors.
type Source struct {
	File string
	PEM  []byte
	Name string
}

// FileSource is a PEM file.
func FileSource(file string) Source { return Source{File: file, Name: file} }

// IsSet reports whether the source names a file or holds PEM text.
func (s Source) IsSet() bool { return s.File != "" || len(s.PEM) > 0 }

func (s Source) read() ([]byte, error) {
	if s.File == "" {
		return s.PEM, nil
	}
	return os.ReadFile(s.File)
}

// stamp changes when the file does ("" for PEM text).
func (s Source) stamp() (string, error) {
	if s.File == "" {
		return "", nil
	}
	fi, err := os.Stat(s.File)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano()), nil
}

func (s Source) String() string {
	if s.Name != "" {
		return s.Name
	}
	return s.File
}

// Reloader serves a certificate/key pair read from two PEM files and reads
// them again when either file's size or modification time changed. The
// files are looked at no more than once per CheckEvery. A pair that fails to
// load (a half-written rotation) keeps the previous one in use until a
// later check loads the new one. A pair given as PEM text is served as is.
type Reloader struct {
	certSrc, keySrc Source
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
	return NewPairReloader(FileSource(certFile), FileSource(keyFile))
}

// NewPairReloader is NewReloader for sources that may hold PEM text.
func NewPairReloader(cert, key Source) (*Reloader, error) {
	r := &Reloader{certSrc: cert, keySrc: key, CheckEvery: time.Second}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) fileStamp() (string, error) {
	var s string
	for _, src := range []Source{r.certSrc, r.keySrc} {
		st, err := src.stamp()
		if err != nil {
			return "", err
		}
		s += st
	}
	return s, nil
}

func (r *Reloader) load() error {
	stamp, err := r.fileStamp()
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	certPEM, err := r.certSrc.read()
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	keyPEM, err := r.keySrc.read()
	if err != nil {
		return fmt.Errorf("tls key: %w", err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("tls certificate %s / key %s: %w", r.certSrc, r.keySrc, err)
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

// PoolReloader serves a pool of CA certificates read from a PEM source and,
// for a file, read again (at most once per CheckEvery) when its size or
// modification time changed; a file that does not parse keeps the previous
// pool until it does.
type PoolReloader struct {
	src Source
	// CheckEvery bounds how often the file is looked at; default 1s.
	CheckEvery time.Duration

	mu      sync.Mutex
	pool    *x509.CertPool
	stamp   string
	checked time.Time
	lastErr error
}

// NewPoolReloader loads the pool once (an error if it cannot).
func NewPoolReloader(src Source) (*PoolReloader, error) {
	p := &PoolReloader{src: src, CheckEvery: time.Second}
	if err := p.load(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *PoolReloader) load() error {
	stamp, err := p.src.stamp()
	if err != nil {
		return fmt.Errorf("ca file: %w", err)
	}
	b, err := p.src.read()
	if err != nil {
		return fmt.Errorf("ca file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("ca file %s: no PEM certificate in it", p.src)
	}
	p.pool, p.stamp = pool, stamp
	return nil
}

// Pool returns the current pool, reading the file again if it changed.
func (p *PoolReloader) Pool() *x509.CertPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.Sub(p.checked) >= p.CheckEvery {
		p.checked = now
		if stamp, err := p.src.stamp(); err == nil && stamp != p.stamp {
			p.lastErr = p.load()
		}
	}
	return p.pool
}

// LastError is the error of the last failed reload (nil after a good one).
func (p *PoolReloader) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// CertPool reads a PEM file of CA certificates.
func CertPool(file string) (*x509.CertPool, error) { return SourcePool(FileSource(file)) }

// SourcePool reads CA certificates from a PEM source once.
func SourcePool(src Source) (*x509.CertPool, error) {
	p, err := NewPoolReloader(src)
	if err != nil {
		return nil, err
	}
	return p.pool, nil
}

// Server is the TLS side of a node's listeners.
type Server struct {
	Certs *Reloader
	// ClientCAs verifies client certificates (nil: none asked for); a file
	// is read again when it changes, like the certificate.
	ClientCAs *PoolReloader
	// RequireClientCert refuses connections without a verified client
	// certificate (auth mtls); otherwise one is verified when given.
	RequireClientCert bool
}

// NewServer loads the server side from the settings' files; certFile and
// keyFile must both be set, clientCAFile is optional.
func NewServer(certFile, keyFile, clientCAFile string, requireClientCert bool) (*Server, error) {
	var ca Source
	if clientCAFile != "" {
		ca = FileSource(clientCAFile)
	}
	return NewServerFrom(FileSource(certFile), FileSource(keyFile), ca, requireClientCert)
}

// NewServerFrom is NewServer for sources that may hold PEM text.
func NewServerFrom(cert, key, clientCA Source, requireClientCert bool) (*Server, error) {
	if !cert.IsSet() || !key.IsSet() {
		return nil, errors.New("tls_cert_file and tls_key_file must be set together")
	}
	r, err := NewPairReloader(cert, key)
	if err != nil {
		return nil, err
	}
	s := &Server{Certs: r, RequireClientCert: requireClientCert}
	if clientCA.IsSet() {
		if s.ClientCAs, err = NewPoolReloader(clientCA); err != nil {
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
		c.ClientCAs = s.ClientCAs.Pool()
		c.ClientAuth = tls.VerifyClientCertIfGiven
		if s.RequireClientCert {
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
		// Each handshake verifies against the CA file as it is now: a
		// changed tls_client_ca_file takes effect without a restart.
		base := c.Clone()
		c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cc := base.Clone()
			cc.ClientCAs = s.ClientCAs.Pool()
			return cc, nil
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
