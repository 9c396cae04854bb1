// Package groupapi serves the Connect GroupService: consumer-group
// membership (JoinGroup stream, Heartbeat, LeaveGroup), fenced offset
// commits and the group admin calls (list, describe, reset, delete), on
// metadata/groups. Any node serves any group: there is no coordinator.
//
// It owns the ErrorInfo reasons of group errors (UNKNOWN_MEMBER,
// STALE_GENERATION, ...); the Connect code of every other error comes from
// the node's mapping (Config.ToConnect). It holds no group state of its own:
// etcd does.
package groupapi
