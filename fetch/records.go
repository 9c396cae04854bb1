package fetch

// Linking metadata/seqlog registers its record decoder with package
// metadata, so the watched index and the linearizable lookups this package
// reads include the blocks committed through the sequencer (its batch
// records under seq/records/), whichever role runs the fetch path.
import _ "github.com/varve-io/varve/metadata/seqlog"
