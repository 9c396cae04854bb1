package kafka_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata/access"
	"github.com/varve-io/varve/node"
	"github.com/varve-io/varve/sdk"
	"github.com/varve-io/varve/sdk/admin"
)

const kafkaBootstrap = "kafka-bootstrap-admin-token"

// secretFile writes a cluster secret to a file.
func secretFile(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("a-cluster-secret-of-some-length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// tokenDev is a varve dev with auth token and the bootstrap admin key, and
// the admin client of its API.
func tokenDev(t *testing.T, mutate func(*node.Config), opts ...sdk.Option) (*node.Dev, *admin.Client) {
	t.Helper()
	cfg := nodeConfig()
	cfg.Security.Auth = "token"
	cfg.Security.BootstrapToken = kafkaBootstrap
	cfg.Security.ClusterSecretFile = secretFile(t)
	if mutate != nil {
		mutate(&cfg)
	}
	d := startDev(t, cfg)
	a := admin.New(d.Addr(), append(opts, sdk.WithToken(kafkaBootstrap))...)
	t.Cleanup(a.Close)
	return d, a
}

// grant creates an API key for principal with ACLs ("topic:t produce")
// and returns its id and token.
func grant(t *testing.T, a *admin.Client, principal string, acls ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, x := range acls {
		res, op, _ := strings.Cut(x, " ")
		if _, err := a.AddACL(ctx, admin.ACL{Principal: principal, Resource: res, Operation: op}); err != nil {
			t.Fatal(err)
		}
	}
	k, tok, err := a.CreateAPIKey(ctx, principal)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID, tok
}

// saslClient is a franz-go client of d authenticating with m.
func saslClient(t *testing.T, d *node.Dev, m sasl.Mechanism, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return newClient(t, d, append([]kgo.Opt{kgo.SASL(m), kgo.RetryTimeout(5 * time.Second)}, opts...)...)
}

// produce writes one record to topic and returns the error.
func produce(cl *kgo.Client, topic, value string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(value)}).FirstErr()
}

// connectErr is the error of a client's first request (a Metadata): the
// authentication's, as a producer retries it until its records time out.
func connectErr(cl *kgo.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := cl.Request(ctx, kmsg.NewPtrMetadataRequest())
	return err
}

// produceEventually retries until the key and ACLs reached the node (an
// etcd watch: milliseconds).
func produceEventually(t *testing.T, newCl func() *kgo.Client, topic, value string) {
	t.Helper()
	var err error
	if !testenv.Eventually(10*time.Second, func() bool {
		cl := newCl()
		defer cl.Close()
		if err = connectErr(cl); err != nil { // fast: a SASL failure is not retried
			return false
		}
		err = produce(cl, topic, value)
		return err == nil
	}) {
		t.Fatalf("produce %s to %s: %v", value, topic, err)
	}
}

// consumeUntil reads topic from the start until it saw value.
func consumeUntil(t *testing.T, cl *kgo.Client, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consume until %s: %v", value, err)
		}
		found := false
		fs.EachRecord(func(r *kgo.Record) { found = found || string(r.Value) == value })
		if found {
			return
		}
	}
}

// TestSASLProduceConsume: with auth token, PLAIN (username the principal
// or the key id) and SCRAM-SHA-256/512 (username the key id) clients of
// alice, allowed produce and consume on t only, produce to and consume t,
// and are refused u (TOPIC_AUTHORIZATION_FAILED).
func TestSASLProduceConsume(t *testing.T) {
	d, a := tokenDev(t, nil)
	createTopic(t, d, "t", 1)
	createTopic(t, d, "u", 1)
	id, tok := grant(t, a, "alice", "topic:t produce", "topic:t consume")
	for _, tc := range []struct {
		name string
		m    sasl.Mechanism
	}{
		{"PLAIN-principal", plain.Auth{User: "alice", Pass: tok}.AsMechanism()},
		{"PLAIN-keyid", plain.Auth{User: id, Pass: tok}.AsMechanism()},
		{"SCRAM-SHA-256", scram.Auth{User: id, Pass: tok}.AsSha256Mechanism()},
		{"SCRAM-SHA-512", scram.Auth{User: id, Pass: tok}.AsSha512Mechanism()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			produceEventually(t, func() *kgo.Client { return saslClient(t, d, tc.m) }, "t", tc.name)
			cl := saslClient(t, d, tc.m, kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			consumeUntil(t, cl, tc.name)
			if err := produce(saslClient(t, d, tc.m, kgo.DisableIdempotentWrite()), "u", "no"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
				t.Fatalf("produce to u: %v, want TOPIC_AUTHORIZATION_FAILED", err)
			}
		})
	}
	// The bootstrap admin key: PLAIN, username admin.
	produceEventually(t, func() *kgo.Client {
		return saslClient(t, d, plain.Auth{User: "admin", Pass: kafkaBootstrap}.AsMechanism())
	}, "u", "admin")
}

// TestSASLAuthenticationFailed: a wrong password, a username that is not
// the key's, an unknown SCRAM user and the bootstrap key over SCRAM are
// answered SASL_AUTHENTICATION_FAILED, and the connection is closed.
func TestSASLAuthenticationFailed(t *testing.T) {
	d, a := tokenDev(t, nil)
	createTopic(t, d, "t", 1)
	id, tok := grant(t, a, "alice", "topic:t produce")
	produceEventually(t, func() *kgo.Client { return saslClient(t, d, plain.Auth{User: "alice", Pass: tok}.AsMechanism()) }, "t", "ok")
	wrong := tok[:len(tok)-1] + "0" // another secret of the same length
	if wrong == tok {
		wrong = tok[:len(tok)-1] + "1"
	}
	for _, tc := range []struct {
		name string
		m    sasl.Mechanism
	}{
		{"PLAIN-wrong-password", plain.Auth{User: "alice", Pass: wrong}.AsMechanism()},
		{"PLAIN-not-a-key", plain.Auth{User: "alice", Pass: "hunter2"}.AsMechanism()},
		{"PLAIN-other-user", plain.Auth{User: "bob", Pass: tok}.AsMechanism()},
		{"PLAIN-acting-for-another", plain.Auth{Zid: "bob", User: "alice", Pass: tok}.AsMechanism()},
		{"SCRAM-SHA-256-wrong-password", scram.Auth{User: id, Pass: tok + "x"}.AsSha256Mechanism()},
		{"SCRAM-SHA-512-unknown-user", scram.Auth{User: "0123456789abcdef", Pass: tok}.AsSha512Mechanism()},
		{"SCRAM-SHA-256-principal-as-user", scram.Auth{User: "alice", Pass: tok}.AsSha256Mechanism()},
		{"SCRAM-SHA-256-bootstrap", scram.Auth{User: "admin", Pass: kafkaBootstrap}.AsSha256Mechanism()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := connectErr(saslClient(t, d, tc.m))
			if !errors.Is(err, kerr.SaslAuthenticationFailed) {
				t.Fatalf("got %v, want SASL_AUTHENTICATION_FAILED", err)
			}
		})
	}
	// On the wire: the answer carries a message, then the connection ends.
	w := dialWire(t, d.KafkaAddr(), nil)
	w.handshake(t, 1, "PLAIN", 0)
	resp := w.authenticate(t, 2, []byte("\x00alice\x00"+tok+"x"))
	if resp.ErrorCode != kerr.SaslAuthenticationFailed.Code || resp.ErrorMessage == nil || !strings.Contains(*resp.ErrorMessage, "unknown or revoked") {
		t.Fatalf("wrong password: %+v", resp)
	}
	w.closed(t)
}

// TestSASLRequired: a connection that does not authenticate gets nothing
// but ApiVersions: any other request closes it unanswered; so does a
// frame over 512 KiB before authentication.
func TestSASLRequired(t *testing.T) {
	d, _ := tokenDev(t, nil)
	createTopic(t, d, "t", 1)
	if err := connectErr(newClient(t, d)); err == nil {
		t.Fatal("a client without SASL was answered")
	}
	w := dialWire(t, d.KafkaAddr(), nil)
	av := kmsg.NewPtrApiVersionsRequest()
	av.Version = 3
	av.ClientSoftwareName, av.ClientSoftwareVersion = "test", "1"
	w.send(t, av, 1)
	if r := w.recv(t, av).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 || len(r.ApiKeys) == 0 {
		t.Fatalf("ApiVersions before SASL: %+v", r)
	}
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	w.send(t, md, 2)
	w.closed(t)

	w = dialWire(t, d.KafkaAddr(), nil)
	var big [4]byte
	binary.BigEndian.PutUint32(big[:], 1<<20)
	w.nc.Write(big[:])
	w.closed(t)
}

// TestSASLRevokedKey: revoking a key ends the connections authenticated
// with it at their next request and refuses new ones, within the etcd
// watch's latency (the test allows 5 s).
func TestSASLRevokedKey(t *testing.T) {
	d, a := tokenDev(t, nil)
	createTopic(t, d, "t", 1)
	id, tok := grant(t, a, "alice", "topic:t produce", "topic:t describe")
	m := scram.Auth{User: id, Pass: tok}.AsSha256Mechanism()
	produceEventually(t, func() *kgo.Client { return saslClient(t, d, m) }, "t", "before")
	w := dialWire(t, d.KafkaAddr(), nil)
	w.handshake(t, 1, "PLAIN", 0)
	if r := w.authenticate(t, 2, []byte("\x00alice\x00"+tok)); r.ErrorCode != 0 {
		t.Fatalf("PLAIN: %+v", r)
	}
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	w.send(t, md, 3)
	w.recv(t, md)

	start := time.Now()
	if _, err := a.RevokeAPIKey(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	var err error
	if !testenv.EventuallyEvery(5*time.Second, 10*time.Millisecond, func() bool {
		cl := saslClient(t, d, m)
		defer cl.Close()
		err = connectErr(cl)
		return errors.Is(err, kerr.SaslAuthenticationFailed)
	}) {
		t.Fatalf("a new connection with the revoked key 5 s later: %v", err)
	}
	t.Logf("new connections refused %v after the revocation", time.Since(start).Round(time.Millisecond))
	// The open connection: its next request closes it, unanswered.
	w.send(t, md, 4)
	w.closed(t)
}

// TestSASLHandshakeV0: after SaslHandshake v0 the tokens travel bare (no
// SaslAuthenticate), as clients without KIP-152 do it.
func TestSASLHandshakeV0(t *testing.T) {
	d, a := tokenDev(t, nil)
	createTopic(t, d, "t", 1)
	id, tok := grant(t, a, "alice", "topic:t produce")
	v := kversion.Stable()
	v.SetMaxKeyVersion(17, 0)
	for _, m := range []sasl.Mechanism{
		plain.Auth{User: "alice", Pass: tok}.AsMechanism(),
		scram.Auth{User: id, Pass: tok}.AsSha512Mechanism(),
	} {
		t.Run(m.Name(), func(t *testing.T) {
			produceEventually(t, func() *kgo.Client { return saslClient(t, d, m, kgo.MaxVersions(v)) }, "t", m.Name())
		})
	}
	if err := connectErr(saslClient(t, d, plain.Auth{User: "alice", Pass: tok + "x"}.AsMechanism(), kgo.MaxVersions(v))); err == nil {
		t.Fatal("a wrong password over SaslHandshake v0 produced")
	}
}

// TestSCRAMProtocolChecks drives franz-go's SCRAM client by hand on the
// wire: a short client nonce, a reused one, a changed nonce or channel
// binding in the client-final-message are all refused.
func TestSCRAMProtocolChecks(t *testing.T) {
	d, a := tokenDev(t, nil)
	id, tok := grant(t, a, "alice")
	ctx := context.Background()
	// exchange runs SCRAM-SHA-256 with nonce; tamper may change the
	// client-final-message. It returns the final answer.
	exchange := func(nonce string, tamper func(string) string) *kmsg.SASLAuthenticateResponse {
		t.Helper()
		sess, first, err := scram.Auth{User: id, Pass: tok, Nonce: []byte(nonce)}.AsSha256Mechanism().Authenticate(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		w := dialWire(t, d.KafkaAddr(), nil)
		w.handshake(t, 1, "SCRAM-SHA-256", 0)
		r := w.authenticate(t, 2, first)
		if r.ErrorCode != 0 {
			w.closed(t)
			return r
		}
		_, final, err := sess.Challenge(r.SASLAuthBytes)
		if err != nil {
			t.Fatal(err)
		}
		if tamper != nil {
			final = []byte(tamper(string(final)))
		}
		r = w.authenticate(t, 3, final)
		if r.ErrorCode == 0 {
			if done, _, err := sess.Challenge(r.SASLAuthBytes); err != nil || !done {
				t.Fatalf("server-final-message %q: %v", r.SASLAuthBytes, err)
			}
		} else {
			w.closed(t)
		}
		return r
	}
	failed := func(what string, r *kmsg.SASLAuthenticateResponse, msg string) {
		t.Helper()
		if r.ErrorCode != kerr.SaslAuthenticationFailed.Code || r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, msg) {
			t.Errorf("%s: %+v, want SASL_AUTHENTICATION_FAILED saying %q", what, r, msg)
		}
	}
	var r *kmsg.SASLAuthenticateResponse
	if !testenv.Eventually(10*time.Second, func() bool {
		r = exchange(fmt.Sprintf("a-fresh-nonce-%d", time.Now().UnixNano()), nil)
		return r.ErrorCode == 0
	}) {
		t.Fatalf("the key never authenticated: %+v", r)
	}
	failed("a short nonce", exchange("0123456789", nil), "nonce")
	n := fmt.Sprintf("nonce-used-twice-%d", time.Now().UnixNano())
	if r := exchange(n, nil); r.ErrorCode != 0 {
		t.Fatalf("first use of a nonce: %+v", r)
	}
	failed("a reused nonce", exchange(n, nil), "used before")
	failed("a changed nonce", exchange(fmt.Sprintf("nonce-changed-%d", time.Now().UnixNano()), func(s string) string {
		return strings.Replace(s, ",r=", ",r=x", 1)
	}), "nonce differs")
	failed("a changed channel binding", exchange(fmt.Sprintf("nonce-cb-%d", time.Now().UnixNano()), func(s string) string {
		return strings.Replace(s, "c=biws", "c=eSws", 1) // "y,,"
	}), "channel binding")
	failed("a changed proof", exchange(fmt.Sprintf("nonce-proof-%d", time.Now().UnixNano()), func(s string) string {
		i := strings.Index(s, ",p=") + 3
		return s[:i] + strings.Repeat("A", len(s)-i-1) + "="
	}), "invalid username or password")
}

// TestSASLWithAuthNone: with auth none a client asking for SASL is
// answered UNSUPPORTED_SASL_MECHANISM (no mechanism is enabled), and its
// connection serves it as before.
func TestSASLWithAuthNone(t *testing.T) {
	d := startDev(t, nodeConfig())
	createTopic(t, d, "t", 1)
	cl := newClient(t, d, kgo.SASL(plain.Auth{User: "alice", Pass: "x"}.AsMechanism()))
	if err := connectErr(cl); !errors.Is(err, kerr.UnsupportedSaslMechanism) {
		t.Fatalf("PLAIN with auth none: %v, want UNSUPPORTED_SASL_MECHANISM", err)
	}
	w := dialWire(t, d.KafkaAddr(), nil)
	w.handshake(t, 1, "PLAIN", kerr.UnsupportedSaslMechanism.Code)
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	w.send(t, md, 2)
	if r := w.recv(t, md).(*kmsg.MetadataResponse); len(r.Topics) != 1 {
		t.Fatalf("Metadata after the refused handshake: %+v", r)
	}
}

// TestKafkaMutualTLS: with auth mtls the Kafka listener serves TLS and the
// client certificate names the principal: CN=alice gets alice's ACLs, a
// client without a certificate fails the handshake, a node certificate
// (node_principals) gets no Kafka permission, and SASL is not offered.
func TestKafkaMutualTLS(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	server := ca.Valid(t, "node")
	cfg := nodeConfig()
	cfg.Security.TLSCertFile, cfg.Security.TLSKeyFile, cfg.Security.TLSClientCAFile = server.Cert, server.Key, ca.File
	cfg.Security.Auth = "mtls"
	cfg.Security.NodePrincipals = []string{"node"}
	d := startDev(t, cfg)
	createTopic(t, d, "t", 1)
	createTopic(t, d, "u", 1)
	st := access.New(d.Meta())
	for _, op := range []authz.Operation{authz.Produce, authz.Consume} {
		if _, err := st.AddACL(context.Background(), authz.ACL{Principal: "alice", Kind: authz.Topic, Name: "t", Operation: op, Effect: authz.Allow}); err != nil {
			t.Fatal(err)
		}
	}
	alice, nodeCert := ca.Valid(t, "alice"), ca.Valid(t, "node")
	asAlice := kgo.DialTLSConfig(clientTLS(t, ca, &alice))
	produceEventually(t, func() *kgo.Client { return newClient(t, d, asAlice) }, "t", "mtls")
	consumeUntil(t, newClient(t, d, asAlice, kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), "mtls")
	if err := produce(newClient(t, d, asAlice, kgo.DisableIdempotentWrite()), "u", "no"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("alice produces to u: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	if err := produce(newClient(t, d, kgo.DialTLSConfig(clientTLS(t, ca, &nodeCert)), kgo.DisableIdempotentWrite()), "t", "no"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("a node certificate produces to t: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	if err := connectErr(newClient(t, d, asAlice, kgo.SASL(plain.Auth{User: "alice", Pass: "x"}.AsMechanism()))); !errors.Is(err, kerr.UnsupportedSaslMechanism) {
		t.Fatalf("SASL with auth mtls: %v, want UNSUPPORTED_SASL_MECHANISM", err)
	}
	// Without a client certificate: the handshake fails, nothing is served.
	tc, err := tls.Dial("tcp", d.KafkaAddr(), clientTLS(t, ca, nil))
	if err == nil {
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = tc.Read(make([]byte, 1)) // TLS 1.3: the server's refusal arrives after the client's handshake
		tc.Close()
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a client without a certificate: %v, want a handshake failure", err)
	}
	if err := connectErr(newClient(t, d, kgo.DialTLSConfig(clientTLS(t, ca, nil)))); err == nil {
		t.Fatal("a client without a certificate produced")
	}
	// Plain TCP: no Kafka answer (at most a TLS alert), then the end.
	w := dialWire(t, d.KafkaAddr(), nil)
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 9
	w.send(t, md, 1)
	w.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(w.nc); err != nil || (len(b) > 0 && b[0] != 21) {
		t.Fatalf("plain TCP to the TLS listener: read %q, %v; want the connection closed", b, err)
	}
}

// TestKafkaTLSWithToken: with TLS and auth token, SASL runs inside TLS;
// the listener presents the node's certificate and a rotated one without
// a restart.
func TestKafkaTLSWithToken(t *testing.T) {
	ca := testenv.NewCA(t, "ca")
	server := ca.Valid(t, "node")
	d, a := tokenDev(t, func(c *node.Config) {
		c.Security.TLSCertFile, c.Security.TLSKeyFile = server.Cert, server.Key
	}, sdk.WithTLS(clientTLS(t, ca, nil)))
	createTopic(t, d, "t", 1)
	id, tok := grant(t, a, "alice", "topic:t produce")
	tlsOpt := kgo.DialTLSConfig(clientTLS(t, ca, nil))
	produceEventually(t, func() *kgo.Client {
		return saslClient(t, d, scram.Auth{User: id, Pass: tok}.AsSha512Mechanism(), tlsOpt)
	}, "t", "over TLS")
	produceEventually(t, func() *kgo.Client {
		return saslClient(t, d, plain.Auth{User: "alice", Pass: tok}.AsMechanism(), tlsOpt)
	}, "t", "PLAIN over TLS")

	serial := func() string {
		c, err := tls.Dial("tcp", d.KafkaAddr(), clientTLS(t, ca, nil))
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	if before != server.X509.SerialNumber.String() {
		t.Fatalf("the Kafka listener presents serial %s, want the node's %s", before, server.X509.SerialNumber)
	}
	rotated := ca.Issue(t, "node", time.Now().Add(-time.Minute), time.Now().Add(time.Hour), &server)
	if !testenv.Eventually(10*time.Second, func() bool { return serial() == rotated.X509.SerialNumber.String() }) {
		t.Fatalf("the Kafka listener still presents %s after the rotation", serial())
	}
}

// TestKafkaSecurityExposure: a Kafka listener off loopback without TLS is
// warned about with auth token (PLAIN sends keys in clear text) and
// refused with auth none, unless --insecure.
func TestKafkaSecurityExposure(t *testing.T) {
	for _, tc := range []struct {
		cfg        node.Config
		warn, fail bool
	}{
		{node.Config{Listen: "127.0.0.1:7700", KafkaListen: "0.0.0.0:9092", Security: node.SecurityConfig{Auth: "token"}}, true, false},
		{node.Config{Listen: "127.0.0.1:7700", KafkaListen: "127.0.0.1:9092", Security: node.SecurityConfig{Auth: "token"}}, false, false},
		{node.Config{Listen: "0.0.0.0:7700", KafkaListen: ":9092", Security: node.SecurityConfig{Auth: "token", TLSCertFile: "c.pem", TLSKeyFile: "k.pem"}}, false, false},
		{node.Config{Listen: "127.0.0.1:7700", KafkaListen: "0.0.0.0:9092"}, false, true},
		{node.Config{Listen: "127.0.0.1:7700", KafkaListen: "0.0.0.0:9092", Security: node.SecurityConfig{Insecure: true}}, true, false},
		{node.Config{Listen: "127.0.0.1:7700", KafkaListen: "localhost:9092"}, false, false},
	} {
		warn, err := tc.cfg.CheckExposure()
		if (warn != "") != tc.warn || (err != nil) != tc.fail {
			t.Errorf("listen %s kafka %s auth %q: warning %q, error %v", tc.cfg.Listen, tc.cfg.KafkaListen, tc.cfg.Security.Auth, warn, err)
		}
		if tc.warn && tc.cfg.Security.Auth == "token" && !strings.Contains(warn, "clear text") {
			t.Errorf("warning %q does not say PLAIN is in clear text", warn)
		}
	}
}

// clientTLS trusts ca and presents cert (nil: none).
func clientTLS(t *testing.T, ca *testenv.CA, cert *testenv.CertFiles) *tls.Config {
	t.Helper()
	c := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	c.RootCAs.AddCert(ca.Cert)
	if cert != nil {
		pair, err := tls.LoadX509KeyPair(cert.Cert, cert.Key)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c
}

// wire is a bare Kafka connection: requests written and answers read by
// hand.
type wire struct {
	nc net.Conn
	f  *kmsg.RequestFormatter
}

func dialWire(t *testing.T, addr string, tc *tls.Config) *wire {
	t.Helper()
	var nc net.Conn
	var err error
	if tc != nil {
		nc, err = tls.Dial("tcp", addr, tc)
	} else {
		nc, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &wire{nc: nc, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("security-test"))}
}

func (w *wire) send(t *testing.T, req kmsg.Request, corr int32) {
	t.Helper()
	if _, err := w.nc.Write(w.f.AppendRequest(nil, req, corr)); err != nil {
		t.Fatal(err)
	}
}

// recv reads the answer to req.
func (w *wire) recv(t *testing.T, req kmsg.Request) kmsg.Response {
	t.Helper()
	w.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(w.nc, size[:]); err != nil {
		t.Fatalf("reading the answer to %s: %v", kmsg.NameForKey(req.Key()), err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(w.nc, body); err != nil {
		t.Fatal(err)
	}
	body = body[4:] // correlation id
	resp := req.ResponseKind()
	if req.IsFlexible() && req.Key() != 18 {
		body = body[1:] // no tagged fields in the header
	}
	if err := resp.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	return resp
}

// closed checks the server closes the connection without answering.
func (w *wire) closed(t *testing.T) {
	t.Helper()
	w.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.ReadFull(w.nc, make([]byte, 4))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection is open (%d bytes read, %v), want it closed", n, err)
	}
}

func (w *wire) handshake(t *testing.T, corr int32, mech string, want int16) *kmsg.SASLHandshakeResponse {
	t.Helper()
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.Version, req.Mechanism = 1, mech
	w.send(t, req, corr)
	r := w.recv(t, req).(*kmsg.SASLHandshakeResponse)
	if r.ErrorCode != want {
		t.Fatalf("SaslHandshake %s: %+v, want error code %d", mech, r, want)
	}
	return r
}

func (w *wire) authenticate(t *testing.T, corr int32, tok []byte) *kmsg.SASLAuthenticateResponse {
	t.Helper()
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.Version, req.SASLAuthBytes = 2, tok
	w.send(t, req, corr)
	return w.recv(t, req).(*kmsg.SASLAuthenticateResponse)
}
