// Package groups owns Varve's consumer groups in etcd: group sessions
// (join, rebalance on a member-set change, heartbeat, leave), fenced offset
// commits, the group admin calls (state, list, delete, reset offsets, lag)
// and the assignment strategies. It has no coordinator: every node serves
// every group through the same transactions (docs/groups.md).
//
// Files: groups.go (the Groups handle, state, admin, reset, lag),
// session.go (membership and rebalancing), commit.go (fenced commits),
// assign.go (range and sticky: pure functions, no etcd), kafka.go (the
// markers of Kafka group coordinators and their fenced commits,
// DeleteOffsets, Summaries: package kafka's groups live on the same keys).
//
// It reaches etcd only through the client of a *metadata.Client
// (New(meta), via metadata/internal/conn) and builds keys only through
// metadata/internal/keys. It never writes topic, partition or index keys
// (it only reads and compares them) and never exports an etcd type.
package groups
