package bench

import (
	"fmt"
	"math/rand/v2"
)

var (
	eventTypes = []string{"page_view", "add_to_cart", "checkout", "search", "login"}
	devices    = []string{"ios", "android", "web"}
	countries  = []string{"DE", "FR", "NL", "PL", "ES"}
)

// JSONEvent returns a realistic clickstream event of about 400–450 bytes:
// ids and numbers vary per event, field names and most strings repeat, as
// in real analytics topics. r makes it reproducible.
func JSONEvent(r *rand.Rand, i int) []byte {
	return fmt.Appendf(nil, `{"event_id":"%08x-%04x-%04x-%012x","user_id":%d,"ts":"2026-11-25T%02d:%02d:%02d.%03dZ","type":"%s","url":"/products/%d?ref=home&utm_source=newsletter","session":{"id":"s-%x","device":"%s","country":"%s"},"props":{"price":%d.%02d,"quantity":%d,"currency":"EUR","experiment":"checkout-v%d"}}`,
		r.Uint32(), r.IntN(1<<16), r.IntN(1<<16), r.Uint64()&(1<<48-1), r.IntN(100000),
		r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1000), eventTypes[r.IntN(len(eventTypes))], r.IntN(5000),
		r.Uint32(), devices[r.IntN(len(devices))], countries[r.IntN(len(countries))],
		r.IntN(500), r.IntN(100), 1+r.IntN(5), i%4)
}
