// Package embedded runs an etcd server inside this process: the metadata
// store of `varve dev`, of `varve etcd` and of the tests. It is a full
// etcd, not a stand-in, and its warnings and errors go to a slog logger.
//
// It only starts and stops the server; talking to it is package
// metadata's job (metadata.Connect on Endpoints).
package embedded
