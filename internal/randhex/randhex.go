// Package randhex makes short random hexadecimal strings: the unique parts
// of node ids, object keys and test names. It never fails.
package randhex

import (
	"crypto/rand"
	"encoding/hex"
)

// String returns n random bytes as 2n hexadecimal digits.
func String(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b)
}
