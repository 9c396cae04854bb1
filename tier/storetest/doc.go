// Package storetest is the acceptance suite every tier.Store backend must
// pass: call Run from the backend's tests with a constructor that returns a
// fresh, empty store.
//
// It tests only behaviour the tier.Store contract promises (through
// errors.Is on the tier sentinel errors), never a backend's internals, and it
// never starts servers itself (internal/testenv does).
package storetest
