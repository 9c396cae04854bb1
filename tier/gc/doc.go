// Package gc is the object tier's janitor: it keeps storage bounded.
//
//   - Retention drops expired index entries (by time and by size, per topic)
//     from the start of each partition's log and advances its log start
//     offset, in etcd transactions guarded by compares.
//   - Orphan collection deletes objects that no index entry points at — left
//     by a crash between PUT and commit, by retention, by compaction or by a
//     topic deletion — once they are older than the grace period and have
//     been seen unreferenced for a whole grace period.
//   - History compaction discards etcd's revision history older than a
//     retention window, so etcd's database stays proportional to live keys.
//
// It runs under the compact role; one janitor acts at a time (an etcd
// election), though every step is also safe when two run at once.
//
// gc must never delete an object an index entry references, nor one younger
// than the grace period; it never deletes index entries other than a
// partition's expired prefix, and never writes or rewrites an object. It
// talks to etcd only through package metadata. See docs/gc.md for the
// argument that deletion is safe.
package gc
