// Package access keeps Varve's API keys (principal and salted hash, never
// the secret) and ACLs in etcd, and hands every node a current copy of
// them through a watch, so a revoked key or a removed ACL stops working on
// every node within the watch's latency.
//
// It stores and watches; it never decides (internal/authz does).
package access
