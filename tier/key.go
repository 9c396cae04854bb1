package tier

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidKey is wrapped by every Store operation given a key that is not a
// valid object key (see ValidateKey). Nothing is read or written.
var ErrInvalidKey = errors.New("invalid object key")

// MaxKeyLen is the longest key a Store accepts, in bytes (the S3 limit).
const MaxKeyLen = 1024

// ValidateKey reports whether key can name an object in every backend: a
// relative, slash-separated path of non-empty UTF-8 segments, none of them "."
// or "..", without backslashes or NUL bytes, at most MaxKeyLen bytes long.
// Its errors wrap ErrInvalidKey.
func ValidateKey(key string) error {
	bad := func(why string) error {
		return fmt.Errorf("key %q: %s: %w", key, why, ErrInvalidKey)
	}
	switch {
	case key == "":
		return bad("empty")
	case len(key) > MaxKeyLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	case !utf8.ValidString(key):
		return bad("not valid UTF-8")
	case strings.HasPrefix(key, "/"):
		return bad("absolute")
	case strings.ContainsRune(key, '\\'):
		return bad("contains a backslash")
	case strings.ContainsRune(key, 0):
		return bad("contains a NUL byte")
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return bad("empty path segment")
		case ".", "..":
			return bad("dot path segment")
		}
	}
	return nil
}

// couldPrefixKey reports whether some valid key starts with prefix. Listing
// any other prefix finds nothing (S3-compatible services may even refuse it).
// A prefix that ends inside a UTF-8 character counts as invalid.
func couldPrefixKey(prefix string) bool {
	switch {
	case prefix == "":
		return true
	case len(prefix) >= MaxKeyLen:
		return ValidateKey(prefix) == nil
	}
	return ValidateKey(prefix+"x") == nil
}
