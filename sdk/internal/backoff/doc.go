// Package backoff is the SDK's retry rule: which errors from the cluster
// are worth another attempt (Retriable, honouring a RetryInfo delay) and
// how long to wait before it (exponential backoff with jitter). Package sdk
// re-exports Retriable and RetryDelay; its producer, consumer and group
// member retry through it.
//
// It never makes a request itself and holds no state.
package backoff
