package testenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority made for one test.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// File holds the CA certificate as PEM.
	File string
}

var certSerial atomic.Int64

func nextSerial() *big.Int { return big.NewInt(time.Now().UnixNano() + certSerial.Add(1)) }

// NewCA makes a CA valid for a day.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	ca, err := CreateCA(tb.TempDir(), name)
	if err != nil {
		tb.Fatal(err)
	}
	return ca
}

// CreateCA makes a CA valid for a day, its certificate written in dir.
func CreateCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{Cert: cert, key: key, File: filepath.Join(dir, name+".pem")}
	return ca, writePEM(ca.File, "CERTIFICATE", der)
}

// writePEM writes then renames, as a certificate manager does, so a reader
// never sees half a file.
func writePEM(file, typ string, der []byte) error {
	var b bytes.Buffer
	if err := pem.Encode(&b, &pem.Block{Type: typ, Bytes: der}); err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// CertFiles is an issued certificate and its key on disk.
type CertFiles struct {
	Cert, Key string
	X509      *x509.Certificate
}

// Issue signs a certificate for cn (servers and clients; valid for
// 127.0.0.1 and localhost) from notBefore to notAfter, written to files
// (new files when nil, else over files' Cert and Key).
func (ca *CA) Issue(tb testing.TB, cn string, notBefore, notAfter time.Time, files *CertFiles) CertFiles {
	tb.Helper()
	out := CertFiles{}
	if files != nil {
		out = *files
	} else {
		dir := tb.TempDir()
		out.Cert, out.Key = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	}
	out, err := ca.IssueTo(out.Cert, out.Key, cn, notBefore, notAfter)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// IssueTo signs a certificate for cn as Issue does, written to certFile
// and keyFile.
func (ca *CA) IssueTo(certFile, keyFile, cn string, notBefore, notAfter time.Time) (CertFiles, error) {
	return ca.issue(certFile, keyFile, cn, notBefore, notAfter, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
}

// ValidFor issues a certificate for cn valid now and for 12 hours whose
// only names are dnsNames (no IP address).
func (ca *CA) ValidFor(tb testing.TB, cn string, dnsNames ...string) CertFiles {
	tb.Helper()
	dir := tb.TempDir()
	out, err := ca.issue(filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key"), cn, time.Now().Add(-time.Hour), time.Now().Add(12*time.Hour), dnsNames, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func (ca *CA) issue(certFile, keyFile, cn string, notBefore, notAfter time.Time, dnsNames []string, ips []net.IP) (CertFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CertFiles{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dnsNames, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return CertFiles{}, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return CertFiles{}, err
	}
	out := CertFiles{Cert: certFile, Key: keyFile}
	out.X509, _ = x509.ParseCertificate(der)
	if err := writePEM(out.Key, "PRIVATE KEY", kder); err != nil {
		return CertFiles{}, err
	}
	return out, writePEM(out.Cert, "CERTIFICATE", der)
}

// Valid issues a certificate for cn valid now and for 12 hours.
func (ca *CA) Valid(tb testing.TB, cn string) CertFiles {
	return ca.Issue(tb, cn, time.Now().Add(-time.Hour), time.Now().Add(12*time.Hour), nil)
}
