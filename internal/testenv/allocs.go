package testenv

import (
	"reflect"
	"runtime"
)

// AllocsPerRun is the average number of heap allocations one call of f
// makes, over runs calls, counting only allocations made under f itself
// (its stack includes f). testing.AllocsPerRun counts the whole process,
// so a test package with a node running in process (ticks, watches,
// polls) or goroutines left by earlier tests adds to its count now and
// then: TestDecodeFetchedAllocs once counted 762 allocations for its 50.
// This one samples every allocation (runtime.MemProfileRate 1) while it
// runs and reads them back from the memory profile by stack.
func AllocsPerRun(runs int, f func()) float64 {
	name := runtime.FuncForPC(reflect.ValueOf(f).Pointer()).Name()
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1
	defer func() { runtime.MemProfileRate = old }()
	f() // warm up, as testing.AllocsPerRun does
	before := allocsUnder(name)
	for range runs {
		f()
	}
	return float64(allocsUnder(name)-before) / float64(runs)
}

// allocsUnder counts the allocations in the memory profile whose stack
// includes the function fn, as of a garbage collection run now (the
// profile is published at the end of a cycle; the second makes sure the
// first one's allocations are in).
func allocsUnder(fn string) int64 {
	runtime.GC()
	runtime.GC()
	var recs []runtime.MemProfileRecord
	for n, _ := runtime.MemProfile(nil, true); ; {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(recs, true); ok {
			recs = recs[:n]
			break
		}
	}
	var total int64
	for i := range recs {
		frames := runtime.CallersFrames(recs[i].Stack())
		for {
			fr, more := frames.Next()
			if fr.Function == fn {
				total += recs[i].AllocObjects
				break
			}
			if !more {
				break
			}
		}
	}
	return total
}
