// Package maintenance is what the object-tier janitor (tier/gc) and the
// benchmarks need from etcd besides the data: the set of objects the index
// references (GC's safety rests on it), revision-history compaction,
// storage figures and the live footprint, defragmentation, and a leader
// election so that one janitor acts at a time.
//
// It shares the etcd connection of a metadata.Client (New) and owns no key
// family: it reads the index, the sequencer's batch records (decoded by
// metadata/seqlog) and the root through metadata/internal/keys.
// It never writes Varve's keys.
package maintenance
