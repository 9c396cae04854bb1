// Package seqhook lets metadata/seqlog hand package metadata the decoder
// of the sequencer's batch records and checkpoints: seqlog imports
// metadata, so metadata cannot import seqlog (as metadata/internal/conn
// does the other way round).
//
// It holds one function variable and nothing else.
package seqhook

// Register installs the decoder (a metadata.RecordDecoder). Package
// metadata sets it in its init; seqlog calls it in its own, which runs
// after metadata's since seqlog imports metadata.
var Register func(decoder any)
