// Package compaction owns compaction's state in etcd: the index swap that
// replaces a run of entries with compacted ones in one transaction, the
// per-partition claims that keep two compactors off one partition, the
// cluster-wide pause switch and the backlog (docs/compaction.md). The
// compactor itself (reading and rewriting objects) is tier/compact.
//
// It reaches etcd only through the client of a *metadata.Client
// (New(meta), via metadata/internal/conn) and builds keys only through
// metadata/internal/keys. It never touches object storage, never changes
// which offsets the index covers (a swap tiles exactly the range it
// replaces) and never exports an etcd type.
package compaction
