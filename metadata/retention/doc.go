// Package retention owns applying a topic's retention to the index in
// etcd: it moves a partition's log start offset past the entries at its
// start while they expire — index keys, which it deletes, and blocks held
// by sequencer records — in transactions that a concurrent commit or
// compaction makes retry (docs/gc.md). The rules —
// which entries expire by time and by size — are plain functions in
// rules.go, with no etcd in them.
//
// It reaches etcd only through the client of a *metadata.Client
// (New(meta), via metadata/internal/conn) and builds keys only through
// metadata/internal/keys. It never deletes objects (garbage collection
// does, once nothing references them), never drops an entry that is not
// at the start of the log, and never exports an etcd type.
package retention
