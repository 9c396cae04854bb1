package testenv

import "time"

// Eventually polls cond every few milliseconds until it returns true (then
// it returns true) or timeout passes (false). Tests use it instead of bare
// sleeps: they wait exactly as long as the condition needs.
func Eventually(timeout time.Duration, cond func() bool) bool {
	return EventuallyEvery(timeout, 2*time.Millisecond, cond)
}

// EventuallyEvery is Eventually with a chosen interval, for conditions that
// cost a request to a server.
func EventuallyEvery(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}
