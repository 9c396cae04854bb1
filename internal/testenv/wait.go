package testenv

import "time"

// Eventually polls cond every few milliseconds until it returns true (then
// it returns true) or timeout passes (false). Tests use it instead of bare
// sleeps: they wait exactly as long as the condition needs.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
