// Package seqlog is the sequencer's side of etcd (docs/metadata.md, "The
// sequencer"): its election (one leader at a time, a term numbered by the
// election key's create revision), the batch records it writes — one key
// and one transaction per batch, fenced by the term — its checkpoints
// (high watermarks and producer states), and recovery from the current
// checkpoint plus the records after it. It also reads what the sequencer
// decides against: topics, producer identities, and the high watermarks
// the direct commit path left.
//
// It owns the binary formats of records and checkpoints (versioned; the
// decoders are fuzzed), and registers with package metadata, in its init,
// the decoder metadata's index readers use to see the blocks records hold
// (IndexDecoder). It holds no sequencer state and makes no decision:
// package sequencer does. Its keys are spelled in metadata/internal/keys.
package seqlog
