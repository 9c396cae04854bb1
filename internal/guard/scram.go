package guard

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"

	"github.com/varve-io/varve/metadata/access"
)

// SASL mechanisms of the Kafka listener.
const (
	SASLPlain   = "PLAIN"
	SCRAMSHA256 = "SCRAM-SHA-256"
	SCRAMSHA512 = "SCRAM-SHA-512"
)

// SCRAMIterations is the PBKDF2 iteration count of the SCRAM verifiers
// Varve makes: RFC 7677's minimum and Kafka's default. The password is an
// API key's 256-bit random token, which no stretching makes stronger.
const SCRAMIterations = 4096

// SCRAMHash is the hash of a SCRAM mechanism (nil for another name).
func SCRAMHash(mechanism string) func() hash.Hash {
	switch mechanism {
	case SCRAMSHA256:
		return sha256.New
	case SCRAMSHA512:
		return sha512.New
	}
	return nil
}

// NewSCRAM derives the SCRAM verifier of password for mechanism, with a
// new random salt and SCRAMIterations.
func NewSCRAM(mechanism, password string) (access.SCRAM, error) {
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return access.SCRAM{}, err
	}
	return SCRAMVerifier(mechanism, password, salt, SCRAMIterations)
}

// SCRAMVerifier derives the SCRAM verifier of password for mechanism with
// salt and iterations (RFC 5802): SaltedPassword = PBKDF2(password, salt,
// iterations), StoredKey = H(HMAC(SaltedPassword, "Client Key")),
// ServerKey = HMAC(SaltedPassword, "Server Key").
func SCRAMVerifier(mechanism, password string, salt []byte, iterations int) (access.SCRAM, error) {
	h := SCRAMHash(mechanism)
	if h == nil {
		return access.SCRAM{}, fmt.Errorf("%q is not a SCRAM mechanism", mechanism)
	}
	salted, err := pbkdf2.Key(h, password, salt, iterations, h().Size())
	if err != nil {
		return access.SCRAM{}, err
	}
	ck := hmac.New(h, salted)
	ck.Write([]byte("Client Key"))
	stored := h()
	stored.Write(ck.Sum(nil))
	sk := hmac.New(h, salted)
	sk.Write([]byte("Server Key"))
	return access.SCRAM{Salt: salt, Iterations: iterations, StoredKey: stored.Sum(nil), ServerKey: sk.Sum(nil)}, nil
}

// scramVerifiers derives the verifiers of token for every SCRAM mechanism.
func scramVerifiers(token string) (map[string]access.SCRAM, error) {
	out := map[string]access.SCRAM{}
	for _, m := range []string{SCRAMSHA256, SCRAMSHA512} {
		v, err := NewSCRAM(m, token)
		if err != nil {
			return nil, err
		}
		out[m] = v
	}
	return out, nil
}
