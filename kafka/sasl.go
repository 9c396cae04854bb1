package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/metadata/access"
)

// Authenticator is what SASL and mutual TLS need of the node's guard
// (*guard.Guard is one; docs/security.md, "Kafka listener"). A
// Deps.Security that is not an Authenticator admits no connection: it
// offers no mechanism and names nobody by certificate.
type Authenticator interface {
	// KafkaMechanisms are the SASL mechanisms offered (none: SASL is
	// not how connections authenticate).
	KafkaMechanisms() []string
	// KafkaTLSIdentity names a TLS connection's principal by its
	// verified client certificates (ok false: certificates name nobody).
	KafkaTLSIdentity(certs []*x509.Certificate) (id guard.Identity, ok bool, err error)
	// KafkaPlain checks SASL/PLAIN credentials.
	KafkaPlain(authzid, user, password string) (guard.Identity, error)
	// KafkaSCRAM returns user's SCRAM verifier for a mechanism and the
	// identity it authenticates as.
	KafkaSCRAM(mechanism, user string) (access.SCRAM, guard.Identity, error)
	// KafkaKeyValid reports whether the API key of id (if any) is still
	// valid.
	KafkaKeyValid(id guard.Identity) bool
	// KafkaDenied writes a refused authentication to the audit log.
	KafkaDenied(id guard.Identity, what, peer string, err error)
}

func init() {
	register(17, 0, 1, handleSASLHandshake)
	register(36, 0, 2, handleSASLAuthenticate)
}

// maxSASLFrame bounds a request frame before authentication, as Kafka's
// sasl.server.max.receive.size does (512 KiB): an unauthenticated client
// cannot make the node hold a 100 MiB buffer.
const maxSASLFrame = 512 << 10

// tlsHandshakeTimeout bounds a connection's TLS handshake.
const tlsHandshakeTimeout = 10 * time.Second

type authStage uint8

const (
	authOpen       authStage = iota // nothing to do: auth none, or named by its certificate
	authStart                       // SASL required: SaslHandshake next
	authHandshook                   // mechanism chosen: its first token next
	authSCRAMFinal                  // SCRAM: the client-final-message next
	authDone                        // authenticated by SASL
	authFailed                      // refused: the connection closes after its answer
)

// authState is a connection's authentication (SASL, or mutual TLS). Its
// fields change only on the connection's reading goroutine (SASL requests
// are never handled beside others).
type authState struct {
	c     *conn
	sec   Authenticator // nil: auth none, or a Security that authenticates nobody
	stage authStage
	mech  string
	// raw: SaslHandshake v0, so the SASL tokens come bare in the frames
	// that follow, not in SaslAuthenticate requests.
	raw   bool
	scram *scramServer
}

// startAuth sets up the connection's authentication, on the connection's
// own goroutine (newConn runs there): with TLS it completes the handshake
// first (auth mtls names the principal by the client certificate; a
// failed handshake closes the connection). On a node with security
// (Deps.Security set) a connection starts as nobody, never Super.
func (c *conn) startAuth() {
	a := &c.auth
	a.c = c
	sec := c.s.d.Security
	if sec == nil {
		a.stage = authOpen
		return
	}
	c.id = guard.Identity{Principal: "anonymous"}
	a.sec, _ = sec.(Authenticator)
	a.stage = authStart
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return
	}
	log := c.s.log.With("remote", c.remote)
	ctx, cancel := context.WithTimeout(c.s.ctx, tlsHandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if errors.Is(err, io.EOF) || c.s.ctx.Err() != nil {
			log.Debug("kafka TLS handshake ended", "err", err)
		} else {
			log.Warn("kafka connection closed: TLS handshake failed", "err", err)
		}
		a.fail()
		c.nc.Close()
		return
	}
	if a.sec == nil {
		return
	}
	id, named, err := a.sec.KafkaTLSIdentity(tc.ConnectionState().PeerCertificates)
	switch {
	case !named:
	case err != nil:
		a.sec.KafkaDenied(guard.Identity{}, "TLS", c.remote, err)
		a.fail()
		c.nc.Close()
	default:
		c.id = id
		a.stage = authOpen
	}
}

// fail refuses the connection: it is closed after the answer at hand.
func (a *authState) fail() {
	a.stage = authFailed
	a.scram = nil
}

// required reports whether the connection must authenticate before any
// request but ApiVersions, SaslHandshake and SaslAuthenticate. An
// authenticated connection whose API key was revoked since must too (and
// cannot: it is closed at its next request; docs/security.md).
func (a *authState) required() bool {
	switch a.stage {
	case authOpen:
		return false
	case authDone:
		if a.sec.KafkaKeyValid(a.c.id) {
			return false
		}
		a.sec.KafkaDenied(a.c.id, "request", a.c.remote, fmt.Errorf("api key %s was revoked", a.c.id.KeyID))
		a.fail()
	}
	return true
}

// closing reports whether the connection was refused: it is closed once
// the answers before are written.
func (a *authState) closing() bool { return a.stage == authFailed }

// rawSASL reports whether the next frame is a bare SASL token (after a
// SaslHandshake v0).
func (a *authState) rawSASL() bool {
	return a.raw && (a.stage == authHandshook || a.stage == authSCRAMFinal)
}

// mechanisms are the SASL mechanisms offered.
func (a *authState) mechanisms() []string {
	if a.sec == nil {
		return []string{}
	}
	return append([]string{}, a.sec.KafkaMechanisms()...)
}

// authError refuses an authentication: msg is what the client is told,
// err what the audit log says.
type authError struct {
	msg string
	err error
}

func (e *authError) Error() string { return e.err.Error() }

// exchange takes the client's next SASL token and returns the server's;
// it authenticates the connection when the mechanism completes.
func (a *authState) exchange(tok []byte) ([]byte, error) {
	switch {
	case a.stage == authHandshook && a.mech == guard.SASLPlain:
		authzid, user, pass, err := splitPlain(tok)
		if err != nil {
			return nil, &authError{msg: err.Error(), err: err}
		}
		id, err := a.sec.KafkaPlain(authzid, user, pass)
		if err != nil {
			return nil, &authError{msg: "PLAIN: " + err.Error(), err: err}
		}
		a.done(id)
		return []byte{}, nil
	case a.stage == authHandshook:
		s, first, err := newSCRAMServer(a.sec, a.mech, tok)
		if err != nil {
			return nil, err
		}
		a.scram, a.stage = s, authSCRAMFinal
		return first, nil
	case a.stage == authSCRAMFinal:
		final, id, err := a.scram.finish(tok)
		a.scram = nil
		if err != nil {
			return nil, err
		}
		if !a.sec.KafkaKeyValid(id) { // revoked during the exchange
			err := fmt.Errorf("api key %s was revoked", id.KeyID)
			return nil, &authError{msg: a.mech + ": " + err.Error(), err: err}
		}
		a.done(id)
		return final, nil
	}
	err := errors.New("no SASL exchange in progress")
	return nil, &authError{msg: err.Error(), err: err}
}

func (a *authState) done(id guard.Identity) {
	a.c.id = id
	a.stage, a.raw = authDone, false
	a.c.s.log.Debug("kafka connection authenticated", "remote", a.c.remote, "principal", id.Principal, "mechanism", a.mech)
}

// refuse logs a failed authentication and marks the connection refused;
// it returns what the client is told.
func (a *authState) refuse(err error) string {
	msg := err.Error()
	var ae *authError
	if errors.As(err, &ae) {
		msg = ae.msg
	}
	if a.sec != nil {
		a.sec.KafkaDenied(a.c.id, "SaslAuthenticate "+a.mech, a.c.remote, err)
	}
	a.fail()
	return "Authentication failed: " + msg
}

// splitPlain reads a PLAIN token: authzid NUL authcid NUL passwd (RFC
// 4616).
func splitPlain(tok []byte) (authzid, user, pass string, err error) {
	parts := strings.Split(string(tok), "\x00")
	if len(parts) != 3 || parts[1] == "" {
		return "", "", "", errors.New("malformed PLAIN token: want authzid NUL username NUL password")
	}
	return parts[0], parts[1], parts[2], nil
}

func handleSASLHandshake(_ context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.SASLHandshakeRequest)
	resp := req.ResponseKind().(*kmsg.SASLHandshakeResponse)
	a := &c.auth
	resp.SupportedMechanisms = a.mechanisms()
	switch a.stage {
	case authFailed:
		return nil, errDrop{"SaslHandshake on a refused connection"}
	case authOpen, authStart:
	default:
		// A second handshake: re-authentication (KIP-368) is not
		// offered (SessionLifetimeMillis is 0), nor a new mechanism
		// midway.
		resp.ErrorCode = kerr.IllegalSaslState.Code
		a.fail()
		return resp, nil
	}
	if !slices.Contains(resp.SupportedMechanisms, req.Mechanism) {
		// As Kafka: the enabled mechanisms (none with auth none or
		// mtls). The connection stays as it was: the client may try
		// another, or go on without SASL where none is required.
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		return resp, nil
	}
	if a.stage == authOpen {
		// Unreachable: an open connection is offered no mechanism.
		resp.ErrorCode = kerr.IllegalSaslState.Code
		return resp, nil
	}
	a.mech, a.raw, a.stage = req.Mechanism, req.Version == 0, authHandshook
	return resp, nil
}

func handleSASLAuthenticate(_ context.Context, c *conn, kreq kmsg.Request) (kmsg.Response, error) {
	req := kreq.(*kmsg.SASLAuthenticateRequest)
	resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	a := &c.auth
	if a.stage == authFailed {
		return nil, errDrop{"SaslAuthenticate on a refused connection"}
	}
	if a.raw || (a.stage != authHandshook && a.stage != authSCRAMFinal) {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		msg := "SaslAuthenticate without a SaslHandshake v1 before it"
		resp.ErrorMessage = &msg
		a.fail()
		return resp, nil
	}
	out, err := a.exchange(req.SASLAuthBytes)
	if err != nil {
		msg := a.refuse(err)
		resp.ErrorCode, resp.ErrorMessage = kerr.SaslAuthenticationFailed.Code, &msg
		return resp, nil
	}
	resp.SASLAuthBytes = out
	// SessionLifetimeMillis stays 0: no re-authentication (KIP-368); a
	// revoked key ends its connections at their next request instead.
	return resp, nil
}

// rawToken answers a bare SASL token (after a SaslHandshake v0) with the
// server's, itself framed; false: authentication failed, close the
// connection (the v0 exchange has no way to say why).
func (c *conn) rawToken(tok []byte) bool {
	out, err := c.auth.exchange(tok)
	if err != nil {
		c.auth.refuse(err)
		return false
	}
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(out)), uint32(len(out)))
	buf = append(buf, out...)
	c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.nc.Write(buf); err != nil {
		c.s.log.Debug("kafka connection closed writing a SASL token", "remote", c.remote, "err", err)
		return false
	}
	return true
}
