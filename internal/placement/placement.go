// Package placement is what ingest nodes and the SDK share of producer
// placement (docs/metadata.md, "Producer placement"): the headers of a
// Produce request and answer, and the client keys nodes place by. It uses
// the standard library only, so the SDK may import it.
package placement

import "strings"

const (
	// ClientHeader carries a producer client's key on its Produce
	// requests: a random name the SDK's client draws once. Nodes place
	// the client by it, so every node names it the same writer.
	ClientHeader = "Varve-Client"
	// ToHeader, in a Produce answer, is the base URL of the ingest node
	// the client is placed on, when that is not the node that answered:
	// the client sends its next Produce requests there.
	ToHeader = "Varve-Produce-To"
	// maxKey bounds a client key nodes place by.
	maxKey = 64
)

// ValidKey reports whether key is one nodes place by: 1 to 64 bytes of
// letters, digits, '-' and '_'.
func ValidKey(key string) bool {
	if key == "" || len(key) > maxKey {
		return false
	}
	return strings.IndexFunc(key, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	}) < 0
}
