// Package defaults gives a package's Config its defaults the same way
// everywhere: zero (and, for counts, sizes and durations, a negative value)
// means "the default". It owns these two helpers only and imports nothing
// of Varve.
package defaults
