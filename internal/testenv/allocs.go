package testenv

import "testing"

// AllocsPerRun is testing.AllocsPerRun(runs, f) measured up to tries times,
// returning the least. testing.AllocsPerRun counts the whole process's
// allocations, so goroutines left by earlier tests of the package (clients
// shutting down, timers firing) add to a measurement now and then, and
// never subtract from one: the least of a few is f's own count. It stops
// early once a measurement is at most want.
func AllocsPerRun(tries, runs int, want float64, f func()) float64 {
	least := testing.AllocsPerRun(runs, f)
	for i := 1; i < tries && least > want; i++ {
		least = min(least, testing.AllocsPerRun(runs, f))
	}
	return least
}
