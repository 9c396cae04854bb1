// Package retention owns applying a topic's retention to the index in
// etcd: it drops index entries from the start of a partition's log while
// they expire, and moves the log start offset, in transactions that a
// concurrent commit or compaction makes retry (docs/gc.md). The rules —
// which entries expire by time and by size — are plain functions in
// rules.go, with no etcd in them.
//
// It reaches etcd only through the client of a *metadata.Client
// (New(meta), via metadata/internal/conn) and builds keys only through
// metadata/internal/keys. It never deletes objects (garbage collection
// does, once nothing references them), never drops an entry that is not
// at the start of the log, and never exports an etcd type.
package retention
