package guard_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/varve-io/varve/internal/authz"
	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/internal/testenv"
	"github.com/varve-io/varve/metadata"
	"github.com/varve-io/varve/metadata/access"
)

// TestSCRAMVerifierRFC7677: the verifier of "pencil" proves RFC 7677's
// SCRAM-SHA-256 example: the client's proof checks against StoredKey and
// ServerKey signs the server-final-message of the RFC.
func TestSCRAMVerifierRFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, err := guard.SCRAMVerifier(guard.SCRAMSHA256, "pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	const nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	auth := "n=user,r=rOprNGfwEbeRWgbNEkqO," + "r=" + nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096," + "c=biws,r=" + nonce
	sum := func(key []byte) []byte { m := hmac.New(sha256.New, key); m.Write([]byte(auth)); return m.Sum(nil) }
	proof, _ := base64.StdEncoding.DecodeString("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
	sig := sum(v.StoredKey)
	for i := range proof {
		proof[i] ^= sig[i]
	}
	if h := sha256.Sum256(proof); !bytes.Equal(h[:], v.StoredKey) {
		t.Fatal("the RFC's client proof does not check against StoredKey")
	}
	if got := base64.StdEncoding.EncodeToString(sum(v.ServerKey)); got != "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" {
		t.Fatalf("server signature %s", got)
	}
	if _, err := guard.SCRAMVerifier("SCRAM-SHA-1", "pencil", salt, 4096); err == nil {
		t.Fatal("SCRAM-SHA-1 derived")
	}
}

// TestCreateAPIKeyStoresSCRAM: CreateAPIKey stores the token's
// SCRAM-SHA-256 and -512 verifiers (4096 iterations, a 32-byte salt of
// its own each) beside the salted hash, never the token.
func TestCreateAPIKeyStoresSCRAM(t *testing.T) {
	n, a := securedNode(t, nil, nil, nil)
	k, tok, err := a.CreateAPIKey(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := access.New(n.Meta()).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stored := snap.Keys[k.ID]
	if len(stored.SCRAM) != 2 {
		t.Fatalf("stored verifiers %v, want SCRAM-SHA-256 and -512", stored.SCRAM)
	}
	for _, m := range []string{guard.SCRAMSHA256, guard.SCRAMSHA512} {
		v := stored.SCRAM[m]
		if v.Iterations != guard.SCRAMIterations || len(v.Salt) != 32 {
			t.Fatalf("%s: %d iterations, %d-byte salt", m, v.Iterations, len(v.Salt))
		}
		want, err := guard.SCRAMVerifier(m, tok, v.Salt, v.Iterations)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want.StoredKey, v.StoredKey) || !bytes.Equal(want.ServerKey, v.ServerKey) {
			t.Fatalf("%s: the stored verifier is not the token's", m)
		}
	}
	if bytes.Equal(stored.SCRAM[guard.SCRAMSHA256].Salt, stored.SCRAM[guard.SCRAMSHA512].Salt) {
		t.Fatal("both mechanisms share a salt")
	}
}

// TestKafkaAuthGuard: what the Kafka listener asks of the guard, per auth
// mode: the mechanisms, PLAIN's username rule, SCRAM verifiers by key id
// (none for keys made before them), revocation, certificate principals.
func TestKafkaAuthGuard(t *testing.T) {
	ctx := context.Background()
	m, err := metadata.Connect(ctx, metadata.Config{Endpoints: testenv.StartEtcd(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	st := access.New(m)
	newGuard := func(cfg guard.Config) *guard.Guard {
		g, err := guard.New(ctx, m, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
		return g
	}
	tg := newGuard(guard.Config{Auth: guard.AuthToken, BootstrapToken: bootstrap})
	ng := newGuard(guard.Config{Auth: guard.AuthNone})
	mg := newGuard(guard.Config{Auth: guard.AuthMTLS, NodePrincipals: []string{"node"}})
	if got := strings.Join(tg.KafkaMechanisms(), ","); got != "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512" {
		t.Fatalf("auth token mechanisms %s", got)
	}
	if len(ng.KafkaMechanisms()) != 0 || len(mg.KafkaMechanisms()) != 0 {
		t.Fatal("mechanisms offered with auth none or mtls")
	}

	k, _ := authz.NewKey()
	vs := map[string]access.SCRAM{}
	for _, mech := range []string{guard.SCRAMSHA256, guard.SCRAMSHA512} {
		if vs[mech], err = guard.NewSCRAM(mech, k.Token); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateKeySCRAM(ctx, "alice", k, vs); err != nil {
		t.Fatal(err)
	}
	old, _ := authz.NewKey()
	if _, err := st.CreateKey(ctx, "bob", old); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(5*time.Second, func() bool {
		_, e1 := tg.KafkaPlain("", "alice", k.Token)
		_, e2 := tg.KafkaPlain("", "bob", old.Token)
		return e1 == nil && e2 == nil
	}) {
		t.Fatal("the keys never reached the guard")
	}
	for _, tc := range []struct {
		authzid, user, pass string
		ok                  bool
	}{
		{"", "alice", k.Token, true},
		{"", k.ID, k.Token, true},
		{"alice", "alice", k.Token, true},
		{"bob", "alice", k.Token, false},
		{"", "bob", k.Token, false},
		{"", "alice", k.Token + "x", false},
		{"", "alice", "", false},
		{"", "admin", bootstrap, true},
		{"", "alice", bootstrap, false},
	} {
		id, err := tg.KafkaPlain(tc.authzid, tc.user, tc.pass)
		if (err == nil) != tc.ok {
			t.Errorf("PLAIN %q/%q: %+v, %v", tc.authzid, tc.user, id, err)
		}
	}
	if id, _ := tg.KafkaPlain("", "admin", bootstrap); !id.Super {
		t.Error("the bootstrap key over PLAIN is not the admin")
	}
	if _, err := ng.KafkaPlain("", "alice", k.Token); err == nil {
		t.Error("PLAIN accepted with auth none")
	}

	v, id, err := tg.KafkaSCRAM(guard.SCRAMSHA512, k.ID)
	if err != nil || id.Principal != "alice" || id.KeyID != k.ID || !bytes.Equal(v.StoredKey, vs[guard.SCRAMSHA512].StoredKey) {
		t.Fatalf("SCRAM verifier of alice's key: %+v, %v", id, err)
	}
	if _, _, err := tg.KafkaSCRAM(guard.SCRAMSHA256, old.ID); err == nil || !strings.Contains(err.Error(), "PLAIN") {
		t.Errorf("a key made without verifiers: %v, want a hint at PLAIN", err)
	}
	if _, _, err := tg.KafkaSCRAM(guard.SCRAMSHA256, "alice"); err == nil {
		t.Error("SCRAM by principal name: want the key id")
	}
	if !tg.KafkaKeyValid(id) {
		t.Fatal("a live key reported revoked")
	}
	if _, err := st.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	if !testenv.Eventually(5*time.Second, func() bool { return !tg.KafkaKeyValid(id) }) {
		t.Fatal("the revoked key is still valid 5 s later")
	}
	if _, _, err := tg.KafkaSCRAM(guard.SCRAMSHA256, k.ID); err == nil {
		t.Error("SCRAM verifier of a revoked key")
	}

	ca := testenv.NewCA(t, "ca")
	alice, nodeCert := ca.Valid(t, "alice"), ca.Valid(t, "node")
	if id, named, err := mg.KafkaTLSIdentity(nil); !named || err == nil || id.Principal != "" {
		t.Errorf("mtls without a certificate: %+v %v %v", id, named, err)
	}
	if id, named, err := mg.KafkaTLSIdentity(append([]*x509.Certificate{}, alice.X509)); !named || err != nil || id.Principal != "alice" || id.Super || id.Node {
		t.Errorf("mtls alice: %+v %v %v", id, named, err)
	}
	if id, _, err := mg.KafkaTLSIdentity(append([]*x509.Certificate{}, nodeCert.X509)); err != nil || !id.Node || mg.Allowed(id, authz.Resource{Kind: authz.Topic, Name: "t"}, authz.Describe) {
		t.Errorf("mtls node certificate: %+v %v, want a node without Kafka rights", id, err)
	}
	if _, named, _ := tg.KafkaTLSIdentity(append([]*x509.Certificate{}, alice.X509)); named {
		t.Error("auth token named a principal by certificate")
	}
}
