// Package compact owns compaction of the object tier: it merges the many
// small level-0 blocks that ingest nodes write (one per partition per
// flush, in mixed objects) into large per-partition objects (level 1),
// merges small level-1 objects into level 2, and, for topics with cleanup
// policy "compact", keeps only the newest record of each key (and
// tombstones for delete_retention_ms), keeping every kept record's offset.
//
// A compaction job reads a contiguous run of a partition's index entries,
// writes one new object with PutIfAbsent under a key of its own
// (l1/… or l2/…), and swaps the index with one etcd transaction that
// verifies the replaced entries are unchanged (metadata.SwapIndex). Several
// compactors may run at once: a partition is worked on under an etcd claim
// bound to the compactor's lease, and the swap's comparisons make a lost
// race harmless.
//
// compact never deletes objects and never changes an object in place: the
// objects a swap replaces, and the output of a job that crashed or lost its
// swap, are left to garbage collection (tier/gc), which deletes them after
// a grace period longer than any read. It never reorders records, never
// changes an offset and never touches the head of a log past the entries
// it read. The design and its reasons are in docs/compaction.md.
package compact
