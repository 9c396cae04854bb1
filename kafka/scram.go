package kafka

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/varve-io/varve/internal/guard"
	"github.com/varve-io/varve/metadata/access"
)

// The server side of SASL/SCRAM (RFC 5802, RFC 7677): SCRAM-SHA-256 and
// SCRAM-SHA-512 without channel binding, as Kafka has it. The verifiers
// (salt, iterations, StoredKey, ServerKey) are the guard's, kept with each
// API key (internal/guard/scram.go); the username is the key id.

// minClientNonce is the shortest client nonce accepted (printable
// characters): clients send 24 to 32.
const minClientNonce = 16

// scramServer is one SCRAM exchange after the server-first-message.
type scramServer struct {
	mech  string
	h     func() hash.Hash
	v     access.SCRAM
	id    guard.Identity
	found error // why user has no verifier (nil: it has): the exchange fails at the end
	// gs2 is the client's GS2 header ("n,,"), nonce the whole nonce
	// (client's and ours), auth the AuthMessage so far.
	gs2, nonce string
	auth       string
}

// newSCRAMServer reads a client-first-message and returns the exchange
// and the server-first-message. A user without a verifier gets a decoy
// salt (the same for the same name) and fails at the proof, so a client
// cannot tell which key ids exist; the audit log says why.
func newSCRAMServer(sec Authenticator, mech string, msg []byte) (*scramServer, []byte, error) {
	h := guard.SCRAMHash(mech)
	if h == nil {
		err := fmt.Errorf("%q is not a SCRAM mechanism", mech)
		return nil, nil, &authError{msg: err.Error(), err: err}
	}
	gs2, user, cnonce, bare, err := parseClientFirst(string(msg))
	if err != nil {
		return nil, nil, &authError{msg: mech + ": " + err.Error(), err: err}
	}
	if !scramNonces.fresh(cnonce) {
		err := errors.New("the client nonce was used before: refusing a replay")
		return nil, nil, &authError{msg: mech + ": " + err.Error(), err: err}
	}
	s := &scramServer{mech: mech, h: h, gs2: gs2}
	s.v, s.id, s.found = sec.KafkaSCRAM(mech, user)
	if s.found != nil {
		s.v = scramDecoy(mech, user)
		s.id = guard.Identity{Principal: user}
	}
	var sn [24]byte
	if _, err := rand.Read(sn[:]); err != nil {
		return nil, nil, err
	}
	s.nonce = cnonce + base64.RawStdEncoding.EncodeToString(sn[:])
	first := "r=" + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(s.v.Salt) + ",i=" + strconv.Itoa(s.v.Iterations)
	s.auth = bare + "," + first
	return s, []byte(first), nil
}

// finish checks the client-final-message's proof and returns the
// server-final-message and the identity authenticated.
func (s *scramServer) finish(msg []byte) ([]byte, guard.Identity, error) {
	bad := func(err error) ([]byte, guard.Identity, error) {
		return nil, guard.Identity{}, &authError{msg: s.mech + ": " + err.Error(), err: err}
	}
	m := string(msg)
	i := strings.LastIndex(m, ",p=")
	if i < 0 {
		return bad(errors.New("malformed client-final-message: no proof"))
	}
	withoutProof, proof64 := m[:i], m[i+len(",p="):]
	attrs := strings.Split(withoutProof, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "c=") || !strings.HasPrefix(attrs[1], "r=") {
		return bad(errors.New("malformed client-final-message: want c=...,r=...,p=..."))
	}
	if attrs[0][2:] != base64.StdEncoding.EncodeToString([]byte(s.gs2)) {
		return bad(errors.New("channel binding differs from the client-first-message's GS2 header (only n is supported)"))
	}
	if attrs[1][2:] != s.nonce {
		return bad(errors.New("the nonce differs from the server's"))
	}
	proof, err := base64.StdEncoding.DecodeString(proof64)
	if err != nil || len(proof) != s.h().Size() {
		return bad(errors.New("malformed client proof"))
	}
	auth := s.auth + "," + withoutProof
	// ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the client
	// knows the password when H(ClientKey) is the StoredKey.
	sig := scramMAC(s.h, s.v.StoredKey, auth)
	for i := range proof {
		proof[i] ^= sig[i]
	}
	ck := s.h()
	ck.Write(proof)
	ok := subtle.ConstantTimeCompare(ck.Sum(nil), s.v.StoredKey) == 1
	if s.found != nil {
		return nil, guard.Identity{}, &authError{msg: s.mech + ": invalid username or password", err: s.found}
	}
	if !ok {
		return nil, guard.Identity{}, &authError{msg: s.mech + ": invalid username or password",
			err: fmt.Errorf("wrong password for api key %s (the SCRAM password is the whole key, vk_...)", s.id.KeyID)}
	}
	return []byte("v=" + base64.StdEncoding.EncodeToString(scramMAC(s.h, s.v.ServerKey, auth))), s.id, nil
}

func scramMAC(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// parseClientFirst reads a client-first-message: gs2-header
// client-first-message-bare, gs2-header = ("n" / "y") "," [ "a=" authzid ]
// "," and bare = "n=" user ",r=" nonce, without extensions (Kafka's only
// one, tokenauth, is for delegation tokens, which Varve has not).
func parseClientFirst(msg string) (gs2, user, nonce, bare string, err error) {
	parts := strings.SplitN(msg, ",", 3)
	if len(parts) != 3 {
		return "", "", "", "", errors.New("malformed client-first-message")
	}
	switch {
	case parts[0] == "n", parts[0] == "y":
	case strings.HasPrefix(parts[0], "p="):
		return "", "", "", "", errors.New("channel binding is not supported (use SCRAM without -PLUS)")
	default:
		return "", "", "", "", errors.New("malformed client-first-message: bad GS2 header")
	}
	var authzid string
	if parts[1] != "" {
		if !strings.HasPrefix(parts[1], "a=") {
			return "", "", "", "", errors.New("malformed client-first-message: bad authzid")
		}
		if authzid, err = saslName(parts[1][2:]); err != nil {
			return "", "", "", "", err
		}
	}
	gs2, bare = parts[0]+","+parts[1]+",", parts[2]
	attrs := strings.Split(bare, ",")
	if len(attrs) > 0 && strings.HasPrefix(attrs[0], "m=") {
		return "", "", "", "", errors.New("mandatory extensions (m=) are not supported")
	}
	if len(attrs) != 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return "", "", "", "", errors.New("malformed client-first-message: want n=USER,r=NONCE and no extension")
	}
	if user, err = saslName(attrs[0][2:]); err != nil {
		return "", "", "", "", err
	}
	if user == "" {
		return "", "", "", "", errors.New("empty username")
	}
	if authzid != "" && authzid != user {
		return "", "", "", "", fmt.Errorf("authorization id %q differs from the username %q: acting for another principal is not supported", authzid, user)
	}
	nonce = attrs[1][2:]
	if len(nonce) < minClientNonce {
		return "", "", "", "", fmt.Errorf("client nonce of %d characters: want at least %d", len(nonce), minClientNonce)
	}
	for i := 0; i < len(nonce); i++ {
		if nonce[i] < 0x21 || nonce[i] > 0x7e {
			return "", "", "", "", errors.New("client nonce with a character outside printable ASCII")
		}
	}
	return gs2, user, nonce, bare, nil
}

// saslName decodes a SCRAM saslname (=2C is ",", =3D is "=").
func saslName(s string) (string, error) {
	if !strings.Contains(s, "=") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", errors.New("malformed SCRAM name: = not followed by 2C or 3D")
		}
		i += 2
	}
	return b.String(), nil
}

// scramDecoyKey salts the decoy verifiers of unknown users: a user's decoy salt
// is the same at every attempt on this process, as a real one would be.
var scramDecoyKey = func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}()

func scramDecoy(mech, user string) access.SCRAM {
	salt := hmac.New(sha256.New, scramDecoyKey)
	salt.Write([]byte(mech + "\x00" + user))
	stored := make([]byte, guard.SCRAMHash(mech)().Size())
	rand.Read(stored)
	return access.SCRAM{Salt: salt.Sum(nil), Iterations: guard.SCRAMIterations, StoredKey: stored, ServerKey: stored}
}

// nonceCache remembers the client nonces of recent SCRAM exchanges, so a
// replayed client-first-message is refused (the server's own random nonce
// already makes a replayed proof fail; this refuses clients that reuse
// nonces at all).
type nonceCache struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	order []string
}

// nonceMemory is how long and how many client nonces are remembered.
const (
	nonceTTL   = 15 * time.Minute
	nonceLimit = 1 << 16
)

var scramNonces = &nonceCache{seen: map[string]time.Time{}}

// fresh records n and reports whether it was not seen within nonceTTL.
func (c *nonceCache) fresh(n string) bool {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.order) > 0 && (len(c.order) >= nonceLimit || now.Sub(c.seen[c.order[0]]) > nonceTTL) {
		delete(c.seen, c.order[0])
		c.order = c.order[1:]
	}
	if _, ok := c.seen[n]; ok {
		return false
	}
	c.seen[n] = now
	c.order = append(c.order, n)
	return true
}
